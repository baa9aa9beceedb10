"""Visual Genome region descriptions as drill-down data, as Drill-down (Tan et al., NeurIPS 2019) uses them.

Layout read (Visual Genome v1.2 as published)::

    ROOT/region_descriptions.json
        [{"id": image_id, "regions": [{"region_id", "image_id", "phrase", "x", "y", "width", "height"}, ...]}, ...]
        (older releases name a region's id "id", as visual_genome_python_driver's parse_region_descriptions reads)
    ROOT/image_data.json   (optional: image sizes for clipping boxes)
        [{"image_id" (or "id"), "width", "height", "url", ...}, ...]
    ROOT/VG_100K/<image_id>.jpg  or  ROOT/VG_100K_2/<image_id>.jpg
    SPLIT_FILE   (optional) one image id per line, e.g. Drill-down's test split list

Each image becomes one catalog metadata record (for `hsl-demo index --metadata`) whose items
are its region phrases with their boxes, and one drill-down query (mode "multi") whose rounds
are those phrases and whose target is the image. As in Drill-down, at most 10 regions per
image are kept, the largest first; their round order is then shuffled with a per-image seed,
so it is fixed for a given seed whatever the split or limit.

tests/dataset_fixtures.py renders a tiny data set in this exact layout from the demo looks.
"""

from __future__ import annotations

import logging
import math
import os
import random
from pathlib import Path, PurePosixPath

from ..errors import HslDemoError
from ..fileio import atomic_dir, read_json_list, write_jsonl
from .convert import check_conversion_out, link_gallery

log = logging.getLogger(__name__)

REGIONS_FILE = "region_descriptions.json"
IMAGE_DATA_FILE = "image_data.json"
IMAGE_DIRS = ("VG_100K", "VG_100K_2")
METADATA_FILE = "metadata.jsonl"
QUERIES_FILE = "queries.multi.jsonl"
MAX_ROUNDS = 10  # Drill-down's number of turns
MIN_BOX_SIDE = 1.0  # pixels; a box thinner than this after clipping is degenerate
TITLE_PHRASES = 3
TITLE_MAX_CHARS = 100


# ---- reading ---------------------------------------------------------------------------------

def load_visual_genome(root: str | Path, split_file: str | Path | None = None, max_rounds: int = MAX_ROUNDS,
                       min_rounds: int = 1, seed: int = 0, limit: int | None = None) -> list[dict]:
    """Catalog metadata records, one per Visual Genome image found on disk (see the module doc).

    Images whose file is missing, or with fewer than `min_rounds` usable regions, are skipped
    (`write_visual_genome` reports how many); none left is an error.
    """
    return _convert(root, split_file, max_rounds, min_rounds, seed, limit)[0]


def multi_queries_from_records(records: list[dict], max_rounds: int = MAX_ROUNDS) -> list[dict]:
    """One drill-down query per record: its captions in the listed order as rounds, target the record."""
    _check_rounds(max_rounds, 1)
    out = []
    for r in records:
        captions = [it["caption"] for it in r.get("items", []) if isinstance(it.get("caption"), str)
                    and it["caption"].strip()][:max_rounds]
        if captions:
            out.append({"mode": "multi", "regions": captions, "targets": [r["id"]]})
    return out


def write_visual_genome(root: str | Path, out_dir: str | Path, split_file: str | Path | None = None,
                        max_rounds: int = MAX_ROUNDS, limit: int | None = None, *, min_rounds: int = 1,
                        seed: int = 0, link_images: bool = True) -> dict:
    """Write OUT/metadata.jsonl and OUT/queries.multi.jsonl (atomically, as one folder) and return counts.

    With `link_images`, OUT/images/ then gets a symbolic link per converted image (same relative
    paths as under ROOT), so that indexing it encodes just these images and not all of ROOT
    (with a split file, ROOT holds the other splits too). "gallery" in the result is that folder,
    or None where links could not be made (index ROOT then).
    """
    out = Path(out_dir).expanduser()
    check_conversion_out(Path(root).expanduser(), out, "Visual Genome",
                         lambda name: name in (METADATA_FILE, QUERIES_FILE))
    records, stats = _convert(root, split_file, max_rounds, min_rounds, seed, limit)
    queries = multi_queries_from_records(records, max_rounds)
    with atomic_dir(out) as tmp:
        write_jsonl(tmp / METADATA_FILE, records)
        write_jsonl(tmp / QUERIES_FILE, queries)
    gallery = link_gallery(Path(root).expanduser(), out, [r["image"] for r in records]) if link_images else None
    return {**stats, "queries": len(queries), "out": str(out), "metadata": str(out / METADATA_FILE),
            "queries_file": str(out / QUERIES_FILE), "gallery": None if gallery is None else str(gallery)}


