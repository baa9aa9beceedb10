"""The `hsl-demo` command line (also `python -m hsl_demo`).

Every user error ends in one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import HslDemoError

if TYPE_CHECKING:
    from . import modes

EXIT_USER_ERROR = 2


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {n}")
    return n


def _trainer(what, name: str, help: str, model: bool = True) -> argparse.ArgumentParser:
    """A `train NAME` parser with the flags every trainer has."""
    t = what.add_parser(name, help=help)
    if model:
        t.add_argument("--model", help="backbone: model folder, Hub repo id or open_clip name (default: embedded)")
    t.add_argument("--out", default=None, help=f"model folder{'' if not model else f' to write {name}/ into'} "
                   "(default: checkpoints/demo)")
    t.add_argument("--steps", type=_positive_int, default=None)
    t.add_argument("--batch-size", type=_positive_int, default=None)
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--checkpoint-every", type=_positive_int, default=None, metavar="N",
                   help="write a resumable checkpoint (OUT/.checkpoint/) every N steps")
    t.add_argument("--resume", action="store_true", help="continue the run checkpointed in OUT/.checkpoint/")
    t.add_argument("--texts", choices=("templates", "grammar"), default=None,
                   help="training texts: the first demo model's templates (default) or the phrasing grammar")
    if model:
        t.add_argument("--catalog", metavar="DIR",
                       help="train on an indexed catalog's features and metadata instead of the demo world "
                       "(needs --out: it becomes a complete model folder); --model defaults to the catalog's")
        t.add_argument("--eval-every", type=_positive_int, default=None, metavar="N",
                       help="with --catalog: score the held-out items every N steps (default 100; hsl 200)")
        t.add_argument("--patience", type=_positive_int, default=None, metavar="N",
                       help="with --catalog: stop after N held-out evaluations without improvement (default 5)")
    return t


def build_parser() -> argparse.ArgumentParser:
    from . import modes
    from .data.composed_datasets import COMPOSED_DATASETS
    from .defaults import DEMO_SEED

    parser = argparse.ArgumentParser(
        prog="hsl-demo", description="Language-based product image retrieval, explained."
    )
    parser.add_argument("--device", help="cuda or cpu (default: cuda when present)")
    parser.add_argument("--max-params", type=_positive_int, default=None, metavar="N",
                        help="the most parameters a model or head config may ask for, checked before anything is "
                        "built (default 4000000000, or $HSL_DEMO_MAX_PARAMS)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("make-demo-catalog", help="render the demo product and looks catalogs")
    p.add_argument("--out", required=True, help="folder to write products/ and looks/ into")
    p.add_argument("--seed", type=int, default=DEMO_SEED)
    p.add_argument("--looks", type=_positive_int, default=400, help="number of flat-lay looks")
    p.add_argument("--scenes", type=int, default=0, metavar="N",
                   help="product photos with context (props, a mannequin, a second product, occlusion, a textured "
                   "backdrop) per combination, beside the studio shots (default 0, as the shipped catalog)")

    p = sub.add_parser("train", help="train the demo backbone or a head")
    what = p.add_subparsers(dest="what", required=True, metavar="WHAT")
    b = _trainer(what, "backbone", "contrastive training of the demo backbone from scratch", model=False)
    b.add_argument("--variants", type=_positive_int, default=None, help="rendered photos per combination")
    b.add_argument("--architecture", help="open_clip config name (default hsl-demo-tiny; hsl-demo-small is larger)")
    b.add_argument("--hard-negatives", type=float, default=None, metavar="SHARE",
                   help="share of each batch that are category-hard negatives (same colour and pattern, "
                   "another product; default 0)")
    b.add_argument("--look-crops", type=int, default=None, metavar="N",
                   help="rendered flat-lays whose product crops join the training photos (default 0)")
    b.add_argument("--scenes", type=int, default=None, metavar="N",
                   help="photos with context per combination (the product among props, a mannequin, a second "
                   "product), each with its crop around the product, beside the studio shots (default 0)")
    h = _trainer(what, "hsl", "train the HSL head on a frozen backbone")
    h.add_argument("--variants", type=_positive_int, default=None, help="rendered photos per combination")
    h.add_argument("--scenes", type=int, default=None, metavar="N",
                   help="photos with context per combination beside the studio shots (default 0)")
    h.add_argument("--levels", type=_positive_int, default=None, help="stacked encoder levels (default 2)")
    m = _trainer(what, "hmrn", "train the HMRN drill-down head on rendered looks")
    m.add_argument("--looks", type=_positive_int, default=None, help="rendered training looks (default 3000)")
    c = _trainer(what, "composed", "train the composed-query head (stage 2 domain, then stage 3 hybrid)")
    c.add_argument("--stage", choices=("domain", "hybrid"), default=None,
                   help="domain: attribute-text matching; hybrid (default): all modifications, resuming from the "
                   "domain head in OUT/composed when there is one")
    c.add_argument("--variants", type=_positive_int, default=None, help="rendered photos per combination")
    c.add_argument("--fixed-weights", dest="adaptive", action="store_false", default=None,
                   help="ablation: the combiner without adaptive weights (w_image = w_text = 0.5)")
    c.add_argument("--dataset", choices=COMPOSED_DATASETS,
                   help="train on a public data set's train split (published layout) instead of the demo catalog; "
                   "hybrid stage only")
    c.add_argument("--data-root", help="with --dataset: the data set's folder")
    c.add_argument("--triplets", metavar="FILE",
                   help="with --catalog: JSONL of {\"reference\": ID, \"text\": ..., \"targets\": [ID, ...]} "
                   "(default: pairs of items that differ in one or two attributes)")

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
    p.add_argument("--batch-size", type=_positive_int, default=64)
    p.add_argument("--index", metavar="SPEC", help="FAISS index_factory spec, e.g. Flat, IVF1024,Flat, "
                   "OPQ32,IVF4096,PQ32 (default by size: Flat up to 50,000 images, IVF with the vectors up to "
                   "1 GB of them, IVF-PQ above)")
    p.add_argument("--shard-size", type=_positive_int, default=4096, metavar="N",
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
    p.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                   help="with --engine ray: backbones encoding at once (default: one per GPU, else one per 2 CPUs)")

    p = sub.add_parser("search", help="search a catalog")
    p.add_argument("--catalog", help="catalog name (products, looks) or folder (default: products)")
    p.add_argument("--model", help="model folder, Hub repo id or open_clip name (default: embedded)")
    added: set[str] = set()
    for mode in modes.MODES.values():  # each mode's flags (a flag two modes read is added once)
        for option in (mode.cli.key, *mode.cli.reads) if mode.cli else ():
            if option.flags[0] not in added and option.options:
                added.add(option.flags[0])
                p.add_argument(*option.flags, **option.options)
    p.add_argument("-k", type=_positive_int, default=10, help="number of results (default 10)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = sub.add_parser("evaluate", help="recall@k of a query file, or of a composed-retrieval data set")
    p.add_argument("--catalog", help="catalog name or folder (default: products)")
    p.add_argument("--model", help="model folder, Hub repo id or open_clip name (default: embedded)")
    p.add_argument("--queries", help="JSONL of {\"mode\", \"text\", \"targets\"} (or give --dataset)")
    p.add_argument("--dataset", choices=COMPOSED_DATASETS,
                   help="evaluate composed retrieval on a public data set in its published layout (or give --queries)")
    p.add_argument("--data-root", help="with --dataset: the data set's folder")
    p.add_argument("--split", help="with --dataset: the split (default: val for fashioniq and cirr, eval for shoes, "
                   "test for fashion200k)")
    p.add_argument("--variant", choices=modes.all_variants(), default=None,
                   help="how to rank, per mode (the first is its default): " + "; ".join(
                       f"{m.name}: {', '.join(m.variants)}" for m in modes.MODES.values()))
    p.add_argument("--ablation", action="store_true", help="evaluate every variant and print a table")
    p.add_argument("--images", help="with --dataset cirr: the folder holding train/, dev/ and test1/ when they are "
                   "not in the data set's folder")
    p.add_argument("--keep-reference", action="store_true",
                   help="keep each query's reference image in its ranking where the protocol removes it (CIRR, "
                   "Fashion200k); the figures are then not the papers'")
    p.add_argument("--submission", metavar="DIR", help="with --dataset cirr --split test1: write the test server's "
                   "two files (recall: top 50, recall_subset: top 3 per pairid) into DIR")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("convert", help="turn a public data set into catalog metadata and query files")
    what = p.add_subparsers(dest="what", required=True, metavar="DATASET")
    v = what.add_parser("visual-genome", help="Visual Genome region phrases as drill-down queries (as Drill-down)")
    v.add_argument("--root", required=True, help="Visual Genome folder: region_descriptions.json, image_data.json, "
                   "VG_100K/, VG_100K_2/")
    v.add_argument("--out", required=True, help="folder to write metadata.jsonl and queries.multi.jsonl into")
    v.add_argument("--split-file", help="image ids to convert, one per line (default: every image)")
    v.add_argument("--max-rounds", type=_positive_int, default=10,
                   help="regions (rounds) kept per image, the largest first (default 10)")
    v.add_argument("--limit", type=_positive_int, default=None, help="convert at most this many images")
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

    p = sub.add_parser("serve", help="serve the web demo (what `python app.py` runs)",
                       description="The web demo: one model and two catalogs, loaded once and shared by every "
                       "visitor. Host and port: GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (default 127.0.0.1:7860).")
    p.add_argument("--model", default=None, help="model folder or Hub repo id ($HSL_DEMO_MODEL; default: embedded)")
    p.add_argument("--catalog", default=None, help="products catalog for Describe and Modify: name or folder "
                   "($HSL_DEMO_CATALOG; default products)")
    p.add_argument("--looks-catalog", default=None, help="looks catalog for Drill down: name or folder "
                   "($HSL_DEMO_LOOKS_CATALOG; default looks)")
    p.add_argument("--max-params", type=_positive_int, default=argparse.SUPPRESS, metavar="N",
                   help="the most parameters a model or head config may ask for (default 4000000000)")
    p.add_argument("--device", default=argparse.SUPPRESS, help="cuda or cpu ($HSL_DEMO_DEVICE; default: cuda when "
                   "present, and on ZeroGPU)")
    p.add_argument("--concurrency", type=_positive_int, default=4, help="searches run at once, in every tab "
                   "(default 4)")
    p.add_argument("--charts", choices=("native", "png"), default="native",
                   help="native: charts drawn in the browser (default); png: matplotlib images drawn per request "
                   "(what the app did before; kept for bench/bench_load.py's comparison)")
    p.add_argument("--cache-ttl", type=int, default=900, metavar="SECONDS",
                   help="uploads and Gradio's cached files are deleted this long after they were written, checked "
                   "every third of it, so a public server's disk stays bounded (default 900; 0: kept until it stops)")

    p = sub.add_parser("push", help="publish a trained model folder to the Hugging Face Hub, with a model card")
    p.add_argument("model_dir", metavar="MODEL_DIR", help="model folder (backbone + heads), e.g. checkpoints/demo")
    p.add_argument("--repo", required=True, metavar="ORG/NAME", help="Hub repo id to create (if needed) and upload to")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--token", help="Hugging Face token (default: $HF_TOKEN or the `hf auth login` token)")

    p = sub.add_parser("space", help="publish the app over a model and catalogs as a Hugging Face Space",
                       description="Build the folder a Space needs (app.py, this package, the pinned "
                       "requirements, a README, the catalogs with their photos, the model folder unless it is a Hub "
                       "id) and upload it to Space ORG/NAME, created if needed; a re-run updates it. "
                       "See docs/space.md.")
    p.add_argument("repo", metavar="ORG/NAME", help="the Space to create (if needed) and upload to")
    p.add_argument("--model", help="model folder (uploaded) or Hub repo id (loaded by the Space) (default: embedded)")
    p.add_argument("--catalog", help="products catalog for Describe and Modify: name or folder (default: products)")
    p.add_argument("--looks-catalog", help="looks catalog for Drill down: name or folder (default: looks)")
    p.add_argument("--private", action="store_true", help="create the Space as private")
    p.add_argument("--hardware", metavar="FLAVOR", help="request this hardware, e.g. cpu-basic, cpu-upgrade, zero-a10g "
                   "(ZeroGPU), t4-small, a10g-small (default: the Space's, cpu-basic when new)")
    p.add_argument("--dry-run", metavar="DIR", help="write the Space's folder to DIR (new or empty) and upload nothing")
    p.add_argument("--token", help="Hugging Face token (default: $HF_TOKEN or the `hf auth login` token)")
    return parser


def _cmd_make_demo_catalog(args) -> None:
    from .data.demo import make_demo_catalogs

    counts = make_demo_catalogs(args.out, seed=args.seed, looks=args.looks, scenes=args.scenes)
    print(f"wrote {counts['products']} products and {counts['looks']} looks under {args.out}")


def _cmd_train(args) -> None:
    from dataclasses import replace

    from . import training
    from .defaults import DEFAULT_MODEL_DIR

    log = lambda m: print(m, flush=True)  # noqa: E731
    names = ("steps", "batch_size", "variants", "seed", "levels", "stage", "adaptive", "dataset", "data_root", "looks",
             "checkpoint_every", "architecture", "texts", "hard_negatives", "look_crops", "patience", "eval_every",
             "scenes")
    overrides = {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}
    if args.what == "composed" and args.dataset is not None:
        if args.data_root is None:
            raise HslDemoError("--dataset needs --data-root (the data set's folder)")
        if args.out is None:  # the default folder holds the shipped demo head: never overwrite it by accident
            raise HslDemoError("--dataset needs --out (a model folder of its own, e.g. a copy of checkpoints/demo)")
        if args.variants is not None:
            raise HslDemoError("--variants goes with the demo catalog; a --dataset trains on its own photos")
    elif getattr(args, "data_root", None) is not None:
        raise HslDemoError("--data-root goes with --dataset")
    catalog = getattr(args, "catalog", None)
    if catalog is not None:
        if args.out is None:  # the default folder holds the shipped heads; a catalog's head is a new model
            raise HslDemoError("--catalog needs --out (the model folder to write: the catalog's backbone and "
                               "the trained heads)")
        if getattr(args, "triplets", None) is not None and not Path(args.triplets).is_file():
            raise HslDemoError(f"--triplets {args.triplets}: no such file")
        demo_world = ("variants", "scenes", "looks", "texts", "dataset", "stage")
        if any(getattr(args, k, None) is not None for k in demo_world):
            raise HslDemoError("--catalog trains on the catalog's own items and texts: --variants, --scenes, --looks, "
                               "--texts, --dataset and --stage go with the demo world")
    elif any(getattr(args, k, None) is not None for k in ("patience", "eval_every", "triplets")):
        raise HslDemoError("--eval-every, --patience and --triplets go with --catalog")
    if getattr(args, "model", None) is not None and args.out is None:
        # the default folder holds the embedded backbone's heads: one for another backbone goes elsewhere
        raise HslDemoError("--model needs --out (a model folder for that backbone's heads)")
    out = args.out or DEFAULT_MODEL_DIR
    config, train = {"backbone": (training.BackboneTrainConfig, training.train_backbone),
                     "hsl": (training.HSLTrainConfig, training.train_hsl),
                     "hmrn": (training.HMRNTrainConfig, training.train_hmrn),
                     "composed": (training.ComposedTrainConfig, training.train_composed)}[args.what]
    cfg = replace(config(), **overrides)
    if args.what == "backbone":
        train(out, cfg, log=log, resume=args.resume)
    elif catalog is not None:
        extra = {"triplets": args.triplets} if args.what == "composed" else {}
        train(out, args.model, cfg, log=log, resume=args.resume, catalog=catalog, **extra)
    else:
        train(out, args.model, cfg, log=log, resume=args.resume)


def _cmd_index(args) -> None:
    from .backbone import Backbone
    from .indexing import StageTimes, build_catalog
    from .search import load_heads

    if args.engine != "ray" and (args.address or args.workers):
        raise HslDemoError("--address and --workers go with --engine ray")
    backbone = Backbone.load(args.model, device=args.device, max_params=args.max_params)
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


def _notify(notices: list[str]) -> None:
    for message in notices:
        print(f"hsl-demo: warning: {message}", file=sys.stderr)


def search_mode(args) -> modes.Mode:
    """The mode a `search` command line asks for: the one whose key flag is given (--text alone
    is describe; --reference with or without --text is modify; --region is drill-down). A flag
    another chosen mode also reads (--text for modify) does not choose a mode of its own."""
    from . import modes

    def given(option) -> bool:
        return getattr(args, option.dest, None) is not None

    chosen = [m for m in modes.MODES.values() if m.cli and given(m.cli.key)]
    read_by_others = {o.flags[0] for m in chosen for o in m.cli.reads}
    chosen = [m for m in chosen if m.cli.key.flags[0] not in read_by_others] or chosen
    if len(chosen) != 1:
        keys = " or ".join(f"{m.cli.key.flags[0]} ({m.name})" for m in (chosen or modes.MODES.values()) if m.cli)
        raise HslDemoError(f"give exactly one of {keys}" if not chosen else f"{keys} go one at a time")
    return chosen[0]


def _cmd_search(args) -> None:
    from .search import Retriever

    mode = search_mode(args)
    query = mode.cli.query(args)  # checked before anything is loaded
    retriever = Retriever.from_pretrained(args.model, args.catalog, device=args.device, max_params=args.max_params)
    rankings = retriever.search(mode.name, query, k=args.k)
    for response in rankings:
        _notify(response.notices)
    if args.json:
        shown = [r.to_dict() for r in rankings] if mode.in_rounds else [r.to_dict() for r in rankings[-1]]
        print(json.dumps(shown, indent=2))
        return
    mode.cli.show(rankings)


def _cmd_evaluate(args) -> None:
    if (args.queries is None) == (args.dataset is None):
        raise HslDemoError("give exactly one of --queries (a query file) and --dataset (a public data set)")
    if args.dataset is not None:
        _evaluate_dataset(args)
        return
    for flag in ("data_root", "split", "images", "submission"):
        if getattr(args, flag) is not None:
            raise HslDemoError(f"--{flag.replace('_', '-')} goes with --dataset, not with --queries")
    from pathlib import Path

    from .evaluate import check_protocol_queries, heldout_phrasing_file, is_protocol_query, load_queries
    from .search import Retriever

    files = {"given": Path(args.queries)}
    heldout = heldout_phrasing_file(args.queries)
    if heldout is not None:  # report the held-out phrasing beside the file's own
        files["held-out phrasing"] = heldout
    loaded = {name: load_queries(path) for name, path in files.items()}  # every file checked before the model loads
    for name, queries in loaded.items():
        check_protocol_queries(queries, str(files[name]))
    if is_protocol_query(loaded["given"][0]):
        _evaluate_protocol_file(args, loaded["given"])
        return
    if args.keep_reference:
        raise HslDemoError("--keep-reference goes with a data set's queries (--dataset, or a converted query file)")
    retriever = Retriever.from_pretrained(args.model, args.catalog, device=args.device, max_params=args.max_params)
    tables = {name: _evaluate_table(retriever, queries, args) for name, queries in loaded.items()}
    for name, (table, _) in tables.items():
        seen = table[next(iter(table))].get("notices", {})
        for message, count in sorted(seen.items(), key=lambda kv: -kv[1])[:5]:
            _notify([f"{count} {'query' if count == 1 else 'queries'} of {files[name].name}: {message}"])
    if args.json:
        out = {name: table if args.ablation else table[args.variant] for name, (table, _) in tables.items()}
        body = dict(out["given"])
        if heldout is not None:
            body["heldout_phrasing"] = out["held-out phrasing"]
        print(json.dumps(body))
        return
    for name, (table, used) in tables.items():
        if heldout is not None:
            print(f"{'' if name == 'given' else chr(10)}## {name if name != 'given' else 'phrasing of the file'}: "
                  f"{files[name]}")
        _print_table(table, used, len(loaded[name]), retriever, args)


def _evaluate_table(retriever, queries: list[dict], args) -> tuple[dict, list]:
    """{variant: metrics} of a query file (every variant of its mode with --ablation), and the
    modes it holds."""
    from .evaluate import evaluate, query_mode

    used = list(dict.fromkeys(query_mode(q) for q in queries))
    if args.ablation and len(used) > 1:
        raise HslDemoError("--ablation needs a query file of one mode (" + ", ".join(m.name for m in used) + " found)")
    variants = used[0].variants if args.ablation else (args.variant,)
    return {v: evaluate(retriever, queries, variant=v, progress=True) for v in variants}, used


def _print_table(table: dict, used: list, n_queries: int, retriever, args) -> None:
    if used[0].in_rounds and len(used) == 1:
        _print_rounds(table, n_queries, retriever, used[0])
    elif not args.ablation:
        metrics = table[args.variant]
        print(f"{metrics['queries']} queries: " + "  ".join(f"R@{k} {metrics[f'R@{k}']:.3f}" for k in (1, 5, 10)))
        _print_extras(metrics)
    else:
        print(f"{n_queries} {used[0].name} queries, catalog {retriever.catalog.name}")
        print("| variant | R@1 | R@5 | R@10 |\n|---|---|---|---|")
        for v, m in table.items():
            print(f"| {v} | {m['R@1']:.3f} | {m['R@5']:.3f} | {m['R@10']:.3f} |")
        print()
        _print_extras(table[used[0].default_variant], f" ({used[0].default_variant})")


def _print_extras(metrics: dict, which: str = "") -> None:
    """What a user sees beyond recall: the first result's attributes, recall per kind of query
    and the mean modality weights."""
    if "top1_attributes" in metrics:
        print(f"top result has the asked{which}: " + ", ".join(f"{field} {share:.3f}" for field, share
                                                             in metrics["top1_attributes"].items()))
    if "kept_attributes" in metrics:
        print(f"kept what the text did not change{which}: " + ", ".join(
            f"{field} {m['top1']:.3f} at #1, {m['top5']:.3f} of the top 5 ({m['queries']} queries)"
            for field, m in metrics["kept_attributes"].items()))
    if "by_kind" in metrics:
        weights = metrics.get("mean_w_text", {})
        print("| kind | queries | R@1 | R@5 | R@10 | mean w_image | mean w_text |\n|---|---|---|---|---|---|---|")
        for kind, m in metrics["by_kind"].items():
            w = weights.get(kind)
            mean = f"{1 - w:.2f} | {w:.2f}" if w is not None else "| "
            print(f"| {kind} | {m['queries']} | {m['R@1']:.3f} | {m['R@5']:.3f} | {m['R@10']:.3f} | {mean} |")


def _print_rounds(table: dict, n_queries: int, retriever, mode) -> None:
    """R@1/5/10 after every round, a column group per variant."""
    variants = list(table)
    names = [v or mode.check_variant(None, retriever) for v in variants]
    print(f"{n_queries} {mode.name} queries, catalog {retriever.catalog.name}")
    print("| round | " + " | ".join(f"{v} R@1 | R@5 | R@10" for v in names) + " |")
    print("|---|" + "---|---|---|" * len(variants))
    for n, _ in enumerate(table[variants[0]]["rounds"]):
        cells = " | ".join(" | ".join(f"{table[v]['rounds'][n][f'R@{k}']:.3f}" for k in (1, 5, 10)) for v in variants)
        print(f"| {n + 1} | {cells} |")


def _evaluate_protocol_file(args, queries: list[dict]) -> None:
    """`evaluate --queries` on a converted data set's composed queries: its protocol, its table."""
    from .evaluate import PUBLISHED_COMPOSED, evaluate_protocol_queries
    from .modes.modify import VARIANTS as COMPOSED_VARIANTS
    from .search import Retriever

    _check_composed_variant(args)
    retriever = Retriever.from_pretrained(args.model, args.catalog, device=args.device, max_params=args.max_params)
    variants = COMPOSED_VARIANTS if args.ablation else (args.variant or "adaptive",)
    results = {v: evaluate_protocol_queries(retriever, queries, v, args.keep_reference) for v in variants}
    p = queries[0]["protocol"]
    fmt = p.get("dataset", "")
    _print_composed_results(args, fmt, p.get("split", ""), retriever.backbone.model_id, variants, results,
                            PUBLISHED_COMPOSED.get(fmt))


