"""`hsl-demo convert DATASET`: a public data set as catalog metadata, query files and triplets."""

from __future__ import annotations

import argparse
from pathlib import Path

from .args import positive_int

NAME = "convert"


def add_parser(sub) -> None:
    p = sub.add_parser("convert", help="turn a public data set into catalog metadata and query files")
    what = p.add_subparsers(dest="what", required=True, metavar="DATASET")
    v = what.add_parser("visual-genome", help="Visual Genome region phrases as drill-down queries (as Drill-down)")
    v.add_argument("--root", required=True, help="Visual Genome folder: region_descriptions.json, image_data.json, "
                   "VG_100K/, VG_100K_2/")
    v.add_argument("--out", required=True, help="folder to write metadata.jsonl and queries.multi.jsonl into")
    v.add_argument("--split-file", help="image ids to convert, one per line (default: every image)")
    v.add_argument("--max-rounds", type=positive_int, default=10,
                   help="regions (rounds) kept per image, the largest first (default 10)")
    v.add_argument("--limit", type=positive_int, default=None, help="convert at most this many images")
    v.add_argument("--seed", type=int, default=0, help="seed of the per-image round order (default 0)")

    titles = {"fashioniq": "Fashion-IQ", "shoes": "Shoes", "cirr": "CIRR", "fashion200k": "Fashion200k"}
    for name, title in titles.items():
        d = what.add_parser(name, help=f"{title} (published layout) as catalog metadata, composed query files and "
                            "triplets" + (", and text queries" if name == "fashion200k" else ""))
        d.add_argument("--root", required=True, help=f"the {title} folder, as published")
        d.add_argument("--out", required=True, help="folder to write metadata.jsonl, queries.*.jsonl, triplets.jsonl "
                       "and images/ (links) into")
        if name == "cirr":
            d.add_argument("--images", help="the folder holding train/, dev/ and test1/ (default: ROOT/img_raw or "
                           "ROOT, whichever has them)")


def run(args: argparse.Namespace) -> None:
    import shlex

    if args.what != "visual-genome":
        _convert_composed(args)
        return
    from ..data.visual_genome import write_visual_genome

    c = write_visual_genome(args.root, args.out, split_file=args.split_file, max_rounds=args.max_rounds,
                            limit=args.limit, seed=args.seed)
    d = c["dropped_regions"]
    print(f"converted {c['images']} Visual Genome images ({c['regions']} regions, at most {args.max_rounds} "
          f"per image) into {c['out']}")
    print(f"  {c['queries']} drill-down queries: {c['queries_file']}")
    print(f"  regions dropped: {d['empty']} empty, {d['duplicate']} duplicate, {d['degenerate']} degenerate, "
          f"{d['beyond_max_rounds']} beyond --max-rounds")
    missing = f" (e.g. {', '.join(c['missing_examples'])})" if c["missing_images"] else ""
    print(f"  images skipped: {c['missing_images']} not on disk{missing}, {c['too_few_regions']} without "
          "usable regions")
    if "split_ids" in c:
        print(f"  split: {c['split_ids'] - c['split_unmatched']} of {c['split_ids']} ids listed in "
              "region_descriptions.json")
    q = shlex.quote
    images = c["gallery"] or args.root
    print("next:" + (f" ({c['gallery']} links just these images, so the catalog is exactly them)"
                     if c["gallery"] else ""))
    print(f"  hsl-demo index {q(images)} --metadata {q(c['metadata'])} --out CATALOG")
    print(f"  hsl-demo evaluate --catalog CATALOG --queries {q(c['queries_file'])}")
def _convert_composed(args) -> None:
    import shlex

    from ..data.convert import TRIPLETS_FILE, write_composed_conversion

    c = write_composed_conversion(args.what, args.root, args.out, images=getattr(args, "images", None))
    triplets = ", ".join(f"{n} {split}" for split, n in c["triplets"].items())
    print(f"converted {c['images']} {args.what} images into {c['out']} (triplets: {triplets})")
    for split, reason in c["skipped"].items():
        print(f"  split {split} left out: {reason}")
    for split, names in c["missing"].items():
        print(f"  split {split}: {len(names)} images missing (e.g. {', '.join(names[:3])}), "
              f"{c['dropped'].get(split, 0)} queries dropped with them")
    for split, n in c["untargeted"].items():
        server = (f"; for the test server: hsl-demo evaluate --dataset cirr --data-root {shlex.quote(args.root)} "
                  f"--split {split} --submission DIR" if args.what == "cirr" else "")
        print(f"  split {split}: {n} queries without public targets (not in the query files{server})")
    q = shlex.quote
    out = Path(c["out"])
    print("next:")
    print(f"  hsl-demo index {q(c['gallery'] or c['image_root'])} --metadata {q(str(out / 'metadata.jsonl'))} "
          "--out CATALOG")
    for name in c["query_files"]:
        print(f"  hsl-demo evaluate --catalog CATALOG --queries {q(str(out / name))}")
    print(f"  hsl-demo train composed --catalog CATALOG --triplets {q(str(out / TRIPLETS_FILE))} --out MODEL")
