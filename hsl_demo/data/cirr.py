"""CIRR (Liu et al., ICCV 2021: Composed Image Retrieval on Real-life images), read as published.

Two layouts are read. CIRR's own (its README; ROOT is the `cirr_dataset` branch's clone)::

    ROOT/captions/cap.rc2.{train,val,test1}.json
        [{"pairid": int, "reference": NAME, "target_hard": NAME, "target_soft": {NAME: score},
          "caption": str, "img_set": {"id": int, "members": [NAME x 6], "reference_rank": int,
          "target_rank": int}}, ...]   (test1: no target_hard, target_soft, target_rank)
    ROOT/image_splits/split.rc2.{train,val,test1}.json   {NAME: "./train/34/NAME.png", ...}
    ROOT/img_raw/<the relative path of each image>   (train/<n>/, dev/, test1/ as NLVR2 ships them)

and CLIP4Cir's rearrangement: ROOT/cirr/{captions,image_splits}/ beside ROOT/{train,dev,test1}/.
`images` (--images) names the folder holding train/, dev/ and test1/ when it is elsewhere.

A split's gallery is every image of its image split; a query's target is `target_hard`. The
protocol (CIRR's evaluation, CLIP4Cir's validate.py) removes the reference from the ranking and
adds Recall_subset@1/2/3: the rank of the target among the query's img_set members without
the reference (see `hsl_demo.evaluate`).

tests/dataset_fixtures.py renders a tiny CIRR in this layout from the demo products.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import HslDemoError
from ..fileio import read_json, read_json_list
from .composed_split import ComposedSplit, Triplet, check_root, field_str, keep_present

SPLITS = ("train", "val", "test1")
ALIASES = {"test": "test1", "dev": "val"}
IMAGE_FOLDERS = {"train": "train", "val": "dev", "test1": "test1"}  # NLVR2's folder of each split
PROBE = 20  # image paths tried per candidate image folder


def annotations_dir(root: Path) -> Path:
    """The folder holding captions/ and image_splits/: ROOT (CIRR's layout) or ROOT/cirr (CLIP4Cir's)."""
    for folder in (root, root / "cirr"):
        if (folder / "captions").is_dir() and (folder / "image_splits").is_dir():
            return folder
    raise HslDemoError(f"{root}: no captions/ and image_splits/ here or in {root / 'cirr'} (CIRR's layout: "
                       "ROOT/captions/, ROOT/image_splits/, ROOT/img_raw/; CLIP4Cir's: ROOT/cirr/captions/, ...)")


def image_base(root: Path, annotations: Path, rels: list[str], images: str | Path | None) -> Path:
    """The folder the image split's relative paths start from: `images` when given, else
    the first of ROOT/img_raw (CIRR's layout) and ROOT (CLIP4Cir's) where the first images are."""
    candidates = [Path(images).expanduser()] if images is not None else list(dict.fromkeys(
        [root / "img_raw", annotations.parent / "img_raw", root]))
    probe = rels[:PROBE]
    for base in candidates:
        if any((base / os.path.normpath(rel)).is_file() for rel in probe):
            return base
    tried = "; ".join(str(b / os.path.normpath(probe[0])) for b in candidates)
    raise HslDemoError(f"CIRR images not found: tried {tried} (give --images DIR: the folder holding train/, "
                       "dev/ and test1/)")


def load_cirr(root: str | Path, split: str, images: str | Path | None = None) -> ComposedSplit:
    """The CIRR `split` (train, val or test1; test means test1, dev means val). Images not on
    disk are left out with their queries (see `keep_present`)."""
    root = check_root(root, "CIRR", "captions/, image_splits/ and img_raw/ (or CLIP4Cir's cirr/ beside the "
                       "image folders)")
    split = ALIASES.get(split, split)
    if split not in SPLITS:
        raise HslDemoError(f"CIRR has no split {split!r} (one of {', '.join(SPLITS)})")
    annotations = annotations_dir(root)
    split_path = annotations / "image_splits" / f"split.rc2.{split}.json"
    names = read_json(split_path, "CIRR image split: image name -> relative path", dict)
    if not names or not all(isinstance(k, str) and isinstance(v, str) and v for k, v in names.items()):
        raise HslDemoError(f"{split_path}: expected a non-empty JSON object of image name -> relative path")
    for name, rel in names.items():
        # NLVR2's folders are often links to elsewhere: judge the path as written, not resolved
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise HslDemoError(f"{split_path}: {name}: path {rel!r} leads outside the CIRR folder")
    base = image_base(root, annotations, list(names.values()), images)
    cap_path = annotations / "captions" / f"cap.rc2.{split}.json"
    records = read_json_list(cap_path, "CIRR captions")
    triplets = []
    for i, r in enumerate(records):
        where = f"{cap_path}: entry {i}"
        if not isinstance(r, dict):
            raise HslDemoError(f"{where}: expected an object with \"reference\", \"target_hard\", \"caption\"")
        reference = field_str(r, "reference", where)
        target = field_str(r, "target_hard", where) if split != "test1" else None
        caption = r.get("caption")
        if not isinstance(caption, str):  # test1 has a caption of " ": a string, empty once stripped
            raise HslDemoError(f"{where}: missing \"caption\" (a string)")
        pairid, img_set = r.get("pairid"), r.get("img_set")
        if not isinstance(pairid, int) or isinstance(pairid, bool):
            raise HslDemoError(f"{where}: missing \"pairid\" (an integer)")
        members = img_set.get("members") if isinstance(img_set, dict) else None
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise HslDemoError(f"{where}: \"img_set\" must be an object with \"members\" (image names)")
        for name in (reference, target, *members):
            if name is not None and name not in names:
                raise HslDemoError(f"{where}: image {name!r} is not in {split_path.name}")
        triplets.append(Triplet(reference, (caption,), target, pairid, tuple(members)))
    if not triplets:
        raise HslDemoError(f"{cap_path}: empty split (no triplets)")
    paths = {name: base / os.path.normpath(rel) for name, rel in names.items()}

    def find(name: str) -> Path | None:
        return paths[name] if paths[name].is_file() else None

    part = keep_present("cirr", split, list(names), triplets, find, f"below {base}")
    part.image_root = base
    return part