def _check_composed_variant(args) -> None:
    from .modes.modify import VARIANTS as COMPOSED_VARIANTS

    if args.variant is not None and args.variant not in COMPOSED_VARIANTS:
        raise HslDemoError(f"--variant {args.variant} is not a composed variant "
                           f"(one of {', '.join(COMPOSED_VARIANTS)})")


def _evaluate_dataset(args) -> None:
    """`evaluate --dataset`: composed retrieval on a public data set by its papers' protocol,
    beside the published figures."""
    from .data.composed_datasets import load_composed_dataset
    from .modes.modify import VARIANTS as COMPOSED_VARIANTS

    if args.data_root is None:
        raise HslDemoError("--dataset needs --data-root (the data set's folder)")
    if args.catalog is not None:
        raise HslDemoError("--catalog goes with --queries; a --dataset searches its own gallery")
    _check_composed_variant(args)
    if args.submission is not None and (args.dataset != "cirr" or args.ablation):
        raise HslDemoError("--submission writes CIRR test-server files: give --dataset cirr --split test1 "
                           "(one variant)")
    # fail before loading the model
    splits = load_composed_dataset(args.dataset, args.data_root, args.split, args.images,
                                   targets=args.submission is None)
    if args.submission is not None and splits[0].split != "test1":
        raise HslDemoError(f"--submission is for CIRR's test1 split (its targets are not public); {splits[0].split} "
                           "is scored here: drop --submission")
    from .backbone import Backbone
    from .evaluate import PUBLISHED_COMPOSED, evaluate_composed_splits, write_cirr_submission
    from .models.composed import ComposedHead
    from .search import load_heads

    backbone = Backbone.load(args.model, device=args.device, max_params=args.max_params)
    head = load_heads(backbone, args.max_params).get("composed") or ComposedHead(embed_dim=backbone.embed_dim)
    if args.submission is not None:
        paths = write_cirr_submission(backbone, head, splits[0], args.submission, args.variant or "adaptive")
        dropped = f" ({splits[0].dropped} left out: missing images)" if splits[0].dropped else ""
        print(f"CIRR test1: {len(splits[0].triplets)} queries ranked{dropped}; upload to the test server:")
        for path in paths:
            print(f"  {path}")
        return
    variants = COMPOSED_VARIANTS if args.ablation else (args.variant or "adaptive",)
    results = evaluate_composed_splits(backbone, head, args.dataset, splits, variants,
                                       keep_reference=args.keep_reference)
    _print_composed_results(args, args.dataset, splits[0].split, backbone.model_id, variants, results,
                            PUBLISHED_COMPOSED.get(args.dataset))


