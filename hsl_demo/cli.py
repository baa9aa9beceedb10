"""The `hsl-demo` command line (also `python -m hsl_demo`).

Every user error ends in one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

from .errors import HslDemoError

EXIT_USER_ERROR = 2


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {n}")
    return n


def build_parser() -> argparse.ArgumentParser:
    from .defaults import COMPOSED_VARIANTS, DEMO_SEED, HSL_VARIANTS

    parser = argparse.ArgumentParser(
        prog="hsl-demo", description="Language-based product image retrieval, explained."
    )
    parser.add_argument("--device", help="cuda or cpu (default: cuda when present)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("make-demo-catalog", help="render the demo product and looks catalogs")
    p.add_argument("--out", required=True, help="folder to write products/ and looks/ into")
    p.add_argument("--seed", type=int, default=DEMO_SEED)
    p.add_argument("--looks", type=_positive_int, default=400, help="number of flat-lay looks")

    p = sub.add_parser("train", help="train the demo backbone or a head")
    what = p.add_subparsers(dest="what", required=True, metavar="WHAT")
    b = what.add_parser("backbone", help="contrastive training of the demo backbone from scratch")
    b.add_argument("--out", default=None, help="model folder (default: checkpoints/demo)")
    b.add_argument("--steps", type=_positive_int, default=None)
    b.add_argument("--batch-size", type=_positive_int, default=None)
    b.add_argument("--variants", type=_positive_int, default=None, help="rendered photos per combination")
    b.add_argument("--seed", type=int, default=None)
    h = what.add_parser("hsl", help="train the HSL head on a frozen backbone")
    h.add_argument("--model", help="backbone: model folder, Hub repo id or open_clip name (default: embedded)")
    h.add_argument("--out", default=None, help="model folder to write hsl/ into (default: checkpoints/demo)")
    h.add_argument("--steps", type=_positive_int, default=None)
    h.add_argument("--batch-size", type=_positive_int, default=None)
    h.add_argument("--variants", type=_positive_int, default=None, help="rendered photos per combination")
    h.add_argument("--levels", type=_positive_int, default=None, help="stacked encoder levels (default 2)")
    h.add_argument("--seed", type=int, default=None)
    c = what.add_parser("composed", help="train the composed-query head (stage 2 domain, then stage 3 hybrid)")
    c.add_argument("--stage", choices=("domain", "hybrid"), default="hybrid",
                   help="domain: attribute-text matching; hybrid: all modifications, resuming from the domain "
                   "head in OUT/composed when there is one")
    c.add_argument("--model", help="backbone: model folder, Hub repo id or open_clip name (default: embedded)")
    c.add_argument("--out", default=None, help="model folder to write composed/ into (default: checkpoints/demo)")
    c.add_argument("--steps", type=_positive_int, default=None)
    c.add_argument("--batch-size", type=_positive_int, default=None)
    c.add_argument("--variants", type=_positive_int, default=None, help="rendered photos per combination")
    c.add_argument("--seed", type=int, default=None)

    p = sub.add_parser("index", help="encode a folder of images into a searchable catalog")
    p.add_argument("images", help="folder of images (jpg, png, webp; subfolders too)")
    p.add_argument("--out", required=True, help="catalog folder to write")
    p.add_argument("--metadata", help="JSONL with one record per image (\"image\": path relative to IMAGES)")
    p.add_argument("--model", help="model folder, Hub repo id or open_clip name (default: embedded)")
    p.add_argument("--batch-size", type=_positive_int, default=64)

    p = sub.add_parser("search", help="search a catalog")
    p.add_argument("--catalog", help="catalog name (products, looks) or folder (default: products)")
    p.add_argument("--model", help="model folder, Hub repo id or open_clip name (default: embedded)")
    p.add_argument("--text", help="a description, e.g. \"red striped t-shirt\"; with --reference, how the "
                   "wanted product differs, e.g. \"make it blue\"")
    p.add_argument("--reference", help="composed search: a catalog item id or an image file to start from")
    p.add_argument("-k", type=_positive_int, default=10, help="number of results (default 10)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = sub.add_parser("evaluate", help="recall@k of a query file")
    p.add_argument("--catalog", help="catalog name or folder (default: products)")
    p.add_argument("--model", help="model folder, Hub repo id or open_clip name (default: embedded)")
    p.add_argument("--queries", required=True, help="JSONL of {\"mode\", \"text\", \"targets\"}")
    p.add_argument("--variant", choices=sorted(set(HSL_VARIANTS + COMPOSED_VARIANTS)), default=None,
                   help="text queries: HSL terms to rank by (full, image, object, global; default full); "
                   "composed queries: adaptive, sum, image, text (default adaptive)")
    p.add_argument("--ablation", action="store_true", help="evaluate every variant and print a table")
    p.add_argument("--json", action="store_true")
    return parser


def _cmd_make_demo_catalog(args) -> None:
    from .data.demo import make_demo_catalogs

    counts = make_demo_catalogs(args.out, seed=args.seed, looks=args.looks)
    print(f"wrote {counts['products']} products and {counts['looks']} looks under {args.out}")


def _cmd_train(args) -> None:
    from dataclasses import replace

    from .defaults import DEFAULT_MODEL_DIR
    from .train import (
        BackboneTrainConfig,
        ComposedTrainConfig,
        HSLTrainConfig,
        train_backbone,
        train_composed,
        train_hsl,
    )

    log = lambda m: print(m, flush=True)  # noqa: E731
    names = ("steps", "batch_size", "variants", "seed", "levels", "stage")
    overrides = {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}
    out = args.out or DEFAULT_MODEL_DIR
    if args.what == "backbone":
        train_backbone(out, replace(BackboneTrainConfig(), **overrides), log=log)
    elif args.what == "hsl":
        train_hsl(out, args.model, replace(HSLTrainConfig(), **overrides), log=log)
    else:
        train_composed(out, args.model, replace(ComposedTrainConfig(), **overrides), log=log)


def _cmd_index(args) -> None:
    from .backbone import Backbone
    from .catalog import build_catalog
    from .search import load_heads

    backbone = Backbone.load(args.model, device=args.device)
    summary = build_catalog(args.images, args.out, backbone, metadata=args.metadata, batch_size=args.batch_size,
                            hsl=load_heads(backbone).get("hsl"))
    for s in summary["skipped"]:
        print(f"skipped {s['file']}: {s['reason']}", file=sys.stderr)
    print(f"indexed {summary['count']} images into {summary['out']} ({summary['index']} index, "
          f"{len(summary['skipped'])} skipped)")


def _cmd_search(args) -> None:
    from .search import Retriever, clean_text

    if args.reference is None:
        clean_text(args.text)  # fail before loading anything
    retriever = Retriever.from_pretrained(args.model, args.catalog, device=args.device)
    if args.reference is None:
        results = retriever.search_text(args.text, k=args.k)
    else:
        results = retriever.search_composed(args.reference, args.text, k=args.k)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
        return
    if args.reference is not None and results:
        lv = results[0].levels
        print(f"query weights: image {lv['w_image']:.2f}, text {lv['w_text']:.2f}")
    width = max(len(r.id) for r in results)
    for r in results:
        print(f"{r.rank:>3}  {r.id:<{width}}  {r.score:7.4f}  {r.title}")


def _cmd_evaluate(args) -> None:
    from .evaluate import evaluate, load_queries
    from .search import Retriever

    queries = load_queries(args.queries)
    retriever = Retriever.from_pretrained(args.model, args.catalog, device=args.device)
    if not args.ablation:
        metrics = evaluate(retriever, queries, variant=args.variant)
        if args.json:
            print(json.dumps(metrics))
        else:
            print(f"{metrics['queries']} queries: " + "  ".join(f"R@{k} {metrics[f'R@{k}']:.3f}" for k in (1, 5, 10)))
            for kind, w in metrics.get("mean_w_text", {}).items():
                print(f"  {kind}: mean w_image {1 - w:.2f}, w_text {w:.2f}")
        return
    from .defaults import COMPOSED_VARIANTS, HSL_VARIANTS

    modes = {q.get("mode", "text") for q in queries}
    if len(modes) > 1:
        raise HslDemoError("--ablation needs a query file of one mode (text or composed)")
    variants = COMPOSED_VARIANTS if modes == {"composed"} else HSL_VARIANTS
    table = {v: evaluate(retriever, queries, variant=v) for v in variants}
    if args.json:
        print(json.dumps(table))
        return
    print(f"{len(queries)} queries, catalog {retriever.catalog.name}")
    print("| variant | R@1 | R@5 | R@10 |\n|---|---|---|---|")
    for v, m in table.items():
        print(f"| {v} | {m['R@1']:.3f} | {m['R@5']:.3f} | {m['R@10']:.3f} |")
    weights = table.get("adaptive", {}).get("mean_w_text")
    if weights:
        print("\n| kind | mean w_image | mean w_text |\n|---|---|---|")
        for kind, w in weights.items():
            print(f"| {kind} | {1 - w:.2f} | {w:.2f} |")


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"hsl-demo: warning: {message}", file=sys.stderr)


COMMANDS = {
    "make-demo-catalog": _cmd_make_demo_catalog,
    "train": _cmd_train,
    "index": _cmd_index,
    "search": _cmd_search,
    "evaluate": _cmd_evaluate,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not os.environ.get("HSL_DEMO_DEBUG"):
        warnings.showwarning = _one_line_warning
    try:
        COMMANDS[args.command](args)
    except HslDemoError as e:
        print(f"hsl-demo: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("hsl-demo: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `hsl-demo search ... | head`
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
