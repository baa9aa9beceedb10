"""The runner: `hsl-demo index`, from an input to a catalog folder, in resumable shards (encoded
here, or by a Ray Data pool of backbones: hsl_demo/indexing/ray.py), then written."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from ..backbone import Backbone
from ..errors import HslDemoError
from ..fileio import output_lock
from ..reader import open_source
from .mapper import encode_shards
from .policy import DEFAULT_LIMITS, IndexLimits, new_index
from .shards import SHARD_SIZE, ShardFolder, StageTimes, check_output_folder
from .writer import write_catalog


def build_catalog(
    images_dir: str | Path,
    out: str | Path,
    backbone: Backbone,
    metadata: str | Path | None = None,
    batch_size: int = 64,
    progress: bool = True,
    heads: dict[str, Any] | None = None,
    index_spec: str | None = None,
    shard_size: int = SHARD_SIZE,
    times: StageTimes | None = None,
    engine: str = "local",
    ray_address: str | None = None,
    workers: int | None = None,
    image_column: str | None = None,
    limits: IndexLimits = DEFAULT_LIMITS,
) -> dict:
    """Encode every image of the input `images_dir` and write a catalog folder at `out`.

    The input (hsl_demo/reader.py): a folder of images (with `metadata` JSONL records), Parquet
    files of image bytes and metadata columns (the bytes in `image_column`, default "image"), or
    WebDataset tar shards; the catalog keeps a copy of a packed input's images.

    `index_spec` is a faiss.index_factory spec ("Flat", "IVF1024,Flat", "OPQ32,IVF4096,PQ32";
    default by size, see `default_index_spec`).

    The images are encoded `shard_size` at a time, each shard written to disk
    (`.OUT.shards/` next to `out`) before the next: a run that is interrupted resumes from its
    finished shards when run again on the same input and model, and the catalog is then
    assembled shard by shard, so memory does not grow with the catalog. With an HSL head, its
    query-independent image side is computed too, so a search only encodes the query.
    Unreadable images are skipped and listed (in the manifest and the returned summary); the
    folder appears only when everything is written. `times` collects seconds per stage.

    `engine`: "local" (this process) or "ray" (a Ray Data pool of `workers` backbones, in local
    mode or on the cluster at `ray_address`; hsl_demo/indexing_ray.py): the same shards either way.
    """
    if engine not in ("local", "ray"):
        raise HslDemoError(f"--engine {engine!r}: local or ray")
    if engine == "ray" and backbone.folder is None and ":" not in backbone.model_id:
        raise HslDemoError(f"--engine ray: model {backbone.model_id!r} has random weights, which every worker "
                           "would draw anew; give a model folder, a Hub id or NAME:PRETRAINED")
    images_dir, out = Path(images_dir), Path(out)
    # absolute and without "..", so "--out ." names a folder; a link to a catalog: replace the
    # catalog, keep the link
    out = out.resolve() if out.is_symlink() else Path(os.path.abspath(out))
    if images_dir.exists():
        check_output_folder(out, images_dir)  # before listing a large input
    source = open_source(images_dir, metadata, image_column)
    if index_spec:
        new_index(backbone.embed_dim, index_spec)  # a bad spec is refused now, not after hours of encoding
    times = times if times is not None else StageTimes()
    started = time.perf_counter()
    times.begin()
    with output_lock(out) as cleaned:
        check_output_folder(out, images_dir)  # again under the lock: a finished run may have written it
        plans = source.shards(shard_size)
        shards = ShardFolder.for_run(out, source, len(plans), backbone, shard_size)
        try:
            resumed = len(shards.done())
            if resumed and progress:
                print(f"resuming: {resumed} shard(s) of {shard_size} images already encoded in {shards.root}",
                      file=sys.stderr)
            if engine == "ray":
                from .ray import encode_with_ray

                encode_with_ray(shards, plans, source, out, backbone.model_id, batch_size, progress, times,
                                ray_address, workers)
            else:
                encode_shards(shards, plans, source, out, backbone, batch_size, progress, times)
            if not shards.count():
                raise HslDemoError(f"{images_dir}: none of the {source.count} images could be read "
                                   f"({shards.top_reasons()})")
        except HslDemoError:  # bad input met while encoding: nothing to resume (an interruption keeps the shards)
            shards.remove()
            raise
        try:
            summary = write_catalog(shards, out, backbone, heads, index_spec, progress, times, source.missing,
                                    replaceable=lambda final: check_output_folder(final, images_dir), limits=limits)
        except HslDemoError as e:  # the shards are sound: a run with the cause fixed resumes from them
            raise HslDemoError(f"{e} (the encoded shards are kept in {shards.root}: run again to resume)") from None
        shards.remove()
    times.wall += time.perf_counter() - started
    return {**summary, "cleaned": cleaned, "resumed_shards": resumed}