def _print_composed_results(args, fmt: str, split: str, model_id: str, variants, results: dict,
                            published: dict | None) -> None:
    """One table for both ways of evaluating a data set (--dataset, --queries of its conversion):
    recalls in percent, the number of queries they are over, the published figures below."""
    from .data.composed_datasets import PROTOCOLS
    from .evaluate import PUBLISHED_COMPOSED

    protocol = PROTOCOLS[fmt]
    published = {"source": PUBLISHED_COMPOSED["source"], **published} if published else None
    if args.json:
        body = results if args.ablation else results[variants[0]]
        print(json.dumps({"dataset": fmt, "split": split, "ks": list(protocol.ks),
                          "subset_ks": list(protocol.subset_ks), "model": model_id,
                          "reference": "kept" if args.keep_reference or not protocol.remove_reference else "removed",
                          **({"variants": body} if args.ablation else {"variant": variants[0], **body}),
                          "published": published}))
        return
    columns = [f"R@{k}" for k in protocol.ks] + [f"Rsubset@{k}" for k in protocol.subset_ks]
    reference = ("reference removed" if protocol.remove_reference and not args.keep_reference
                 else "reference kept" + (" (--keep-reference: not the papers' protocol)"
                                          if protocol.remove_reference else ""))
    print(f"{fmt} {split}, model {model_id} (recall in %; {reference})")
    print("| " + " | ".join(["variant", "category", *columns, "queries", "mean w_text"]) + " |")
    print("|---" * (len(columns) + 4) + "|")
    for variant, r in results.items():
        rows = [*r["categories"].items()] + ([("average", r["average"])] if len(r["categories"]) > 1 else [])
        for name, m in rows:
            print("| " + " | ".join([variant, name, *(f"{m[c]:.2f}" for c in columns), str(m["queries"]),
                                     f"{m['mean_w_text']:.2f}"]) + " |")
    if published:
        print(f"| {published['source']} | average | "
              + " | ".join(f"{published[c]:.2f}" if c in published else "" for c in columns) + " | | |")
    total = results[variants[0]]["average"]
    if total.get("dropped") or total.get("targets_not_in_gallery"):
        print(f"left out: {total.get('dropped', 0)} queries whose reference or target image is missing "
              f"({total.get('missing_images', 0)} images missing); targets not in the gallery (misses): "
              f"{total.get('targets_not_in_gallery', 0)}")


