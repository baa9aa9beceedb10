"""`hsl-demo make-demo-catalog`: render the demo world (products, looks, their query files)."""

from __future__ import annotations

import argparse

from ..defaults import DEMO_SEED
from .args import positive_int

NAME = "make-demo-catalog"


def add_parser(sub) -> None:
    p = sub.add_parser("make-demo-catalog", help="render the demo product and looks catalogs")
    p.add_argument("--out", required=True, help="folder to write products/ and looks/ into")
    p.add_argument("--seed", type=int, default=DEMO_SEED)
    p.add_argument("--looks", type=positive_int, default=400, help="number of flat-lay looks")
    p.add_argument("--scenes", type=int, default=0, metavar="N",
                   help="product photos with context (props, a mannequin, a second product, occlusion, a textured "
                   "backdrop) per combination, beside the studio shots (default 0, as the shipped catalog)")


def run(args: argparse.Namespace) -> None:
    from ..data.demo import make_demo_catalogs

    counts = make_demo_catalogs(args.out, seed=args.seed, looks=args.looks, scenes=args.scenes)
    print(f"wrote {counts['products']} products and {counts['looks']} looks under {args.out}")
