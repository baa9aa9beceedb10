"""`hsl-demo push MODEL_DIR --repo ORG/NAME`: a model folder to the Hugging Face Hub, with a model card."""

from __future__ import annotations

import argparse

from .args import warn_token_on_command_line

NAME = "push"


def add_parser(sub) -> None:
    p = sub.add_parser("push", help="publish a trained model folder to the Hugging Face Hub, with a model card")
    p.add_argument("model_dir", metavar="MODEL_DIR", help="model folder (backbone + heads), e.g. checkpoints/demo")
    p.add_argument("--repo", required=True, metavar="ORG/NAME", help="Hub repo id to create (if needed) and upload to")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--token", help="Hugging Face token (default: $HF_TOKEN or the `hf auth login` token)")


def run(args: argparse.Namespace) -> None:
    from ..model_folder import push_model

    warn_token_on_command_line(args.token)
    pushed = push_model(args.model_dir, args.repo, private=args.private, token=args.token)
    card = " (model card generated)" if pushed["card_generated"] else ""
    print(f"pushed {len(pushed['files'])} files to {pushed['url']}{card}")
    for name in pushed["files"]:
        print(f"  {name}")
