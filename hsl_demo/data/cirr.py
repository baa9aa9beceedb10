"""CIRR (Liu et al., ICCV 2021: Composed Image Retrieval on Real-life images), read as published::

    ROOT/cirr/captions/cap.rc2.{train,val,test1}.json
        [{"pairid": int, "reference": NAME, "target_hard": NAME, "target_soft": {NAME: score},
          "caption": str, "img_set": {"id": int, "members": [NAME, ...]}}, ...]   (test1: no targets)
    ROOT/cirr/image_splits/split.rc2.{train,val,test1}.json   {NAME: "./train/34/NAME.png", ...}
    ROOT/<the relative path of each image>   (train/, dev/, test1/ as NLVR2 ships them)

A split's gallery is every image of its image split; a triplet's target is `target_hard`. As
in the published protocol's global setting the reference stays in the gallery.

`write_cirr_fixture` renders a tiny CIRR in this layout from the demo products.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from ..errors import HslDemoError
from ..fileio import read_json, read_json_list
from .composed_datasets import ComposedSplit, Triplet, _changes, _check_root, _field_str, _write_json

SPLITS = ("train", "val", "test1")
ALIASES = {"test": "test1", "dev": "val"}
IMAGE_FOLDERS = {"train": "train", "val": "dev", "test1": "test1"}  # NLVR2's folder of each split


def load_cirr(root: str | Path, split: str) -> ComposedSplit:
    """The CIRR `split` (train, val or test1; test means test1, dev means val)."""
    root = _check_root(root, "CIRR", "cirr/captions/, cirr/image_splits/ and the image folders")
    split = ALIASES.get(split, split)
    if split not in SPLITS:
        raise HslDemoError(f"CIRR has no split {split!r} (one of {', '.join(SPLITS)})")
    split_path = root / "cirr" / "image_splits" / f"split.rc2.{split}.json"
    names = read_json(split_path, "CIRR image split: image name -> relative path", dict)
    if not names or not all(isinstance(k, str) and isinstance(v, str) and v for k, v in names.items()):
        raise HslDemoError(f"{split_path}: expected a non-empty JSON object of image name -> relative path")
    images: dict[str, Path] = {}
    for name, rel in names.items():
        # NLVR2's folders are often links to elsewhere: judge the path as written, not resolved
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise HslDemoError(f"{split_path}: {name}: path {rel!r} leads outside the CIRR folder")
        images[name] = root / os.path.normpath(rel)
    missing = [n for n, p in images.items() if not p.is_file()]
    if missing:
        raise HslDemoError(f"CIRR {split}: {len(missing)} of {len(images)} images are not on disk "
                           f"(e.g. {names[missing[0]]} below {root})")
    cap_path = root / "cirr" / "captions" / f"cap.rc2.{split}.json"
    records = read_json_list(cap_path, "CIRR captions")
    triplets = []
    for i, r in enumerate(records):
        where = f"{cap_path}: entry {i}"
        if not isinstance(r, dict):
            raise HslDemoError(f"{where}: expected an object with \"reference\", \"target_hard\", \"caption\"")
        reference = _field_str(r, "reference", where)
        target = _field_str(r, "target_hard", where) if split != "test1" else None
        caption = _field_str(r, "caption", where)
        for name in (reference, target):
            if name is not None and name not in images:
                raise HslDemoError(f"{where}: image {name!r} is not in {split_path.name}")
        triplets.append(Triplet(reference, (caption,), target))
    if not triplets:
        raise HslDemoError(f"{cap_path}: empty split (no triplets)")
    return ComposedSplit("cirr", images, list(names), triplets)


def write_cirr_fixture(root: str | Path, colors=("red", "blue", "black"), patterns=("plain", "striped"),
                       categories=("t-shirt", "sneaker"), seed: int = 0) -> dict:
    """A tiny CIRR at `root`: per split, one photo per category, colour and pattern (2 x 3 x 2 = 12
    by default) as NLVR2-style PNGs in nested folders, and per image two triplets (the next
    colour, the next pattern; one caption each). Returns the counts written."""
    from .attributes import Attributes
    from .demo import render_product

    root = Path(root)
    rng = random.Random(seed)
    counts: dict = {"images": 0, "triplets": {}}
    pair = 0
    for split in SPLITS:
        names, paths = {}, {}
        for k, (cat, color, pattern) in enumerate((c, co, p) for c in categories for co in colors for p in patterns):
            attrs = Attributes(cat, color, pattern)
            name = f"{IMAGE_FOLDERS[split]}-{k}-0-img{k % 2}"
            rel = f"./{IMAGE_FOLDERS[split]}/{k % 3}/{name}.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            render_product(attrs, rng).save(root / rel)
            names[attrs], paths[name] = name, rel
        records = []
        for attrs, ref in names.items():
            for target, captions in _changes(attrs, colors, patterns):
                goal = names[target]
                r = {"pairid": pair, "reference": ref, "target_hard": goal, "target_soft": {goal: 1.0},
                     "caption": f"make it so it {captions[0]}", "img_set": {"id": pair, "members": [ref, goal]}}
                if split == "test1":
                    del r["target_hard"], r["target_soft"]
                records.append(r)
                pair += 1
        (root / "cirr" / "captions").mkdir(parents=True, exist_ok=True)
        (root / "cirr" / "image_splits").mkdir(parents=True, exist_ok=True)
        _write_json(root / "cirr" / "captions" / f"cap.rc2.{split}.json", records)
        _write_json(root / "cirr" / "image_splits" / f"split.rc2.{split}.json", paths)
        counts["images"] += len(paths)
        counts["triplets"][split] = len(records)
    return counts
