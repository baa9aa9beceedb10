"""`hsl-demo convert-weights REPO_OR_FILE --out DIR`: a pickled-only open_clip model (a Hub repo, a
folder or a .bin file) made a safetensors model folder, once, with torch's restricted loader."""

from __future__ import annotations

import argparse

NAME = "convert-weights"


def add_parser(sub) -> None:
    p = sub.add_parser(NAME, help="turn a pickled-only open_clip model (a Hub repo, a folder or a .bin file) into "
                       "a safetensors model folder")
    p.add_argument("source", metavar="REPO_OR_FILE", help="Hub repo id, model folder, or open_clip_pytorch_model.bin")
    p.add_argument("--config", default=None, help="its open_clip_config.json (default: the one beside the weights)")
    p.add_argument("--out", required=True, help="new model folder to write (open_clip_config.json + "
                   "open_clip_model.safetensors + the tokenizer files)")


def run(args: argparse.Namespace) -> None:
    from ..convert_weights import convert_weights

    out = convert_weights(args.source, args.out, config=args.config, max_params=args.max_params)
    print(f"wrote {out} (safetensors); load it with --model {out}")
