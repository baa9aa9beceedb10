"""Public composed-image-retrieval data sets: reference image + modification text -> target.

Two layouts are read as published (no conversion step):

Fashion-IQ (Wu et al., CVPR 2021)::

    ROOT/captions/cap.{dress,shirt,toptee}.{train,val,test}.json
        [{"candidate": ASIN, "target": ASIN, "captions": [str, str]}, ...]   (test: no "target")
    ROOT/image_splits/split.{dress,shirt,toptee}.{train,val,test}.json   [ASIN, ...]
    ROOT/images/<ASIN>.jpg   (or .png)

  One `ComposedSplit` per category; its gallery is that category's split images. As in the
  original protocol the reference image stays in the gallery.

Shoes (Guo et al., NeurIPS 2018, relative captions)::

    ROOT/relative_captions_shoes.json
        [{"ImageName": target, "ReferenceImageName": reference, "RelativeCaption": str}, ...]
    ROOT/train_im_names.txt, ROOT/eval_im_names.txt   (one image name per line)
    ROOT/images/**/<name>   (found by file name at any depth)

  A triplet is in a split when its target is in that split's name list; the gallery is the
  split's name list.

`write_fashioniq_fixture` and `write_shoes_fixture` render tiny data sets in these exact
layouts from the demo products, with captions that describe the change ("is blue", "has
stripes"), for tests and for trying the commands without the real data.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import HslDemoError
from ..fileio import read_json_list
from ..images import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

FASHIONIQ_CATEGORIES = ("dress", "shirt", "toptee")
FASHIONIQ_SPLITS = ("train", "val", "test")
COMPOSED_DATASETS = ("fashioniq", "shoes", "cirr", "fashion200k")
SHOES_SPLITS = {"train": "train", "eval": "eval", "test": "eval", "val": "eval"}
SHOES_CAPTIONS = "relative_captions_shoes.json"
SHOES_NAME_FILES = {"train": "train_im_names.txt", "eval": "eval_im_names.txt"}


@dataclass(frozen=True)
class Triplet:
    reference: str  # image id (Fashion-IQ: ASIN; Shoes: file name)
    captions: tuple[str, ...]  # the modification text(s), as published
    target: str | None  # None where the split's targets are not public (Fashion-IQ test)


@dataclass
class ComposedSplit:
    name: str  # what a results table calls it: the Fashion-IQ category, or "shoes"
    images: dict[str, Path]  # image id -> file, for every id in the gallery and the triplets
    gallery: list[str]  # the ids searched over, in a fixed order
    triplets: list[Triplet]


def join_captions(captions: Sequence[str], rng: random.Random | None = None) -> str:
    """One modification text from several captions: "cap1 and cap2".

    Each caption is stripped of white space and of the stray ".?, " at its ends (as CLIP4Cir
    does), empty ones are dropped. Without `rng` the given order is kept (evaluation); with
    one the order is shuffled (training-time augmentation).
    """
    parts = [" ".join(c.split()).strip(".?, ") for c in captions]
    parts = [p for p in parts if p]
    if rng is not None:
        rng.shuffle(parts)
    return " and ".join(parts)


# ---- Fashion-IQ ------------------------------------------------------------------------------

def load_fashioniq(root: str | Path, split: str,
                   categories: Sequence[str] = FASHIONIQ_CATEGORIES) -> list[ComposedSplit]:
    """One `ComposedSplit` per category of Fashion-IQ `split` (train, val or test)."""
    root = _check_root(root, "Fashion-IQ", "captions/, image_splits/ and images/")
    if split not in FASHIONIQ_SPLITS:
        raise HslDemoError(f"Fashion-IQ has no split {split!r} (one of {', '.join(FASHIONIQ_SPLITS)})")
    if not categories:
        raise HslDemoError("no Fashion-IQ categories given")
    out = []
    for cat in categories:
        cap_path = root / "captions" / f"cap.{cat}.{split}.json"
        records = read_json_list(cap_path, "Fashion-IQ captions")
        triplets = []
        for i, r in enumerate(records):
            where = f"{cap_path}: entry {i}"
            if not isinstance(r, dict):
                raise HslDemoError(f"{where}: expected an object with \"candidate\", \"target\", \"captions\"")
            reference = _field_str(r, "candidate", where)
            target = _field_str(r, "target", where) if (split != "test" or "target" in r) else None
            captions = r.get("captions")
            if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
                raise HslDemoError(f"{where}: \"captions\" must be a list of strings")
            triplets.append(Triplet(reference, tuple(captions), target))
        if not triplets:
            raise HslDemoError(f"{cap_path}: empty split (no triplets)")
        split_path = root / "image_splits" / f"split.{cat}.{split}.json"
        gallery = read_json_list(split_path, "Fashion-IQ image split")
        if not all(isinstance(g, str) and g for g in gallery):
            raise HslDemoError(f"{split_path}: expected a JSON list of image ids (ASIN strings)")
        if not gallery:
            raise HslDemoError(f"{split_path}: empty split (no images)")
        gallery = list(dict.fromkeys(gallery))
        images = _find_fashioniq_images(root / "images", _needed_ids(gallery, triplets), cat, split)
        out.append(ComposedSplit(cat, images, gallery, triplets))
    return out


def _find_fashioniq_images(folder: Path, ids: list[str], cat: str, split: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise HslDemoError(f"{folder}: no such folder (Fashion-IQ images go in ROOT/images/<ASIN>.jpg)")
    images, missing = {}, []
    for asin in ids:
        path = next((p for p in (folder / f"{asin}.jpg", folder / f"{asin}.png") if p.is_file()), None)
        if path is None:
            missing.append(asin)
        else:
            images[asin] = path
    if missing:
        raise HslDemoError(f"Fashion-IQ {cat} {split}: {len(missing)} of {len(ids)} images are missing from "
                           f"{folder} (e.g. {missing[0]}.jpg)")
    return images


# ---- Shoes -----------------------------------------------------------------------------------

def load_shoes(root: str | Path, split: str) -> ComposedSplit:
    """The Shoes relative-captions `split`: train, or eval (also called test or val)."""
    root = _check_root(root, "Shoes", f"{SHOES_CAPTIONS}, {', '.join(SHOES_NAME_FILES.values())} and images/")
    if split not in SHOES_SPLITS:
        raise HslDemoError(f"Shoes has no split {split!r} (one of train, eval; test and val mean eval)")
    names_path = root / SHOES_NAME_FILES[SHOES_SPLITS[split]]
    if not names_path.is_file():
        raise HslDemoError(f"{names_path}: no such file (the Shoes {SHOES_SPLITS[split]} image names)")
    gallery = list(dict.fromkeys(ln.strip() for ln in names_path.read_text(encoding="utf-8").splitlines()
                                 if ln.strip()))
    if not gallery:
        raise HslDemoError(f"{names_path}: empty split (no image names)")
    cap_path = root / SHOES_CAPTIONS
    records = read_json_list(cap_path, "Shoes relative captions")
    in_split, triplets = set(gallery), []
    for i, r in enumerate(records):
        where = f"{cap_path}: entry {i}"
        if not isinstance(r, dict):
            raise HslDemoError(f"{where}: expected an object with \"ImageName\", \"ReferenceImageName\", "
                               "\"RelativeCaption\"")
        target = _field_str(r, "ImageName", where)
        reference = _field_str(r, "ReferenceImageName", where)
        caption = r.get("RelativeCaption")
        if not isinstance(caption, str):
            raise HslDemoError(f"{where}: missing \"RelativeCaption\" (a string)")
        if target in in_split:
            triplets.append(Triplet(reference, (caption,), target))
    if not triplets:
        raise HslDemoError(f"{cap_path}: empty split (no triplet has its target in {names_path.name})")
    images_dir = root / "images"
    if not images_dir.is_dir():
        raise HslDemoError(f"{images_dir}: no such folder (Shoes images go anywhere below ROOT/images/)")
    by_name: dict[str, Path] = {}
    duplicates = []
    for p in sorted(images_dir.rglob("*")):
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
            if p.name in by_name:
                duplicates.append(p.name)
            else:
                by_name[p.name] = p
    if duplicates:
        log.warning("%s: %d image names occur in more than one folder (e.g. %s); the first one found is used",
                    images_dir, len(duplicates), duplicates[0])
    needed = _needed_ids(gallery, triplets)
    missing = [n for n in needed if n not in by_name]
    if missing:
        raise HslDemoError(f"Shoes {SHOES_SPLITS[split]}: {len(missing)} of {len(needed)} images are not found "
                           f"anywhere below {images_dir} (e.g. {missing[0]})")
    return ComposedSplit("shoes", {n: by_name[n] for n in needed}, gallery, triplets)


def load_composed_dataset(fmt: str, root: str | Path, split: str | None = None) -> list[ComposedSplit]:
    """The evaluable splits of a data set: fashioniq (one per category, default split val),
    shoes (one, default split eval), cirr (default val) or fashion200k (default test). A split
    without public targets is an error."""
    if fmt == "fashioniq":
        splits = load_fashioniq(root, split or "val")
    elif fmt == "shoes":
        splits = [load_shoes(root, split or "eval")]
    elif fmt == "cirr":
        from .cirr import load_cirr

        splits = [load_cirr(root, split or "val")]
    elif fmt == "fashion200k":
        from .fashion200k import load_fashion200k

        splits = [load_fashion200k(root, split or "test")]
    else:
        raise HslDemoError(f"unknown data set {fmt!r} (one of {', '.join(COMPOSED_DATASETS)})")
    if any(t.target is None for s in splits for t in s.triplets):
        raise HslDemoError(f"{fmt} {split}: the targets of this split are not public; evaluate on val")
    return splits


# ---- shared checks ---------------------------------------------------------------------------

def _check_root(root: str | Path, dataset: str, expected: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise HslDemoError(f"{root}: no such folder (a {dataset} root holds {expected})")
    return root


def _field_str(record: dict, key: str, where: str) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value:
        raise HslDemoError(f"{where}: missing \"{key}\" (a non-empty string)")
    return value


def _needed_ids(gallery: list[str], triplets: list[Triplet]) -> list[str]:
    ids = dict.fromkeys(gallery)
    for t in triplets:
        ids[t.reference] = None
        if t.target is not None:
            ids[t.target] = None
    return list(ids)


# ---- fixtures: tiny data sets in the public layouts, rendered from the demo products ---------

FIXTURE_COLORS = ("red", "blue", "green", "black")
FIXTURE_PATTERNS = ("plain", "striped", "dotted")
# The demo category each Fashion-IQ category is drawn as.
FASHIONIQ_FIXTURE_CATEGORIES = {"dress": "dress", "shirt": "shirt and tie", "toptee": "blouse"}
# Shoes fixture: demo category -> the folder it sits in (real Shoes nests images this way).
SHOES_FIXTURE_CATEGORIES = {"sneaker": "womens_sneakers", "boot": "womens_boots", "high heel": "womens_pumps"}
SHOES_FIXTURE_TRAIN = "high heel"  # this category's images are the train split; the others eval

_COLOR_CAPTIONS = ("is {c}", "{c} in color")
_PATTERN_CAPTIONS = {"plain": ("is plain", "has a solid color"), "striped": ("has stripes", "is striped"),
                     "dotted": ("has dots", "is polka-dot")}


def _changes(attrs, colors: Sequence[str], patterns: Sequence[str]):
    """The two triplets a fixture makes from one reference: next colour, next pattern, each with
    two captions that describe the target relative to the reference."""
    from .attributes import Attributes

    color = colors[(colors.index(attrs.color) + 1) % len(colors)]
    pattern = patterns[(patterns.index(attrs.pattern) + 1) % len(patterns)]
    return [(Attributes(attrs.category, color, attrs.pattern), tuple(s.format(c=color) for s in _COLOR_CAPTIONS)),
            (Attributes(attrs.category, attrs.color, pattern), _PATTERN_CAPTIONS[pattern])]


def write_fashioniq_fixture(root: str | Path, categories: Sequence[str] = FASHIONIQ_CATEGORIES,
                            colors: Sequence[str] = FIXTURE_COLORS, patterns: Sequence[str] = FIXTURE_PATTERNS,
                            seed: int = 0) -> dict:
    """A tiny Fashion-IQ at `root`: per category and split, one product photo per colour and
    pattern (4 x 3 = 12 by default; the first val image of each category is a .png), and per
    image two triplets (the next colour, the next pattern). Returns the counts written."""
    from .attributes import Attributes
    from .demo import render_product

    root = Path(root)
    for sub in ("captions", "image_splits", "images"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    counts = {"images": 0, "triplets": {}}
    for ci, cat in enumerate(categories):
        demo_cat = FASHIONIQ_FIXTURE_CATEGORIES.get(cat, "dress")
        for si, split in enumerate(FASHIONIQ_SPLITS):
            asin = {}
            for k, (color, pattern) in enumerate((c, p) for c in colors for p in patterns):
                attrs = Attributes(demo_cat, color, pattern)
                asin[attrs] = f"B0{ci}{si}FIX{k:04d}"
                suffix = ".png" if (split == "val" and k == 0) else ".jpg"
                render_product(attrs, rng).save(root / "images" / f"{asin[attrs]}{suffix}")
            records = []
            for attrs, ref in asin.items():
                for target, captions in _changes(attrs, colors, patterns):
                    r = {"candidate": ref, "target": asin[target], "captions": list(captions)}
                    if split == "test":
                        del r["target"]
                    records.append(r)
            _write_json(root / "captions" / f"cap.{cat}.{split}.json", records)
            _write_json(root / "image_splits" / f"split.{cat}.{split}.json", list(asin.values()))
            counts["images"] += len(asin)
            counts["triplets"][f"{cat}.{split}"] = len(records)
    return counts


def write_shoes_fixture(root: str | Path, colors: Sequence[str] = ("red", "blue", "black"),
                        patterns: Sequence[str] = ("plain", "striped"), seed: int = 0) -> dict:
    """A tiny Shoes at `root`: one photo per shoe category, colour and pattern (3 x 3 x 2 = 18
    by default) in nested folders, the high heels as the train split and the rest as eval,
    and per image two triplets within its category (the next colour, the next pattern).
    Returns the counts written."""
    from .attributes import Attributes
    from .demo import render_product

    root = Path(root)
    rng = random.Random(seed)
    names: dict = {}
    split_names: dict[str, list[str]] = {"train": [], "eval": []}
    for cat, folder in SHOES_FIXTURE_CATEGORIES.items():
        for k, (color, pattern) in enumerate((c, p) for c in colors for p in patterns):
            attrs = Attributes(cat, color, pattern)
            name = f"img_{folder}_{k}.jpg"
            path = root / "images" / folder / str(k % 2) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            render_product(attrs, rng).save(path)
            names[attrs] = name
            split_names["train" if cat == SHOES_FIXTURE_TRAIN else "eval"].append(name)
    records = []
    for attrs, ref in names.items():
        for target, captions in _changes(attrs, colors, patterns):
            records.append({"ImageName": names[target], "ReferenceImageName": ref, "RelativeCaption": captions[0]})
    _write_json(root / SHOES_CAPTIONS, records)
    for split, file in SHOES_NAME_FILES.items():
        (root / file).write_text("".join(f"{n}\n" for n in split_names[split]), encoding="utf-8")
    return {"images": len(names), "triplets": {split: 2 * len(v) for split, v in split_names.items()},
            "gallery": {split: len(v) for split, v in split_names.items()}}


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")
