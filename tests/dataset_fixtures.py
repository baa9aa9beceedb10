"""Tiny data sets in the public layouts (Fashion-IQ, Shoes, CIRR, Fashion200k, Visual Genome),
rendered from the demo products: what the tests read as the published files, written here
(test code, not the package's)."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

from hsl_demo.data.attributes import Attributes, describe
from hsl_demo.data.cirr import IMAGE_FOLDERS
from hsl_demo.data.cirr import SPLITS as CIRR_SPLITS
from hsl_demo.data.composed_datasets import FASHIONIQ_CATEGORIES, FASHIONIQ_SPLITS, SHOES_CAPTIONS, SHOES_NAME_FILES
from hsl_demo.data.demo import LOOK_IMAGE_SIZE, all_combinations, render_look, render_product
from hsl_demo.data.fashion200k import SPLITS as F200K_SPLITS
from hsl_demo.data.fashion200k import TEST_QUERIES
from hsl_demo.data.visual_genome import IMAGE_DATA_FILE, IMAGE_DIRS, REGIONS_FILE
from hsl_demo.errors import HslDemoError

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


def write_cirr_fixture(root: str | Path, colors=("red", "blue", "black"), patterns=("plain", "striped"),
                       categories=("t-shirt", "sneaker"), seed: int = 0) -> dict:
    """A tiny CIRR at `root`: per split, one photo per category, colour and pattern (2 x 3 x 2 = 12
    by default) as NLVR2-style PNGs in nested folders, and per image two triplets (the next
    colour, the next pattern; one caption each). Returns the counts written."""

    root = Path(root)
    rng = random.Random(seed)
    counts: dict = {"images": 0, "triplets": {}}
    pair = 0
    for split in CIRR_SPLITS:
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


def write_fashion200k_fixture(root: str | Path, colors=("red", "blue", "black"), patterns=("plain", "striped"),
                              seed: int = 0) -> dict:
    """A tiny Fashion200k at `root`: dresses and tops (as demo dresses and blouses), one product
    per colour and pattern and split with two photos each, captions like "red striped dress",
    and TIRG-style test queries (the next colour). Returns the counts written."""

    root = Path(root)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    drawn = {"dress": ("dresses", "dress"), "top": ("tops", "blouse")}
    images = 0
    queries = []
    for split in F200K_SPLITS:
        for category, (folder, demo_category) in drawn.items():
            lines, first = [], {}
            for k, (color, pattern) in enumerate((c, p) for c in colors for p in patterns):
                product = f"{5000 + 100 * F200K_SPLITS.index(split) + 10 * list(drawn).index(category) + k}"
                caption = f"{color} {'' if pattern == 'plain' else pattern + ' '}{category}"
                for photo in range(2):
                    rel = f"women/{folder}/casual/{product}/{product}_{photo}.jpeg"
                    (root / rel).parent.mkdir(parents=True, exist_ok=True)
                    render_product(Attributes(demo_category, color, pattern), rng).save(root / rel, format="JPEG")
                    lines.append(f"{rel}\t{rng.uniform(0.5, 1):.4f}\t{caption}\n")
                    first.setdefault((color, pattern), rel)
                    images += 1
            (root / "labels" / f"{category}_{split}_detect_all.txt").write_text("".join(lines), encoding="utf-8")
            if split == "test":
                for (color, pattern), rel in first.items():
                    target = first[(colors[(colors.index(color) + 1) % len(colors)], pattern)]
                    queries.append(f"{rel} {target}\n")
    (root / TEST_QUERIES).write_text("".join(queries), encoding="utf-8")
    return {"images": images, "test_queries": len(queries)}


# ---- a tiny fixture in the published layout ---------------------------------------------------

FIXTURE_FIRST_ID = 2401
FIXTURE_SCENE_PHRASES = ("clothes laid out on a table", "a flat lay of clothing", "items spread on a tabletop")


def write_visual_genome_fixture(root: str | Path, n_images: int = 6, seed: int = 0) -> dict:
    """A tiny Visual Genome at `root`, in the published layout, rendered from demo looks.

    Per image (ids FIXTURE_FIRST_ID, ...; even ones in VG_100K/, odd ones in VG_100K_2/): one
    region per product (a real description and its tight box), a scene region that overflows the
    image (clipped on reading) and a small region on the first product. Image 0 also has an
    empty phrase and a duplicate of its first product phrase (other case, smaller box); image 1
    a zero-width box. One more image is listed (with regions and image data) but has no file.
    split.txt lists the first half of the images, the missing one and an id listed nowhere.
    Returns what was written: ids, paths, the split and the regions meant to be dropped.
    """
    if n_images < 2:
        raise HslDemoError(f"the Visual Genome fixture needs at least 2 images: {n_images}")
    root = Path(root)
    for folder in IMAGE_DIRS:
        (root / folder).mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    combos = all_combinations()
    entries, image_data, images = [], [], {}
    region_id = 1
    cleaning: dict[str, list[int]] = {"empty": [], "duplicate": [], "degenerate": []}

    def region(image_id: int, phrase: str, x: int, y: int, w: int, h: int) -> dict:
        nonlocal region_id
        region_id += 1
        return {"region_id": region_id - 1, "width": w, "height": h, "image_id": image_id, "phrase": phrase,
                "y": y, "x": x}

    for i in range(n_images + 1):
        image_id = FIXTURE_FIRST_ID + i
        items: list[Attributes] = []
        while len(items) < 2 + i % 3:
            a = rng.choice(combos)
            if a.category not in {b.category for b in items}:
                items.append(Attributes(*a.as_tuple()))
        image, boxes = render_look(items, rng)
        size = image.size
        if i < n_images:  # the last one is listed but missing on disk
            rel = f"{IMAGE_DIRS[i % 2]}/{image_id}.jpg"
            image.save(root / rel, quality=90)
            images[image_id] = rel
        regions = [region(image_id, describe(a, rng), x0, y0, x1 - x0, y1 - y0)
                   for a, (x0, y0, x1, y1) in zip(items, boxes)]
        s = LOOK_IMAGE_SIZE
        regions.append(region(image_id, rng.choice(FIXTURE_SCENE_PHRASES), -6, 2, s + 12, s - 4))
        x0, y0 = boxes[0][:2]
        regions.append(region(image_id, f"a label on the {items[0].category}", x0 + 2, y0 + 2, 6, 5))
        if i == 0:
            regions.append(region(image_id, "   ", 10, 10, 40, 40))
            cleaning["empty"].append(region_id - 1)
            bx0, by0, bx1, by1 = boxes[0]
            regions.append(region(image_id, f" {regions[0]['phrase'].upper()}  ", bx0 + 1, by0 + 1,
                                  (bx1 - bx0) // 2, (by1 - by0) // 2))
            cleaning["duplicate"].append(region_id - 1)
        if i == 1:
            regions.append(region(image_id, "a thin seam", 30, 40, 0, 20))
            cleaning["degenerate"].append(region_id - 1)
        entries.append({"regions": regions, "id": image_id})
        image_data.append({"width": size[0], "url": f"https://cs.stanford.edu/people/rak248/VG_100K/{image_id}.jpg",
                           "height": size[1], "image_id": image_id, "coco_id": None, "flickr_id": None})
    missing_id = FIXTURE_FIRST_ID + n_images
    split_ids = [*list(images)[: n_images // 2], missing_id]
    unknown_id = 999_999_999
    (root / REGIONS_FILE).write_text(json.dumps(entries) + "\n", encoding="utf-8")
    (root / IMAGE_DATA_FILE).write_text(json.dumps(image_data) + "\n", encoding="utf-8")
    split_file = root / "split.txt"
    split_file.write_text("".join(f"{i}\n" for i in [*split_ids, unknown_id]), encoding="utf-8")
    return {"root": str(root), "images": images, "missing_id": missing_id, "split_file": str(split_file),
            "split_ids": split_ids, "unknown_split_id": unknown_id, "regions": region_id - 1,
            "dropped": cleaning}
