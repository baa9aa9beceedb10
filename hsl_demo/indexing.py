"""The writer: `hsl-demo index`, a folder of photos encoded into a catalog folder.

Encode (hsl_demo/features.py, the mapper shared with training), then write: the FAISS index
(made by `faiss.index_factory` from a spec, so index types are a parameter), the region
features, and the heads' precomputed image sides (hsl_demo/modes/). The catalog appears in one
rename, and only where nothing but an older catalog would be replaced (see
`check_output_folder`); hsl_demo/catalog.py reads it.
"""

from __future__ import annotations

import json
import math
import os
import posixpath
import time
from pathlib import Path

import faiss
import numpy as np
import torch

from .backbone import Backbone
from .catalog import BOX_SOURCE, CATALOG_FILES, FORMAT_VERSION, _read_manifest
from .errors import HslDemoError
from .features import REGION_GRID, dequantize, quantize, region_features_for
from .fileio import atomic_dir, load_jsonl, output_lock, write_json, write_jsonl
from .images import list_images, open_image
from .models import head_fingerprint
from .models.hsl import HSLHead
from .modes.describe import encode_hsl_store

IVF_THRESHOLD = 100_000  # exact search below this many items, IVF above
DEFAULT_NPROBE = 16


def default_index_spec(n: int) -> str:
    """The faiss.index_factory spec for `n` vectors: exact below IVF_THRESHOLD, else IVF with
    about 4 sqrt(n) lists (and at least 39 training points a list, as faiss wants)."""
    if n < IVF_THRESHOLD:
        return "Flat"
    return f"IVF{max(1, min(int(4 * np.sqrt(n)), n // 39))},Flat"


def build_index(vectors: np.ndarray, spec: str | None = None) -> tuple[faiss.Index, str, int]:
    """An inner-product FAISS index over `vectors` from a factory spec (default: by size);
    returns it, its spec and its nprobe (0 for exact search)."""
    n, dim = vectors.shape
    spec = spec or default_index_spec(n)
    try:
        index = faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise HslDemoError(f"--index {spec!r}: not a FAISS index_factory spec ({str(e).splitlines()[-1][:120]})") \
            from None
    if not index.is_trained:
        rng = np.random.default_rng(0)
        sample = vectors[rng.choice(n, size=min(n, 64 * getattr(index, "nlist", 1024)), replace=False)]
        try:
            index.train(sample)
        except RuntimeError as e:
            raise HslDemoError(f"--index {spec!r}: could not be trained on {n} vectors "
                               f"({str(e).splitlines()[-1][:120]})") from None
    ivf = faiss.try_extract_index_ivf(index)
    try:
        index.add(vectors)
        if ivf is not None:
            ivf.make_direct_map()  # rows read back by id (and kept in the file)
        # Modify and Drill down read the global embeddings back from the index: they must survive it
        sample = min(n, 1000)
        error = float(np.abs(index.reconstruct_n(0, sample) - vectors[:sample]).max())
    except RuntimeError as e:
        raise HslDemoError(f"--index {spec!r}: cannot hold or give back the vectors ({str(e).splitlines()[-1][:120]}); "
                           "use a Flat or IVF...,Flat spec") from None
    if error > 1e-4:
        raise HslDemoError(f"--index {spec!r} compresses the vectors (error up to {error:.3f}), and the catalog reads "
                           "them back for composed and drill-down queries: use a Flat or IVF...,Flat spec")
    nprobe = 0
    if ivf is not None:
        nprobe = DEFAULT_NPROBE
        ivf.nprobe = nprobe
    return index, spec, nprobe