def _cmd_convert(args) -> None:
    import shlex

    if args.what != "visual-genome":
        _convert_composed(args)
        return
    from .data.visual_genome import write_visual_genome

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

    from .data.convert import TRIPLETS_FILE, write_composed_conversion

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


def _cmd_push(args) -> None:
    from .hub import push_model

    _warn_token_on_command_line(args.token)
    pushed = push_model(args.model_dir, args.repo, private=args.private, token=args.token)
    card = " (model card generated)" if pushed["card_generated"] else ""
    print(f"pushed {len(pushed['files'])} files to {pushed['url']}{card}")
    for name in pushed["files"]:
        print(f"  {name}")


def _warn_token_on_command_line(token: str | None) -> None:
    if token:
        _notify(["a token given with --token shows in the process list (`ps`) of this machine: prefer $HF_TOKEN "
                 "or the login of `hf auth login`, which are used when --token is not given"])


def _cmd_space(args) -> None:
    import tempfile

    from .space import build_space, check_hardware, hub_token, publish_space

    if args.dry_run is not None:
        folder = build_space(args.dry_run, args.repo, args.model, args.catalog, args.looks_catalog, args.hardware)
        print(f"wrote the Space folder {folder.path} ({folder.summary()}); nothing uploaded")
        return
    check_hardware(args.hardware)
    _warn_token_on_command_line(args.token)
    token = hub_token(args.token)  # before the folder is built: a missing token fails at once
    with tempfile.TemporaryDirectory(prefix="hsl-demo-space-") as tmp:
        folder = build_space(Path(tmp) / "space", args.repo, args.model, args.catalog, args.looks_catalog,
                             args.hardware)
        url = publish_space(folder, private=args.private, hardware=args.hardware, token=token)
    print(f"published {url} ({folder.summary()}; variables: "
          + ", ".join(f"{k}={v}" for k, v in folder.variables.items()) + ")")


