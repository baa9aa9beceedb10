"""`hsl-demo train WHAT`: the demo backbone, or a head (on the demo world or an indexed catalog)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..data.composed_datasets import COMPOSED_DATASETS
from ..errors import HslDemoError
from .args import positive_int

NAME = "train"


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train the demo backbone or a head")
    what = p.add_subparsers(dest="what", required=True, metavar="WHAT")
    b = trainer_parser(what, "backbone", "contrastive training of the demo backbone from scratch", model=False)
    b.add_argument("--variants", type=positive_int, default=None, help="rendered photos per combination")
    b.add_argument("--architecture", help="open_clip config name (default hsl-demo-tiny; hsl-demo-small is larger)")
    b.add_argument("--hard-negatives", type=float, default=None, metavar="SHARE",
                   help="share of each batch that are category-hard negatives (same colour and pattern, "
                   "another product; default 0)")
    b.add_argument("--look-crops", type=int, default=None, metavar="N",
                   help="rendered flat-lays whose product crops join the training photos (default 0)")
    b.add_argument("--scenes", type=int, default=None, metavar="N",
                   help="photos with context per combination (the product among props, a mannequin, a second "
                   "product), each with its crop around the product, beside the studio shots (default 0)")
    h = trainer_parser(what, "hsl", "train the HSL head on a frozen backbone")
    h.add_argument("--variants", type=positive_int, default=None, help="rendered photos per combination")
    h.add_argument("--scenes", type=int, default=None, metavar="N",
                   help="photos with context per combination beside the studio shots (default 0)")
    h.add_argument("--levels", type=positive_int, default=None, help="stacked encoder levels (default 2)")
    m = trainer_parser(what, "hmrn", "train the HMRN drill-down head on rendered looks")
    m.add_argument("--looks", type=positive_int, default=None, help="rendered training looks (default 3000)")
    c = trainer_parser(what, "composed", "train the composed-query head (stage 2 domain, then stage 3 hybrid)")
    c.add_argument("--stage", choices=("domain", "hybrid"), default=None,
                   help="domain: attribute-text matching; hybrid (default): all modifications, resuming from the "
                   "domain head in OUT/composed when there is one")
    c.add_argument("--variants", type=positive_int, default=None, help="rendered photos per combination")
    c.add_argument("--fixed-weights", dest="adaptive", action="store_false", default=None,
                   help="ablation: the combiner without adaptive weights (w_image = w_text = 0.5)")
    c.add_argument("--dataset", choices=COMPOSED_DATASETS,
                   help="train on a public data set's train split (published layout) instead of the demo catalog; "
                   "hybrid stage only")
    c.add_argument("--data-root", help="with --dataset: the data set's folder")
    c.add_argument("--triplets", metavar="FILE",
                   help="with --catalog: JSONL of {\"reference\": ID, \"text\": ..., \"targets\": [ID, ...]} "
                   "(default: pairs of items that differ in one or two attributes)")


def trainer_parser(what, name: str, help: str, model: bool = True) -> argparse.ArgumentParser:
    """A `train NAME` parser with the flags every trainer has."""
    t = what.add_parser(name, help=help)
    if model:
        t.add_argument("--model", help="backbone: model folder, Hub repo id or open_clip name (default: embedded)")
    t.add_argument("--out", default=None, help=f"model folder{'' if not model else f' to write {name}/ into'} "
                   "(default: checkpoints/demo)")
    t.add_argument("--steps", type=positive_int, default=None)
    t.add_argument("--batch-size", type=positive_int, default=None)
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--checkpoint-every", type=positive_int, default=None, metavar="N",
                   help="write a resumable checkpoint (OUT/.checkpoint/) every N steps")
    t.add_argument("--resume", action="store_true", help="continue the run checkpointed in OUT/.checkpoint/")
    t.add_argument("--texts", choices=("templates", "grammar"), default=None,
                   help="training texts: the first demo model's templates (default) or the phrasing grammar")
    if model:
        t.add_argument("--catalog", metavar="DIR",
                       help="train on an indexed catalog's features and metadata instead of the demo world "
                       "(needs --out: it becomes a complete model folder); --model defaults to the catalog's")
        t.add_argument("--eval-every", type=positive_int, default=None, metavar="N",
                       help="with --catalog: score the held-out items every N steps (default 100; hsl 200)")
        t.add_argument("--patience", type=positive_int, default=None, metavar="N",
                       help="with --catalog: stop after N held-out evaluations without improvement (default 5)")
    return t
def run(args: argparse.Namespace) -> None:
    from dataclasses import replace

    from .. import training
    from ..defaults import DEFAULT_MODEL_DIR

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