def _convert(root, split_file, max_rounds: int, min_rounds: int, seed: int,
             limit: int | None) -> tuple[list[dict], dict]:
    _check_rounds(max_rounds, min_rounds)
    if limit is not None and limit < 1:
        raise HslDemoError(f"limit must be at least 1: {limit}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise HslDemoError(f"{root}: no such folder (the Visual Genome root holds {REGIONS_FILE}, "
                           f"{IMAGE_DATA_FILE} and {'/, '.join(IMAGE_DIRS)}/)")
    regions_path = root / REGIONS_FILE
    if not regions_path.is_file():
        raise HslDemoError(f"{regions_path}: no such file (Visual Genome region descriptions; "
                           f"unzip region_descriptions.json.zip into {root})")
    wanted = _read_split(Path(split_file).expanduser()) if split_file is not None else None
    entries = read_json_list(regions_path, "Visual Genome region descriptions")
    sizes = _read_image_sizes(root / IMAGE_DATA_FILE)
    on_disk = _index_images(root)

    by_id: dict[int, tuple[int, dict]] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise HslDemoError(f"{regions_path}: entry {i}: expected an object with \"id\" and \"regions\"")
        image_id = _image_id(entry, ("id", "image_id"), f"{regions_path}: entry {i}")
        by_id.setdefault(image_id, (i, entry))  # a repeated image keeps its first entry
    stats = {"listed": len(entries), "duplicate_entries": len(entries) - len(by_id)}
    if wanted is not None:
        matched = [i for i in dict.fromkeys(wanted) if i in by_id]
        if not matched:
            sample = ", ".join(str(i) for i in wanted[:3])
            raise HslDemoError(f"{split_file}: none of its {len(wanted)} image ids (e.g. {sample}) is in "
                               f"{regions_path}")
        stats["split_ids"] = len(set(wanted))
        stats["split_unmatched"] = len(set(wanted)) - len(matched)
        order = matched
    else:
        order = list(by_id)

    records: list[dict] = []
    dropped = {"empty": 0, "duplicate": 0, "degenerate": 0, "beyond_max_rounds": 0}
    missing: list[int] = []
    few = 0
    for image_id in order:
        if limit is not None and len(records) >= limit:
            break
        index, entry = by_id[image_id]
        rel = on_disk.get(image_id)
        if rel is None:
            missing.append(image_id)
            continue
        size = sizes.get(image_id) or _header_size(root / rel)
        items = _clean_regions(entry, image_id, size, f"{regions_path}: entry {index} (image {image_id})",
                               dropped)
        kept = items[:max_rounds]
        dropped["beyond_max_rounds"] += len(items) - len(kept)
        if len(kept) < min_rounds:
            few += 1
            continue
        random.Random(f"{seed}:{image_id}").shuffle(kept)
        captions = [it["caption"] for it in kept]
        title = ", ".join(captions[:TITLE_PHRASES])
        title = title[:1].upper() + title[1:]
        if len(title) > TITLE_MAX_CHARS:
            title = title[:TITLE_MAX_CHARS - 1].rstrip() + "\u2026"
        record = {"id": f"vg{image_id}", "image": rel, "title": title, "vg_image_id": image_id}
        if size:
            record["width"], record["height"] = size
        record["items"] = kept
        records.append(record)

    if not records:
        scanned = len(missing) + few
        if missing and not few:
            absent = "" if any((root / d).is_dir() for d in IMAGE_DIRS) else "; neither folder exists"
            raise HslDemoError(f"none of the {scanned} Visual Genome images to convert is on disk: looked for "
                               f"<image_id>.jpg in {' and '.join(str(root / d) for d in IMAGE_DIRS)} "
                               f"(e.g. {missing[0]}.jpg){absent}")
        raise HslDemoError(f"{regions_path}: no image has {min_rounds} or more usable regions "
                           f"({len(missing)} images not on disk, {few} with too few regions)")
    stats.update({"images": len(records), "regions": sum(len(r["items"]) for r in records),
                  "missing_images": len(missing), "missing_examples": [f"{i}.jpg" for i in missing[:3]],
                  "too_few_regions": few, "dropped_regions": dropped})
    return records, stats


def _check_rounds(max_rounds: int, min_rounds: int) -> None:
    if max_rounds < 1:
        raise HslDemoError(f"max_rounds must be at least 1: {max_rounds}")
    if not 1 <= min_rounds <= max_rounds:
        raise HslDemoError(f"min_rounds must be between 1 and max_rounds ({max_rounds}): {min_rounds}")


def _clean_regions(entry: dict, image_id: int, size: tuple[int, int] | None, where: str,
                   dropped: dict) -> list[dict]:
    """The image's usable regions as catalog items, largest box first, one per phrase (case-insensitive)."""
    regions = entry.get("regions")
    if not isinstance(regions, list):
        raise HslDemoError(f"{where}: missing \"regions\" (a list)")
    candidates = []
    for j, region in enumerate(regions):
        if not isinstance(region, dict):
            raise HslDemoError(f"{where}: region {j}: expected an object with \"phrase\", \"x\", \"y\", "
                               "\"width\", \"height\"")
        phrase = region.get("phrase")
        if phrase is not None and not isinstance(phrase, str):
            raise HslDemoError(f"{where}: region {j}: \"phrase\" must be a string")
        if "phrase" not in region:
            raise HslDemoError(f"{where}: region {j}: missing \"phrase\"")
        x, y, w, h = (_number(region, k, f"{where}: region {j}") for k in ("x", "y", "width", "height"))
        caption = " ".join((phrase or "").split())
        if not caption:
            dropped["empty"] += 1
            continue
        box = _clip_box(x, y, w, h, size)
        if box is None:
            dropped["degenerate"] += 1
            continue
        item = {"box": [_tidy(v) for v in box], "caption": caption}
        region_id = region.get("region_id", region.get("id"))  # older releases say "id" (as the driver reads)
        if region_id is not None:
            item["region_id"] = region_id
        candidates.append(((box[2] - box[0]) * (box[3] - box[1]), j, item))
    candidates.sort(key=lambda c: (-c[0], c[1]))  # largest first; ties keep the file's order
    seen: set[str] = set()
    items = []
    for _, _, item in candidates:
        key = item["caption"].casefold()
        if key in seen:
            dropped["duplicate"] += 1
            continue
        seen.add(key)
        items.append(item)
    return items


def _clip_box(x: float, y: float, w: float, h: float,
              size: tuple[int, int] | None) -> tuple[float, float, float, float] | None:
    """[x0, y0, x1, y1] inside the image (or None when degenerate)."""
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        return None
    x0, y0, x1, y1 = max(0.0, x), max(0.0, y), x + w, y + h
    if size is not None:
        x1, y1 = min(x1, float(size[0])), min(y1, float(size[1]))
    if x1 - x0 < MIN_BOX_SIDE or y1 - y0 < MIN_BOX_SIDE:
        return None
    return x0, y0, x1, y1


def _tidy(v: float) -> int | float:
    return int(v) if float(v).is_integer() else round(float(v), 2)


def _number(record: dict, key: str, where: str) -> float:
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise HslDemoError(f"{where}: missing or non-numeric \"{key}\"")
    return float(value)


def _image_id(record: dict, keys: tuple[str, ...], where: str) -> int:
    for key in keys:
        value = record.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.isdigit():
            return int(value)
    raise HslDemoError(f"{where}: missing \"{keys[0]}\" (the Visual Genome image id, a number)")


def _read_image_sizes(path: Path) -> dict[int, tuple[int, int]]:
    """image id -> (width, height) from image_data.json; {} where the file is absent."""
    if not path.is_file():
        return {}
    sizes = {}
    for i, entry in enumerate(read_json_list(path, "Visual Genome image data")):
        if not isinstance(entry, dict):
            raise HslDemoError(f"{path}: entry {i}: expected an object with \"image_id\", \"width\", \"height\"")
        image_id = _image_id(entry, ("image_id", "id"), f"{path}: entry {i}")
        w, h = entry.get("width"), entry.get("height")
        if isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0:
            sizes[image_id] = (w, h)
    return sizes


def _header_size(path: Path) -> tuple[int, int] | None:
    """The image's size from its header (no decoding), for images image_data.json does not list."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _index_images(root: Path) -> dict[int, str]:
    """image id -> path relative to ROOT, for every <id>.jpg in the image folders (VG_100K first)."""
    found: dict[int, str] = {}
    for folder in IMAGE_DIRS:
        path = root / folder
        if not path.is_dir():
            continue
        with os.scandir(path) as it:
            for e in it:
                stem, dot, suffix = e.name.rpartition(".")
                if dot and suffix.lower() in ("jpg", "jpeg") and stem.isdigit() and e.is_file():
                    found.setdefault(int(stem), f"{folder}/{e.name}")
    return found


def _read_split(path: Path) -> list[int]:
    """Image ids, one a line: "2345", "2345.jpg", "VG_100K/2345.jpg" or "vg2345"; # starts a comment."""
    if not path.is_file():
        raise HslDemoError(f"{path}: no such file (a split file lists one Visual Genome image id per line)")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise HslDemoError(f"{path}: not UTF-8 text") from None
    ids = []
    for n, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        name = PurePosixPath(text.split()[0].rstrip(",").replace("\\", "/")).name
        stem = name.rsplit(".", 1)[0] if "." in name else name
        stem = stem[2:] if stem.lower().startswith("vg") else stem
        if not stem.isdigit():
            raise HslDemoError(f"{path}:{n}: not a Visual Genome image id: {line.strip()!r} (one id per line)")
        ids.append(int(stem))
    if not ids:
        raise HslDemoError(f"{path}: empty split file (no image ids)")
    return ids
