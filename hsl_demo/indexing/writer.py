"""The writer: a catalog folder from finished shards (the FAISS index, every file in row order,
each mode's index-time store), written aside and renamed into place."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch

from .. import modes
from ..backbone import Backbone
from ..catalog import BOX_SOURCE, EMBEDS_FILE, FORMAT_VERSION, REGION_INDEX_FILE
from ..features import REGION_GRID, dequantize
from ..fileio import NpyRowWriter, atomic_dir, load_jsonl, read_json_list, write_json
from ..items import ItemWriter
from ..models import head_fingerprint
from ..reader import PACKED_IMAGES_DIR
from .policy import (
    DEFAULT_LIMITS,
    IndexLimits,
    build_index_from_shards,
    build_region_index,
    title_queries,
    tune_nprobe_on_shards,
)
from .shards import ShardFolder, StageTimes, pad_regions


def write_catalog(shards: ShardFolder, out: Path, backbone: Backbone, heads: dict[str, Any] | None = None,
                  index_spec: str | None = None, progress: bool = True, times: StageTimes | None = None,
                  missing: list[str] | None = None, replaceable: Callable[[Path], None] | None = None,
                  limits: IndexLimits = DEFAULT_LIMITS) -> dict:
    """The catalog folder `out` from finished shards: the FAISS index (trained on a sample,
    filled shard by shard, its nprobe tuned), then every file written in row order, one shard
    in memory at a time, with plain writes (see NpyRowWriter). `missing`: metadata records
    without an image, listed in the manifest; `replaceable` is atomic_dir's. `heads`: the
    model folder's heads, by name: each mode with an index-time store computes it with its head
    (or its untrained stand-in, where the mode says that is worth storing)."""

    times = times if times is not None else StageTimes()
    parts = shards.done()
    embeds = [np.load(p / "embeds.npy", mmap_mode="r") for p in parts]
    masks = [np.load(p / "mask.npy", mmap_mode="r") for p in parts]
    count = sum(len(e) for e in embeds)
    skipped = [s for p in parts for s in read_json_list(p / "skipped.json", "skipped files")]
    dim, r_max = embeds[0].shape[1], max(m.shape[1] for m in masks)
    with times("index"):
        index, index_type, nprobe = build_index_from_shards(embeds, index_spec, progress, limits.flat_max_items)
        nprobe_recall = None
        if nprobe:
            nprobe, nprobe_recall = tune_nprobe_on_shards(index, embeds, title_queries(parts, backbone, count))
        region_index, region_entry = None, None
        if count > limits.region_index_items:
            region_index, region_entry = build_region_index(
                parts, r_max, title_queries(parts, backbone, count, regions=True), progress)
    del embeds, masks
    storing = stored_heads(heads or {}, dim)
    entries = {name: {"fingerprint": head_fingerprint(head)} for name, (_, head) in storing.items()}
    with atomic_dir(out, replaceable=replaceable) as tmp, times("write"):
        outputs = {name: NpyRowWriter(tmp / name, shape, dtype) for name, (shape, dtype) in {
            EMBEDS_FILE: ((count, dim), np.float32), "regions.npy": ((count, r_max, dim), np.int8),
            "region_scale.npy": ((count, r_max), np.float16), "region_mask.npy": ((count, r_max), bool)}.items()}
        items_out = ItemWriter(tmp, count)
        try:
            has_boxes = _write_rows(parts, outputs, items_out, tmp, storing, entries, r_max, count, progress)
            for writer in (items_out, *outputs.values()):
                writer.close()
        except BaseException:
            for writer in (items_out, *outputs.values()):  # closed, unchecked: atomic_dir removes them
                writer.close(check=False)
            raise
        kept = _link_kept_images(parts, tmp / PACKED_IMAGES_DIR, progress)
        faiss.write_index(index, str(tmp / "index.faiss"))
        if region_index is not None:
            faiss.write_index(region_index, str(tmp / REGION_INDEX_FILE))
        manifest = {
            "format_version": FORMAT_VERSION,
            "model": {"id": backbone.portable_id, "embed_dim": dim, "probe": backbone.probe()},
            "count": count,
            "index": index_type,
            "nprobe": nprobe,
            **({"nprobe_recall": round(nprobe_recall, 4)} if nprobe_recall is not None else {}),
            "regions": {
                "per_item": r_max,
                "source": BOX_SOURCE if has_boxes else f"grid{REGION_GRID}x{REGION_GRID}",
                "dtype": "int8",
                "bytes_per_item": int(r_max * dim + r_max * 2 + r_max),
            },
            **({"region_index": region_entry} if region_entry else {}),
            **({"kept_images": {"folder": PACKED_IMAGES_DIR, "count": kept}} if kept else {}),
            "heads": entries,
            "skipped": skipped,
            "missing_images": missing or [],
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        write_json(tmp / "manifest.json", manifest)
    return {"count": count, "skipped": skipped, "index": index_type, "out": str(out)}


def stored_heads(heads: dict[str, Any], embed_dim: int) -> dict[str, tuple[modes.Store, Any]]:
    """{head name: (store, head)} of every mode that stores something in a catalog and has a
    head to compute it with."""
    out = {}
    for mode in modes.MODES.values():
        if mode.store is None:
            continue
        head = heads.get(mode.head)
        if head is None and mode.store.untrained and mode.untrained is not None:
            head = mode.untrained(embed_dim)
        if head is not None:
            out[mode.head] = (mode.store, head.eval())
    return out


def _write_rows(parts: list[Path], outputs: dict[str, NpyRowWriter], items_out: ItemWriter, tmp: Path,
                storing: dict[str, tuple[modes.Store, Any]], entries: dict, r_max: int, count: int,
                progress: bool) -> bool:
    """Every shard's rows through the writers, in order (with each stored head's arrays too,
    into writers added to `outputs`); whether any item has boxes."""
    from tqdm.auto import tqdm

    has_boxes = False
    for part in tqdm(parts, desc="writing the catalog", unit="shard", disable=not progress):
        items = load_jsonl(part / "items.jsonl")
        for item in items:
            has_boxes = has_boxes or "items" in item
            items_out.add(item)
        embeds_part = np.load(part / "embeds.npy")
        shard = {EMBEDS_FILE: embeds_part, "regions.npy": np.load(part / "regions.npy"),
                 "region_scale.npy": np.load(part / "scale.npy"), "region_mask.npy": np.load(part / "mask.npy")}
        for name, array in shard.items():
            outputs[name].write(array)
        if storing and len(embeds_part):  # a shard whose photos were all unreadable adds no rows
            full = {name: pad_regions(shard[name], r_max) for name in ("regions.npy", "region_scale.npy",
                                                                           "region_mask.npy")}
            features = (torch.from_numpy(embeds_part), dequantize(full["regions.npy"], full["region_scale.npy"]),
                        torch.from_numpy(full["region_mask.npy"]))
            for head_name, (store, head) in storing.items():
                arrays = store.compute(head, *features)
                for name, file in store.files(head_name).items():
                    array = np.asarray(arrays[name])
                    if file not in outputs:
                        outputs[file] = NpyRowWriter(tmp / f"{file}.npy", (count, *array.shape[1:]), array.dtype)
                    outputs[file].write(array)
                entries[head_name]["bytes_per_item"] = int(sum(np.asarray(a)[0].nbytes for a in arrays.values()))
    return has_boxes


def _link_kept_images(parts: list[Path], folder: Path, progress: bool) -> int:
    """The images the shards keep (a packed input's), as `folder/SHARD/ROW.ext`: hard links
    (copies across file systems), so the shards stay whole until the catalog is written.
    Returns how many."""
    from tqdm.auto import tqdm

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    count = 0
    kept = [p for p in parts if (p / PACKED_IMAGES_DIR).is_dir()]
    for part in tqdm(kept, desc="linking the images", unit="shard", disable=not progress or not kept):
        target = folder / part.name.removeprefix("shard-")
        shutil.copytree(part / PACKED_IMAGES_DIR, target, copy_function=link)
        count += sum(1 for _ in target.iterdir())
    return count
