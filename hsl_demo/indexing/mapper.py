"""The mapper: one shard's images read a batch ahead, decoded and preprocessed in threads while
the backbone encodes the batch before (global embeddings and region features,
hsl_demo/features.py), then written as the shard; what either engine does per shard."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..backbone import Backbone
from ..errors import HslDemoError
from ..features import quantize, region_features_for
from ..fileio import load_jsonl
from ..images import open_image
from ..reader import PACKED_IMAGES_DIR, ImageSource, SourceImage, image_suffix
from .shards import DECODE_THREADS, EncodedImages, ShardFolder, StageTimes


def encode_images(source: ImageSource, shard: dict, out: Path, backbone: Backbone, batch_size: int,
                   times: StageTimes, bar, seen_ids: set[str], keep: Path | None = None, keep_as: str = "",
                   threads: int = DECODE_THREADS) -> EncodedImages:
    """One shard's images encoded: read from `source` a batch ahead, decoded and preprocessed by
    `threads` threads (PIL and torchvision release the GIL), so the backbone rarely waits. With
    `keep`, each encoded image's bytes are saved there too, as `keep_as/ROW.ext` of the catalog."""
    from concurrent.futures import ThreadPoolExecutor

    def load(position: int, found: SourceImage) -> tuple[SourceImage, Image.Image | str, torch.Tensor | None]:
        if found.problem:
            return found, found.problem, None
        try:
            with times("decode"):
                image = open_image(found.data)
        except HslDemoError as e:
            return found, str(e).split(": ", 1)[-1], None
        with times("preprocess"):
            pixels = backbone.preprocess(image)
        if keep is None:
            found.record["image"] = os.path.relpath(Path(found.data).resolve(), out.resolve())
        else:
            name = f"{position:05d}{image_suffix(found.data)}"
            with times("write"):
                (keep / name).write_bytes(found.data)
            found.record["image"] = f"{keep_as}/{name}"
        return found, image, pixels

    def next_batch(reading: Iterator[SourceImage], pool: ThreadPoolExecutor) -> list:
        futures = []
        for position, found in reading:
            futures.append(pool.submit(load, position, found))
            if len(futures) == batch_size:
                break
        return futures

    items, embeds, regions, scales, skipped = [], [], [], [], []
    reading = enumerate(source.read(shard))
    with ThreadPoolExecutor(max(1, threads), thread_name_prefix="hsl-demo-decode") as pool:
        ahead = next_batch(reading, pool)
        while ahead:
            loaded = [future.result() for future in ahead]
            ahead = next_batch(reading, pool)
            batch, batch_pixels, batch_records = [], [], []
            for found, image, pixels in loaded:
                if pixels is None:
                    skipped.append({"file": found.name, "reason": image})
                    continue
                record = found.record
                if record["id"] in seen_ids:  # a later image with an id taken: skipped, not hours of shards lost
                    skipped.append({"file": found.name, "reason": f"duplicate item id {record['id']!r} (an "
                                    "earlier image has it)"})
                    if keep is not None:
                        (keep / Path(record["image"]).name).unlink(missing_ok=True)
                    continue
                seen_ids.add(record["id"])
                batch.append(image)
                batch_pixels.append(pixels)
                batch_records.append(record)
            if batch:
                boxes = [[it["box"] for it in record.get("items", []) if "box" in it] for record in batch_records]
                pixels = torch.stack(batch_pixels).to(backbone.device, backbone.dtype)
                feats, per_image = region_features_for(backbone, batch, boxes, times=times, pixels=pixels)
                for r in per_image:
                    q, sc = quantize(r)
                    regions.append(q)
                    scales.append(sc)
                embeds.append(feats.embeds.cpu().numpy().astype(np.float32))
                items.extend(batch_records)
            times.images += len(batch)
            bar.update(len(loaded))
    dim = backbone.embed_dim
    r_max = max((len(r) for r in regions), default=1)
    region_arr = np.zeros((len(items), r_max, dim), dtype=np.int8)
    scale_arr = np.zeros((len(items), r_max), dtype=np.float16)
    mask_arr = np.zeros((len(items), r_max), dtype=bool)
    for i, (q, sc) in enumerate(zip(regions, scales)):
        region_arr[i, :len(q)], scale_arr[i, :len(q)], mask_arr[i, :len(q)] = q, sc, True
    vectors = np.concatenate(embeds) if embeds else np.zeros((0, dim), np.float32)
    return EncodedImages(items, {"embeds": vectors, "regions": region_arr, "scale": scale_arr, "mask": mask_arr},
                         skipped, keep)


def encode_shards(shards: ShardFolder, plans: list[dict], source: ImageSource, out: Path, backbone: Backbone,
              batch_size: int, progress: bool, times: StageTimes) -> None:
    """Encode every shard not on disk yet, in this process."""
    from tqdm.auto import tqdm

    todo = shards.todo()
    bar = tqdm(total=source.count, initial=source.count - sum(plans[n]["count"] for n in todo),
               desc="encoding images", unit="img", disable=not progress, smoothing=0.1)
    seen_ids = {item["id"] for p in shards.done() for item in load_jsonl(p / "items.jsonl")}
    for n in todo:
        encode_shard(shards, n, plans[n], source, out, backbone, batch_size, times, bar, seen_ids)
        times.shard_done(plans[n]["count"])
    bar.close()

def encode_shard(shards: ShardFolder, n: int, plan: dict, source: ImageSource, out: Path, backbone: Backbone,
             batch_size: int, times: StageTimes, bar, seen_ids: set[str]) -> None:
    """Shard `n` (its `plan`) read, encoded and written: what either engine does per shard."""
    encoded = encode_images(source, plan, out, backbone, batch_size, times, bar, seen_ids,
                             keep=shards.staging(n) if source.packed else None,
                             keep_as=f"{PACKED_IMAGES_DIR}/{n:05d}")
    with times("write"):
        shards.write(n, encoded)
