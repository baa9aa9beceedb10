"""The writer of `hsl-demo convert`: a public data set in its published layout becomes what the
rest of the tool reads, in one folder OUT (replaced as a whole, atomically):

- OUT/metadata.jsonl: one record per image ("id", "image" relative to the image folder, texts;
  "splits" and "groups": every (category, split) list it is in; "galleries": the evaluation
  galleries it belongs to; "split": the one training reads, an evaluation split where it is in
  one), for `hsl-demo index OUT/images --metadata OUT/metadata.jsonl`;
- OUT/images/: a symbolic link per converted image, so indexing encodes just these;
- query files for `hsl-demo evaluate --queries` (composed: queries.composed.SPLIT.jsonl; text:
  queries.SPLIT.jsonl; drill-down: queries.multi.jsonl). A composed query carries its
  "protocol" (data set, split, category, gallery, whether the reference is removed, the
  recalls reported) and CIRR's "pairid" and "img_set", so `evaluate --queries` scores it as
  `evaluate --dataset` does;
- OUT/triplets.jsonl (composed data sets): every published triplet with its split, for
  `hsl-demo train composed --catalog CATALOG --triplets OUT/triplets.jsonl`.

Composed layouts: fashioniq, shoes (hsl_demo/data/composed_datasets.py), cirr (cirr.py),
fashion200k (fashion200k.py). Visual Genome has its own converter (visual_genome.py) and
shares the output checks and links here.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import HslDemoError
from ..fileio import atomic_dir, write_jsonl

log = logging.getLogger(__name__)

METADATA_FILE = "metadata.jsonl"
TRIPLETS_FILE = "triplets.jsonl"
GALLERY_DIR = "images"  # links to the converted images only: what `hsl-demo index` should encode
COMPOSED_FORMATS = ("fashioniq", "shoes", "cirr", "fashion200k")
FORMAT_SPLITS = {"fashioniq": ("train", "val", "test"), "shoes": ("train", "eval"),
                 "cirr": ("train", "val", "test1"), "fashion200k": ("train", "test")}


def check_conversion_out(root: Path, out: Path, dataset: str, ours=lambda name: False) -> None:
    """OUT is replaced as a whole, so it must hold nothing but an earlier conversion (names for
    which `ours(name)` is true, plus the gallery links), and must not be ROOT or around it."""
    root, out_abs = root.resolve(), out.resolve()
    if out_abs == root or out_abs in root.parents:
        raise HslDemoError(f"--out {out}: that folder holds the {dataset} data; write to a folder of its own")
    if out.is_dir():
        others = sorted(p.name for p in out.iterdir()
                        if not (ours(p.name) or (p.name == GALLERY_DIR and _links_only(p))))
        if others:
            raise HslDemoError(f"--out {out}: not empty ({', '.join(others[:3])}...); it would be replaced, "
                               "so give a new folder or an earlier conversion's")


def _links_only(folder: Path) -> bool:
    """Whether `folder` holds nothing but folders and symbolic links (an earlier conversion's
    gallery), so replacing it loses no file."""
    if folder.is_symlink() or not folder.is_dir():
        return False
    # os.walk does not descend into linked folders; a plain file anywhere is someone's
    return all((Path(here) / f).is_symlink() for here, _, files in os.walk(folder) for f in files)


def link_gallery(root: Path, out: Path, images: list[str]) -> Path | None:
    """OUT/images/<same relative path>: a symbolic link per image path (relative to ROOT); None
    where links cannot be made (index ROOT then)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{GALLERY_DIR}.tmp-", dir=out))
    try:
        base = root.resolve()
        for rel in images:
            link = tmp / rel
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(base / rel)
        mask = os.umask(0)
        os.umask(mask)
        for folder in (tmp, *(p for p in tmp.rglob("*") if p.is_dir() and not p.is_symlink())):
            os.chmod(folder, 0o777 & ~mask)  # mkdtemp makes 0700
        os.replace(tmp, out / GALLERY_DIR)  # OUT itself was just written anew, without a gallery
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        log.warning("could not link the converted images into %s (%s); index %s instead", out / GALLERY_DIR,
                    e.strerror or e, root)
        return None
    return out / GALLERY_DIR