def check_output_folder(out: Path, images_dir: Path) -> None:
    """Refuse, before any work, an `--out` that writing a catalog could destroy: a folder that
    is not a catalog written by this tool, or one that is, holds or lies inside the images."""
    out_real, images_real = out.resolve(), images_dir.resolve()
    if out_real == images_real or images_real.is_relative_to(out_real):
        raise HslDemoError(f"--out {out} would replace the images folder {images_dir} (it is or holds it): "
                           "write the catalog elsewhere")
    if out_real.is_relative_to(images_real):
        raise HslDemoError(f"--out {out} lies inside the images folder {images_dir}: write the catalog elsewhere")
    if not out.exists():
        return
    if not out.is_dir():
        raise HslDemoError(f"--out {out} exists and is not a folder")
    entries = list(out.iterdir())
    if not entries:
        return
    names = {p.name for p in entries}
    # a folder or link named like a catalog file is not one: replacing it would delete what it holds
    foreign = sorted({p.name for p in entries if p.name not in CATALOG_FILES or p.is_symlink() or not p.is_file()})
    if "manifest.json" not in names or foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise HslDemoError(f"--out {out} exists and is not a catalog written by hsl-demo "
                           f"({'it holds ' + shown if foreign else 'no manifest.json'}); "
                           "choose another folder (hsl-demo only replaces its own catalogs)")
    try:
        is_catalog = "format_version" in _read_manifest(out / "manifest.json")
    except HslDemoError:
        is_catalog = False
    if not is_catalog:
        raise HslDemoError(f"--out {out} exists and its manifest.json is not an hsl-demo catalog manifest; "
                           "choose another folder")

def _metadata_by_image(metadata: Path | None, images_dir: Path) -> dict[str, dict]:
    if metadata is None:
        return {}
    records = load_jsonl(metadata)
    by_image = {}
    for line, r in enumerate(records, 1):
        image = r.get("image")
        if not isinstance(image, str) or not image:
            raise HslDemoError(f"{metadata}: record {line} has no \"image\" (path relative to {images_dir})")
        if "id" in r and (not isinstance(r["id"], str) or not r["id"]):
            raise HslDemoError(f"{metadata}: record {line}: \"id\" must be a non-empty string")
        _check_boxes(r.get("items", []), f"{metadata}: record {line}")
        by_image[posixpath.normpath(Path(image).as_posix())] = r
    ids = [r["id"] for r in by_image.values() if "id" in r]
    if len(set(ids)) < len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise HslDemoError(f"{metadata}: duplicate item id {duplicate!r} (ids must be unique)")
    return by_image


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond any float
        return False


def _check_boxes(parts: object, where: str) -> None:
    """`items`: a list of {"box": [x0, y0, x1, y1], "caption": ...} in image pixels, x1 > x0, y1 > y0."""
    if not isinstance(parts, list) or not all(isinstance(p, dict) for p in parts):
        raise HslDemoError(f"{where}: \"items\" must be a list of objects with a \"box\"")
    for part in parts:
        if "box" not in part:
            continue
        box = part["box"]
        ok = (isinstance(box, list) and len(box) == 4
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) and _finite(v) for v in box))
        if not ok or box[2] <= box[0] or box[3] <= box[1]:
            raise HslDemoError(f"{where}: box {json.dumps(box)[:60]} is not [x0, y0, x1, y1] with x1 > x0 and y1 > y0")


def build_catalog(
    images_dir: str | Path,
    out: str | Path,
    backbone: Backbone,
    metadata: str | Path | None = None,
    batch_size: int = 64,
    progress: bool = True,
    hsl: HSLHead | None = None,
    index_spec: str | None = None,
) -> dict:
    """Encode every image below `images_dir` and write a catalog folder at `out`.

    `index_spec` is a faiss.index_factory spec ("Flat", "IVF1024,Flat", "IVF4096,PQ32"; default
    by size, see `default_index_spec`).

    With an HSL head, its query-independent image side is computed here too, so a search
    only encodes the query. Unreadable files are skipped and listed (in the manifest and the
    returned summary); the folder appears only when everything is written.
    """
    images_dir, out = Path(images_dir), Path(out)
    paths = list_images(images_dir)
    meta = _metadata_by_image(Path(metadata) if metadata else None, images_dir)
    if not paths:
        raise HslDemoError(f"{images_dir}: no images (.jpg, .jpeg, .png, .webp) found")
    # absolute and without "..", so "--out ." names a folder; a link to a catalog: replace the
    # catalog, keep the link
    out = out.resolve() if out.is_symlink() else Path(os.path.abspath(out))
    check_output_folder(out, images_dir)
    with output_lock(out) as cleaned:
        check_output_folder(out, images_dir)  # again under the lock: a finished run may have written it
        summary = _encode_and_write(paths, images_dir, out, backbone, meta, batch_size, progress, hsl, index_spec)
    return {**summary, "cleaned": cleaned}


