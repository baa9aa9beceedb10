"""`hsl-demo index INPUT --out CATALOG`: photos (a folder, Parquet, WebDataset) encoded into a catalog."""

from __future__ import annotations

import argparse
import sys

from ..errors import HslDemoError
from .args import positive_int

NAME = "index"


def add_parser(sub) -> None:
    p = sub.add_parser("index", help="encode images (a folder, Parquet or WebDataset) into a searchable catalog")
    p.add_argument("images", metavar="INPUT",
                   help="a folder of images (jpg, png, webp; subfolders too), Parquet files of image bytes and "
                   "metadata columns, or WebDataset .tar shards (a file, or a folder of them)")
    p.add_argument("--out", required=True, help="catalog folder to write")
    p.add_argument("--metadata", help="with a folder of images: JSONL with one record per image (\"image\": path "
                   "relative to INPUT)")
    p.add_argument("--image-column", metavar="NAME",
                   help="with Parquet input: the column of image bytes (default: image; bytes, or a struct with "
                   "\"bytes\" as Hugging Face datasets writes)")
    p.add_argument("--model", help="model folder, Hub repo id or open_clip name (default: embedded)")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--index", metavar="SPEC", help="FAISS index_factory spec, e.g. Flat, IVF1024,Flat, "
                   "OPQ32,IVF4096,PQ32 (default by size: Flat up to 50,000 images, IVF with the vectors up to "
                   "1 GB of them, IVF-PQ above)")
    p.add_argument("--shard-size", type=positive_int, default=4096, metavar="N",
                   help="images encoded and written together (default 4096); a run that is interrupted resumes "
                   "from its finished shards when run again")
    p.add_argument("--profile", action="store_true",
                   help="print where the time went: decode, preprocess, forward, regions, write, index")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this process (default); ray: a Ray Data pool of backbones, on this machine or "
                   "the cluster at --address (pip install 'hsl-demo[ray]'); the same catalog either way")
    p.add_argument("--address", default=None, metavar="ADDR",
                   help="with --engine ray: a running Ray cluster (e.g. ray://head:10001 or auto; default: start Ray "
                   "here)")
    p.add_argument("--workers", type=positive_int, default=None, metavar="N",
                   help="with --engine ray: backbones encoding at once (default: one per GPU, else one per 2 CPUs)")


def run(args: argparse.Namespace) -> None:
    from ..hub import load_backbone
    from ..indexing import StageTimes, build_catalog
    from ..search import load_heads

    if args.engine != "ray" and (args.address or args.workers):
        raise HslDemoError("--address and --workers go with --engine ray")
    backbone = load_backbone(args.model, device=args.device, max_params=args.max_params)
    times = StageTimes()
    heads = load_heads(backbone, args.max_params)
    summary = build_catalog(args.images, args.out, backbone, metadata=args.metadata, batch_size=args.batch_size,
                            heads=heads, index_spec=args.index, shard_size=args.shard_size,
                            times=times, engine=args.engine, ray_address=args.address, workers=args.workers,
                            image_column=args.image_column)
    if args.profile:
        print(f"profile: {times.report()}", file=sys.stderr)
    for note in summary["cleaned"]:
        print(f"hsl-demo: {note}", file=sys.stderr)
    for s in summary["skipped"]:
        print(f"skipped {s['file']}: {s['reason']}", file=sys.stderr)
    print(f"indexed {summary['count']} images into {summary['out']} ({summary['index']} index, "
          f"{len(summary['skipped'])} skipped)")