def _split_files(fmt: str, root: Path, split: str) -> list[Path]:
    """The files whose presence means the data set has `split` (a split without them is left
    out; one with them must read cleanly)."""
    if fmt == "fashioniq":
        return sorted((root / "captions").glob(f"cap.*.{split}.json"))
    if fmt == "shoes":
        from .composed_datasets import SHOES_NAME_FILES

        return [root / SHOES_NAME_FILES[split]]
    if fmt == "cirr":  # CIRR's layout (ROOT/captions) or CLIP4Cir's (ROOT/cirr/captions)
        folder = next((f for f in (root, root / "cirr") if (f / "captions").is_dir()), root)
        return [folder / "captions" / f"cap.rc2.{split}.json"]
    return sorted((root / "labels").glob(f"*_{split}_detect_all.txt"))


def _load_split(fmt: str, root: Path, split: str, images: str | Path | None = None):
    from .cirr import load_cirr
    from .composed_datasets import FASHIONIQ_CATEGORIES, load_fashioniq, load_shoes

    if fmt == "fashioniq":  # the categories whose captions are there (each with its image list)
        present = [p.name.split(".")[1] for p in _split_files(fmt, root, split)]
        return load_fashioniq(root, split, [c for c in FASHIONIQ_CATEGORIES if c in present]
                              + sorted(set(present) - set(FASHIONIQ_CATEGORIES)))
    if fmt == "cirr":
        return [load_cirr(root, split, images)]
    return [load_shoes(root, split)]


def _ours(name: str) -> bool:
    return name in (METADATA_FILE, TRIPLETS_FILE) or (name.startswith("queries.") and name.endswith(".jsonl"))


def gallery_name(fmt: str, part, split: str) -> str:
    """What a converted record and query call one evaluation gallery: data set, category, split."""
    return ".".join(dict.fromkeys((fmt, part.name, split)))


def _add_to(record: dict, field: str, value: str) -> None:
    if value not in record[field]:
        record[field].append(value)