def _cmd_serve(args) -> None:
    from .catalog import Catalog
    from .defaults import default_catalog, default_looks_catalog
    from .gpu import device_setting
    from .hub import check_model_spec
    from .ui import AppModels, serve

    _limit_malloc_arenas()
    check_model_spec(args.model)  # a model path that is no folder fails before the page is served
    device = device_setting(args.device)  # --device, else $HSL_DEMO_DEVICE (else cuda on ZeroGPU)

    # The catalogs first (a wrong one fails at once), then the page, served before torch,
    # open_clip and the model load behind it (a search sent meanwhile waits for them).
    models = AppModels(Catalog.open(args.catalog or default_catalog()),
                       Catalog.open(args.looks_catalog or default_looks_catalog()))
    for catalog in (models.products_catalog, models.looks_catalog):
        catalog.start_prefetch()  # while the model loads (warm_up waits for it)
    with _stopped_by_sigterm():
        cleanup = (max(1, args.cache_ttl // 3), args.cache_ttl) if args.cache_ttl > 0 else None
        demo = serve(models, concurrency=args.concurrency, charts=args.charts, block=False, cache_cleanup=cleanup)
        try:
            models.set(*_load_retrievers(models, args.model, device, args.max_params))
        except BaseException:
            demo.close()
            raise
        demo.block_thread()  # until Ctrl-C (it closes the server) or SIGTERM (exits, cleaning up)


@contextlib.contextmanager
def _stopped_by_sigterm():
    """SIGTERM (a Space or a container stopping the server) ends the server as Ctrl-C does, so
    that what it wrote (the thumbnails folder) is removed on the way out, not left behind."""
    def stop(signum, frame):
        raise SystemExit(128 + signum)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _limit_malloc_arenas(arenas: int = 2) -> None:
    """At most `arenas` glibc malloc arenas. The server's worker threads each get an arena of
    their own otherwise, and its resident memory grew about 25 MB a minute under a steady
    load (bench/bench_load.py --soak: +94 MB in 9 minutes; with 2 arenas, +1 MB). Only
    for this process, and only on glibc (elsewhere, nothing)."""
    import ctypes
    import ctypes.util

    if os.environ.get("MALLOC_ARENA_MAX"):  # glibc read it at start-up: the operator's choice
        return
    m_arena_max = -8  # glibc's malloc.h
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt(m_arena_max, arenas)
    except (OSError, AttributeError):
        pass


def _load_retrievers(models, model: str | None, device: str | None, max_params: int | None = None) -> tuple:
    """The products and looks retrievers of `models`' catalogs, for the model (default: embedded)."""
    import torch

    from .backbone import Backbone
    from .search import Retriever, load_heads

    # One thread per search: the server runs --concurrency searches at once, and small
    # per-query work split over threads that compete for 2 cores is 4x slower, not faster.
    torch.set_num_threads(1)
    backbone = Backbone.load(model, device=device, max_params=max_params)
    heads = load_heads(backbone, max_params)
    products, looks = Retriever(backbone, models.products_catalog, **heads), Retriever(backbone, models.looks_catalog,
                                                                                         **heads)
    for retriever in (products, looks):
        retriever.warm_up()  # now, rather than in the first visitor's queries
    return products, looks


class _OneLineWarnings(logging.Handler):
    """The package's log warnings as `hsl-demo: warning: ...` on the stderr of the moment."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"hsl-demo: {record.levelname.lower()}: {record.getMessage()}", file=sys.stderr)


COMMANDS = {
    "make-demo-catalog": _cmd_make_demo_catalog,
    "train": _cmd_train,
    "index": _cmd_index,
    "search": _cmd_search,
    "evaluate": _cmd_evaluate,
    "convert": _cmd_convert,
    "push": _cmd_push,
    "serve": _cmd_serve,
    "space": _cmd_space,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    package_log = logging.getLogger("hsl_demo")
    handler = _OneLineWarnings()
    # for this command only (restored below): our one-line form, not also the root logger's
    saved = package_log.level, package_log.propagate
    package_log.setLevel(logging.DEBUG if os.environ.get("HSL_DEMO_DEBUG") else logging.WARNING)
    package_log.propagate = False
    package_log.addHandler(handler)
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
    finally:
        package_log.removeHandler(handler)
        package_log.setLevel(saved[0])
        package_log.propagate = saved[1]
    return 0


if __name__ == "__main__":
    sys.exit(main())