def _encode_and_write(paths: list[Path], images_dir: Path, out: Path, backbone: Backbone, meta: dict[str, dict],
                      batch_size: int, progress: bool, hsl: HSLHead | None, index_spec: str | None) -> dict:
    from tqdm.auto import tqdm


    items, embeds, regions, scales, skipped = [], [], [], [], []
    seen_ids: set[str] = set()
    bar = tqdm(total=len(paths), desc="encoding images", unit="img", disable=not progress)
    for start in range(0, len(paths), batch_size):
        batch, batch_records = [], []
        for path in paths[start:start + batch_size]:
            rel = path.relative_to(images_dir).as_posix()
            try:
                image = open_image(path)
            except HslDemoError as e:
                skipped.append({"file": rel, "reason": str(e).split(": ", 1)[-1]})
                continue
            record = dict(meta.get(rel, {}))
            record.setdefault("id", Path(rel).with_suffix("").as_posix())
            record.setdefault("title", path.stem.replace("_", " "))
            if record["id"] in seen_ids:
                raise HslDemoError(f"duplicate item id {record['id']!r} ({rel})")
            seen_ids.add(record["id"])
            record["image"] = os.path.relpath(path.resolve(), out.resolve())
            batch.append(image)
            batch_records.append(record)
        if batch:
            boxes = [[it["box"] for it in record.get("items", []) if "box" in it] for record in batch_records]
            feats, per_image = region_features_for(backbone, batch, boxes)
            for r in per_image:
                q, s = quantize(r)
                regions.append(q)
                scales.append(s)
            embeds.append(feats.embeds.cpu().numpy().astype(np.float32))
            items.extend(batch_records)
        bar.update(len(paths[start:start + batch_size]))
    bar.close()
    if not items:
        raise HslDemoError(f"{images_dir}: none of the {len(paths)} files could be read as an image")
    missing = sorted(set(meta) - {p.relative_to(images_dir).as_posix() for p in paths})

    vectors = np.concatenate(embeds)
    r_max = max(len(r) for r in regions)
    dim = vectors.shape[1]
    region_arr = np.zeros((len(items), r_max, regions[0].shape[-1]), dtype=np.int8)
    scale_arr = np.zeros((len(items), r_max), dtype=np.float16)
    mask_arr = np.zeros((len(items), r_max), dtype=bool)
    for i, (q, s) in enumerate(zip(regions, scales)):
        region_arr[i, :len(q)], scale_arr[i, :len(q)], mask_arr[i, :len(q)] = q, s, True
    index, index_type, nprobe = build_index(vectors, index_spec)
    heads, store = {}, None
    if hsl is not None:
        store = encode_hsl_store(hsl, torch.from_numpy(vectors), dequantize(region_arr, scale_arr),
                                 torch.from_numpy(mask_arr), progress=progress)
        heads["hsl"] = {"fingerprint": head_fingerprint(hsl), "levels": hsl.levels, "dim": hsl.dim,
                        "bytes_per_item": store.bytes_per_item()}

    manifest = {
        "format_version": FORMAT_VERSION,
        "model": {"id": backbone.portable_id, "embed_dim": dim, "probe": backbone.probe()},
        "count": len(items),
        "index": index_type,
        "nprobe": nprobe,
        "regions": {
            "per_item": r_max,
            "source": BOX_SOURCE if any("items" in it for it in items) else f"grid{REGION_GRID}x{REGION_GRID}",
            "dtype": "int8",
            "bytes_per_item": int(region_arr[0].nbytes + scale_arr[0].nbytes + mask_arr[0].nbytes),
        },
        "heads": heads,
        "skipped": skipped,
        "missing_images": missing,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with atomic_dir(out, replaceable=lambda final: check_output_folder(final, images_dir)) as tmp:
        faiss.write_index(index, str(tmp / "index.faiss"))
        np.save(tmp / "regions.npy", region_arr)
        np.save(tmp / "region_scale.npy", scale_arr)
        np.save(tmp / "region_mask.npy", mask_arr)
        for name, array in (store.arrays().items() if store else ()):
            np.save(tmp / f"{name}.npy", array)
        write_jsonl(tmp / "items.jsonl", items)
        write_json(tmp / "manifest.json", manifest)
    return {"count": len(items), "skipped": skipped, "index": index_type, "out": str(out)}