def write_composed_conversion(fmt: str, root: str | Path, out: str | Path, link_images: bool = True,
                              images: str | Path | None = None) -> dict:
    """Convert a composed data set (every split that is there) into OUT (see the module docstring).
    Returns counts: images, triplets per split, query files written, skipped splits, missing
    images and dropped queries per split, queries without public targets per split."""
    from .composed_datasets import PROTOCOLS, join_captions

    if fmt not in COMPOSED_FORMATS:
        raise HslDemoError(f"unknown data set {fmt!r} (one of {', '.join(COMPOSED_FORMATS)})")
    if images is not None and fmt != "cirr":
        raise HslDemoError("--images goes with CIRR (its images are often kept apart from the annotations)")
    root, out = Path(root).expanduser(), Path(out).expanduser()
    check_conversion_out(root, out, fmt, _ours)
    protocol = PROTOCOLS[fmt]
    records: dict[str, dict] = {}
    triplets: list[dict] = []
    query_files: dict[str, list[dict]] = {}
    skipped: dict[str, str] = {}
    missing: dict[str, list[str]] = {}
    dropped: dict[str, int] = {}
    untargeted: dict[str, int] = {}
    base: Path | None = None
    for split in FORMAT_SPLITS[fmt]:
        present = [p for p in _split_files(fmt, root, split) if p.is_file()]
        if not present:
            skipped[split] = f"no {', '.join(p.name for p in _split_files(fmt, root, split)) or 'files'}"
            continue
        captions: dict[str, str] = {}
        if fmt == "fashion200k":
            from .fashion200k import load_fashion200k, read_labels, text_queries

            captions = read_labels(root, split)
            parts = [load_fashion200k(root, split, captions=captions)]
        else:
            from .composed_split import NoImagesError

            try:
                parts = _load_split(fmt, root, split, images)
            except NoImagesError as e:  # annotations without images (often train): the split is left out
                skipped[split] = str(e)
                continue
        for part in parts:
            part_base = part.image_root or root
            if base is None:
                base = part_base
            elif part_base.resolve() != base.resolve():
                raise HslDemoError(f"{fmt}: the {split} images are below {part_base}, the others below {base}; "
                                   "keep the image folders together")
            gallery = gallery_name(fmt, part, split)
            in_gallery = set(part.gallery)
            for m in part.missing:
                missing.setdefault(split, []).append(m)
            dropped[split] = dropped.get(split, 0) + part.dropped
            for image_id in dict.fromkeys(part.gallery + [t.reference for t in part.triplets]):
                # relative to the image folder as written: image folders are often links to elsewhere
                rel = Path(os.path.relpath(part.images[image_id], base)).as_posix()
                record = records.setdefault(image_id, {"id": image_id, "image": rel, "split": split, "dataset": fmt,
                                                       "splits": [], "galleries": []})
                _add_to(record, "splits", split)
                if part.name != fmt:
                    record.setdefault("groups", [])
                    _add_to(record, "groups", part.name)
                if image_id in in_gallery:
                    _add_to(record, "galleries", gallery)
                # an image in any evaluation list is held out of training (no train/val leak)
                record["split"] = next((x for x in record["splits"] if x != "train"), "train")
            header = {"dataset": fmt, "split": split, "category": part.name, "gallery": gallery,
                      "remove_reference": protocol.remove_reference, "ks": list(protocol.ks),
                      "subset_ks": list(protocol.subset_ks), "dropped": part.dropped,
                      "missing_images": len(part.missing)}
            for t in part.triplets:
                if t.target is None:
                    untargeted[split] = untargeted.get(split, 0) + 1
                    continue
                text = join_captions(t.captions)
                targets = list(t.targets)  # Fashion200k: any image with the target's caption (TIRG)
                triplets.append({"reference": t.reference, "text": text, "targets": targets, "split": split})
                if split != "train":
                    query_files.setdefault(f"queries.composed.{split}.jsonl", []).append(
                        {"mode": "composed", "reference": t.reference, "text": text, "targets": targets,
                         **({"kind": part.name} if part.name != fmt else {}),
                         **({"pairid": t.pairid} if t.pairid is not None else {}),
                         **({"img_set": list(t.members)} if t.members else {}), "protocol": header})
        for path, caption in captions.items():
            record = records[path]
            record.update(title=caption, captions=[caption])
        if captions and split != "train":
            query_files[f"queries.{split}.jsonl"] = text_queries(captions)
    if not records:
        raise HslDemoError(f"{root}: no {fmt} split found ({'; '.join(f'{k}: {v}' for k, v in skipped.items())})")
    for split, reason in skipped.items():
        log.warning("%s: split %s left out (%s)", fmt, split, reason)
    base = base or root
    with atomic_dir(out) as tmp:
        write_jsonl(tmp / METADATA_FILE, records.values())
        write_jsonl(tmp / TRIPLETS_FILE, triplets)
        for name, queries in query_files.items():
            write_jsonl(tmp / name, queries)
    gallery_dir = link_gallery(base, out, [r["image"] for r in records.values()]) if link_images else None
    per_split: dict[str, int] = {}
    for t in triplets:
        per_split[t["split"]] = per_split.get(t["split"], 0) + 1
    return {"images": len(records), "triplets": per_split, "query_files": sorted(query_files), "out": str(out),
            "gallery": None if gallery_dir is None else str(gallery_dir), "image_root": str(base),
            "skipped": skipped, "missing": missing, "dropped": {k: v for k, v in dropped.items() if v},
            "untargeted": untargeted}
