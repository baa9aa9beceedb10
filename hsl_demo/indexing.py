"""The writer: `hsl-demo index`, a folder of photos encoded into a catalog folder.

Encode (hsl_demo/features.py, the mapper shared with training), then write: the FAISS index
(made by `faiss.index_factory` from a spec, so index types are a parameter), the region
features, and the heads' precomputed image sides (hsl_demo/modes/). The catalog appears in one
rename, and only where nothing but an older catalog would be replaced (see
`check_output_folder`); hsl_demo/catalog.py reads it.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch
from PIL import Image

from . import modes
from .backbone import Backbone
from .catalog import BOX_SOURCE, EMBEDS_FILE, FORMAT_VERSION, REGION_INDEX_FILE, _read_manifest, catalog_files
from .defaults import REGION_INDEX_ITEMS
from .errors import HslDemoError
from .features import REGION_GRID, dequantize, quantize, region_features_for
from .fileio import NpyRowWriter, atomic_dir, load_jsonl, output_lock, read_json_list, write_json, write_jsonl
from .images import open_image
from .items import ItemWriter
from .models import head_fingerprint
from .reader import PACKED_IMAGES_DIR, ImageSource, SourceImage, image_suffix, open_source

FLAT_MAX_ITEMS = 50_000  # exact search up to this many items, IVF above
IVF_FLAT_MAX_BYTES = 1 << 30  # IVF keeps the full vectors up to this size, product-quantised codes above
DEFAULT_NPROBE = 16  # an IVF index's nprobe until tune_nprobe picks one
NPROBE_CANDIDATES = 200  # the candidates a search takes from FAISS (search.DEFAULT_CANDIDATES)
NPROBE_RECALL = 0.98  # the share of the exact top 10 those candidates must hold
REGION_LISTS = 4096  # IVF lists of a region index at most (tens of millions of region vectors)
REGION_MAX_NPROBE = 256  # a region index's nprobe stops here (its codes may cap the recall below the target)


def default_index_spec(n: int, dim: int) -> str:
    """The faiss.index_factory spec for `n` vectors of `dim` floats: exact up to
    FLAT_MAX_ITEMS; then IVF with about 4 sqrt(n) lists (at least 39 training points a list, as
    faiss wants), keeping the vectors while they fit IVF_FLAT_MAX_BYTES, else OPQ-rotated
    product-quantised codes of dim/4 bytes (the catalog keeps the vectors on disk, and re-scores
    the candidates with them)."""
    if n <= FLAT_MAX_ITEMS:
        return "Flat"
    lists = _ivf_lists(n)
    if n * dim * 4 <= IVF_FLAT_MAX_BYTES or dim % 4:
        return f"IVF{lists},Flat"
    m = dim // 4
    return f"OPQ{m},IVF{lists},PQ{m}"


def _ivf_lists(n: int, most: int | None = None) -> int:
    """About 4 sqrt(n) IVF lists for n vectors (at most `most`), with at least 39 training
    points a list, as faiss wants."""
    return max(1, min(int(4 * np.sqrt(n)), most or n, n // 39))


def build_index(vectors: np.ndarray, spec: str | None = None) -> tuple[faiss.Index, str, int]:
    """An inner-product FAISS index over `vectors` from a factory spec (default: by size);
    returns it, its spec and its nprobe (0 for exact search)."""
    return build_index_from_shards([vectors], spec)


def _nlist(spec: str) -> int:
    """The IVF list count a factory spec asks for (1024 when it names none: a sample size)."""
    head = next((part for part in spec.split(",") if part.startswith("IVF")), "")
    digits = re.match(r"\d+", head[3:])
    return int(digits.group()) if digits else 1024


def _new_index(dim: int, spec: str) -> faiss.Index:
    try:
        return faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise HslDemoError(f"--index {spec!r}: not a FAISS index_factory spec ({str(e).splitlines()[-1][:120]})") \
            from None


def _train(index: faiss.Index, sample: np.ndarray, spec: str, n: int) -> None:
    if index.is_trained:
        return
    try:
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
    except RuntimeError as e:
        raise HslDemoError(f"--index {spec!r}: could not be trained on {n} vectors "
                           f"({str(e).splitlines()[-1][:120]})") from None


def _add(index: faiss.Index, vectors: np.ndarray, spec: str) -> None:
    try:
        index.add(vectors)
    except RuntimeError as e:
        raise HslDemoError(f"--index {spec!r}: cannot hold the vectors ({str(e).splitlines()[-1][:120]})") from None


def tune_nprobe(index: faiss.Index, queries: list[np.ndarray], blocks: Iterable[np.ndarray], k: int = 10,
                candidates: int = NPROBE_CANDIDATES, target: float = NPROBE_RECALL,
                max_nprobe: int | None = None) -> tuple[int, float]:
    """The smallest nprobe (a power of two) at which the IVF stage's top `candidates` hold
    `target` of the exact top `k` of every group of `queries` (autofaiss picks it the same way,
    from vectors of the catalog; text queries lie elsewhere in the space, so the build adds the
    embeddings of item titles). `blocks`: every indexed vector, in id order, a block at a time
    (ids of vectors never added, zeros, may appear). (nprobe, the lowest group's recall); sets
    it on the index."""
    ivf = faiss.try_extract_index_ivf(index)
    n = index.ntotal
    joined = np.ascontiguousarray(np.concatenate(queries), dtype=np.float32)
    group = np.repeat(np.arange(len(queries)), [len(q) for q in queries])
    exact = _exact_top(blocks, joined, min(k, n))
    highest = min(ivf.nlist, max_nprobe or ivf.nlist)
    nprobe = 1
    while True:
        ivf.nprobe = nprobe
        _, found = index.search(joined, min(candidates, n))
        hit = np.array([len(set(e) & set(f)) / len(e) for e, f in zip(exact.tolist(), found.tolist())])
        recall = min(float(hit[group == g].mean()) for g in range(len(queries)))
        if recall >= target or nprobe >= highest:
            return nprobe, recall
        nprobe = min(nprobe * 2, highest)


def tune_nprobe_on_shards(index: faiss.Index, shards: list[np.ndarray], text_queries: np.ndarray | None = None,
                          queries: int = 256) -> tuple[int, float]:
    """`tune_nprobe` for an index of the vectors kept in `shards`, with `queries` of them (and
    `text_queries`, a group of their own)."""
    n = sum(len(s) for s in shards)
    sample = _sample_rows(shards, np.random.default_rng(1).choice(n, size=min(n, queries), replace=False))
    groups = [sample] if text_queries is None or not len(text_queries) else [sample, text_queries]
    return tune_nprobe(index, groups, (np.ascontiguousarray(s, dtype=np.float32) for s in shards))


def _title_queries(parts: list[Path], backbone: Backbone, count: int, regions: bool = False,
                   n: int = 256) -> np.ndarray:
    """The text embeddings of the titles of `n` items drawn at random from the shards (or, with
    `regions`, of their boxes' captions where they have some): queries that look like what
    visitors type, for tuning nprobe."""
    rows = set(np.random.default_rng(3).choice(count, size=min(count, n), replace=False).tolist())
    texts, start = [], 0
    for part in parts:
        items = load_jsonl(part / "items.jsonl")
        for row, item in enumerate(items, start):
            if row in rows:
                captions = [c for c in (p.get("caption") for p in item.get("items", [])) if isinstance(c, str) and c]
                texts += captions[:1] if regions and captions else [str(item.get("title") or item["id"])]
        start += len(items)
    return backbone.encode_text(texts) if texts else np.zeros((0, backbone.embed_dim), np.float32)


def _sample_rows(shards: list[np.ndarray], rows: np.ndarray) -> np.ndarray:
    """The vectors at catalog `rows` (in row order) from vectors kept in shards, float32."""
    rows = np.sort(rows)
    starts = np.cumsum([0, *map(len, shards)])
    return np.concatenate([np.asarray(s[rows[(rows >= a) & (rows < b)] - a], dtype=np.float32)
                           for s, a, b in zip(shards, starts[:-1], starts[1:])])


def _exact_top(blocks: Iterable[np.ndarray], queries: np.ndarray, k: int) -> np.ndarray:
    """Ids (positions over the concatenated blocks) of the exact top-k inner products, one
    block in memory at a time."""
    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_rows = np.zeros((len(queries), 0), dtype=np.int64)
    start = 0
    for block in blocks:
        scores, found = faiss.knn(queries, block, min(k, len(block)), metric=faiss.METRIC_INNER_PRODUCT)
        best_scores = np.concatenate([best_scores, scores], 1)
        best_rows = np.concatenate([best_rows, found + start], 1)
        keep = np.argsort(-best_scores, axis=1, kind="stable")[:, :k]
        best_scores, best_rows = np.take_along_axis(best_scores, keep, 1), np.take_along_axis(best_rows, keep, 1)
        start += len(block)
    return best_rows


def build_index_from_shards(shards: list[np.ndarray], spec: str | None = None,
                            progress: bool = False) -> tuple[faiss.Index, str, int]:
    """`build_index` over vectors kept in shards (memory-mapped arrays): trained on a sample
    drawn from every shard, then filled one shard at a time."""
    from tqdm.auto import tqdm

    n = sum(len(s) for s in shards)
    dim = shards[0].shape[1]
    spec = spec or default_index_spec(n, dim)
    sample = _sample_rows(shards, np.random.default_rng(0).choice(n, size=min(n, 64 * _nlist(spec)), replace=False))
    index = _new_index(dim, spec)
    if progress and not index.is_trained:
        tqdm.write(f"training the {spec} index on {len(sample):,} of {n:,} vectors")
    _train(index, sample, spec, n)
    for shard in tqdm(shards, desc="filling the index", unit="shard", disable=not progress):
        _add(index, np.ascontiguousarray(shard, dtype=np.float32), spec)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        return index, spec, 0
    ivf.nprobe = DEFAULT_NPROBE
    return index, spec, DEFAULT_NPROBE


def region_index_spec(n: int, dim: int) -> str:
    """The faiss.index_factory spec of a region index over `n` region vectors: IVF (its lists
    found by an HNSW graph: adding millions stays fast) with 4-bit fast-scan product codes of
    32 bytes (SIMD-scanned, ten times faster than 8-bit codes; the catalog orders their hits by
    the stored int8 regions, so the codes only need to bring the right regions into the
    candidates), 8-bit scalar codes when dim is odd. Text queries lie away from the regions in
    the space, so they need more lists probed than regions do; the build tunes it."""
    lists = _ivf_lists(n, REGION_LISTS)
    if n < 256 * 39:  # too few to train codes well (only in tests: large catalogs have more)
        return f"IVF{lists},Flat"
    if dim % 2:
        return f"IVF{lists}_HNSW32,SQ8"
    return f"IVF{lists}_HNSW32,PQ{64 if dim % 64 == 0 else dim // 2}x4fs"


def build_region_index(parts: list[Path], r_max: int, text_queries: np.ndarray | None = None,
                       progress: bool = False) -> tuple[faiss.Index, dict]:
    """A FAISS index over every valid region of the shards `parts`, id = row * r_max + region:
    what drill-down takes its candidates from in a catalog too large to hold its regions in
    memory. Trained on a sample drawn from every shard, filled and nprobe-tuned shard by shard.
    `text_queries` tune its nprobe beside sampled regions. Returns it and its manifest entry."""
    from tqdm.auto import tqdm

    def shard_regions(part: Path) -> tuple[np.ndarray, np.ndarray]:
        """(n * r_max, D) float32 region vectors of one shard (zeros where none) and their mask."""
        mask = _pad_regions(np.load(part / "mask.npy"), r_max)
        vectors = _pad_regions(dequantize(np.load(part / "regions.npy"), np.load(part / "scale.npy")).numpy(), r_max)
        vectors *= mask[..., None]
        return np.ascontiguousarray(vectors.reshape(-1, vectors.shape[-1])), mask.reshape(-1)

    valid = [int(np.load(p / "mask.npy", mmap_mode="r").sum()) for p in parts]
    total = sum(valid)
    dim = np.load(parts[0] / "regions.npy", mmap_mode="r").shape[-1]
    spec = region_index_spec(total, dim)
    index = _new_index(dim, spec)
    rng = np.random.default_rng(2)
    wanted = min(total, 64 * _nlist(spec))
    sample = []
    for part, count in zip(parts, valid):
        vectors, mask = shard_regions(part)
        rows = np.flatnonzero(mask)
        sample.append(vectors[rng.choice(rows, size=min(len(rows), -(-wanted * count // total)), replace=False)])
    sample = np.concatenate(sample)
    if progress:
        tqdm.write(f"training the {spec} region index on {len(sample):,} of {total:,} region vectors")
    _train(index, sample, spec, total)
    start = 0
    for part in tqdm(parts, desc="filling the region index", unit="shard", disable=not progress):
        vectors, mask = shard_regions(part)
        ids = np.arange(start, start + len(mask), dtype=np.int64)
        index.add_with_ids(vectors[mask], ids[mask])
        start += len(mask)
    queries = sample[rng.choice(len(sample), size=min(256, len(sample)), replace=False)]
    groups = [queries] if text_queries is None or not len(text_queries) else [queries, text_queries]
    # drill-down takes NPROBE_CANDIDATES items' worth of region hits, then orders them exactly
    nprobe, recall = tune_nprobe(index, groups, (shard_regions(p)[0] for p in parts),
                                 candidates=NPROBE_CANDIDATES * r_max, max_nprobe=REGION_MAX_NPROBE)
    return index, {"index": spec, "vectors": total, "per_item": r_max, "nprobe": nprobe,
                   "nprobe_recall": round(recall, 4)}


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
    manifest = None  # an hsl-demo catalog's (a manifest.json file that reads as one)
    if "manifest.json" in names:
        try:
            manifest = _read_manifest(out / "manifest.json")
        except HslDemoError:
            manifest = None
    kept = manifest.get("kept_images") if manifest else None  # the images the catalog says it keeps
    kept = kept.get("count") if isinstance(kept, dict) else None
    owned = catalog_files(out, manifest) if manifest else set()
    # a folder or link named like a catalog file is not one: replacing it would delete what it holds
    foreign = sorted({p.name for p in entries
                      if not (p.name == PACKED_IMAGES_DIR and _kept_images_only(p, kept))
                      and (p.name not in owned or p.is_symlink() or not p.is_file())})
    if "manifest.json" not in names or foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise HslDemoError(f"--out {out} exists and is not a catalog written by hsl-demo "
                           f"({'it holds ' + shown if foreign else 'no manifest.json'}); "
                           "choose another folder (hsl-demo only replaces its own catalogs)")
    if manifest is None or "format_version" not in manifest:
        raise HslDemoError(f"--out {out} exists and its manifest.json is not an hsl-demo catalog manifest; "
                           "choose another folder")


SHARD_SIZE = 4096  # images encoded and written together; what an interrupted run keeps
PROFILE_STAGES = ("decode", "preprocess", "forward", "regions", "write", "index")


@dataclass
class StageTimes:
    """Seconds spent per indexing stage (`--profile`), over `images` images, and the run's
    wall-clock seconds (`wall`). Decode and preprocess run in threads beside the forward pass,
    so the stages' seconds may add up to more than the wall clock."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PROFILE_STAGES, 0.0))
    images: int = 0
    wall: float = 0.0
    shards: list[tuple[float, int]] = field(default_factory=list)  # (seconds, images) of each shard encoded
    workers: int = 1  # shards encoded at once (the Ray engine's actors)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _last: float = field(default_factory=time.perf_counter, repr=False)

    def begin(self) -> None:
        """The run starts now (the first shard's seconds count from here)."""
        self._last = time.perf_counter()

    def shard_done(self, images: int, seconds: float | None = None) -> None:
        """A shard of `images` is encoded and written; it took `seconds` (default: since the
        last one, or since `begin`)."""
        now = time.perf_counter()
        self.shards.append((now - self._last if seconds is None else seconds, images))
        self._last = now

    def steady_rate(self) -> float | None:
        """Images/s over the shards after the first (what a long run approaches: without
        start-up, the first batches or Ray's workers starting), or None with fewer than 2."""
        if len(self.shards) < 2:
            return None
        return self.workers * sum(n for _, n in self.shards[1:]) / max(sum(s for s, _ in self.shards[1:]), 1e-9)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            with self._lock:  # the decode threads add to it too
                self.seconds[stage] += time.perf_counter() - start

    def report(self) -> str:
        wall = self.wall or sum(self.seconds.values()) or 1e-9
        parts = ", ".join(f"{stage} {sec:.1f} s" for stage, sec in self.seconds.items())
        rate = self.images / wall if self.images else 0.0
        steady = self.steady_rate()
        steady_note = f", {steady:.0f} img/s after the first shard" if steady else ""
        return (f"{self.images} images in {wall:.1f} s ({rate:.0f} img/s{steady_note}); seconds per stage (decode "
                f"and preprocess in {DECODE_THREADS} threads, beside the forward pass): {parts}")


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
        _new_index(backbone.embed_dim, index_spec)  # a bad spec is refused now, not after hours of encoding
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
                from .indexing_ray import encode_with_ray

                encode_with_ray(shards, plans, source, out, backbone.model_id, batch_size, progress, times,
                                ray_address, workers)
            else:
                shards.encode(plans, source, out, backbone, batch_size, progress, times)
            if not shards.count():
                raise HslDemoError(f"{images_dir}: none of the {source.count} images could be read "
                                   f"({shards.top_reasons()})")
        except HslDemoError:  # bad input met while encoding: nothing to resume (an interruption keeps the shards)
            shards.remove()
            raise
        try:
            summary = write_catalog(shards, out, backbone, heads, index_spec, progress, times, source.missing,
                                    replaceable=lambda final: check_output_folder(final, images_dir))
        except HslDemoError as e:  # the shards are sound: a run with the cause fixed resumes from them
            raise HslDemoError(f"{e} (the encoded shards are kept in {shards.root}: run again to resume)") from None
        shards.remove()
    times.wall += time.perf_counter() - started
    return {**summary, "cleaned": cleaned, "resumed_shards": resumed}


class ShardFolder:
    """The shards of one indexing run (`.OUT.shards/`): `plan.json` says which input, model
    and shard size they are of; `shard-NNNNN/` holds one shard's items and features (and a
    packed input's images), each written under a temporary name and renamed when complete."""

    def __init__(self, root: Path, plan: dict):
        self.root, self.plan = root, plan

    @classmethod
    def for_run(cls, out: Path, source: ImageSource, count: int, backbone: Backbone, shard_size: int) -> ShardFolder:
        """The run's shard folder for `count` shards of `source`: the one an interrupted run of
        the same plan left (kept), or a new one (an older plan's shards are removed; a folder
        this tool did not write is an error)."""
        plan = {"input": source.kind, "images": source.count, "shards": count, "digest": source.digest(),
                "model": backbone.probe(), "shard_size": shard_size}
        root = out.with_name(f".{out.name}.shards")
        for trash in root.parent.glob(f"{glob.escape(root.name)}.trash-*"):  # a removal that was stopped
            if trash.is_dir() and not trash.is_symlink():
                shutil.rmtree(trash, ignore_errors=True)
        if root.is_symlink() or (root.exists() and not root.is_dir()):
            raise HslDemoError(f"{root} exists and is not a folder hsl-demo wrote (a link or a file): move it away")
        if root.is_dir() and not any(root.iterdir()):  # killed between making it and writing its plan
            root.rmdir()
        if root.exists():
            try:
                kept = json.loads((root / "plan.json").read_text())
            except (OSError, ValueError):
                raise HslDemoError(f"{root} exists and is not an hsl-demo shard folder (no plan.json): move it "
                                   "away (hsl-demo only removes what it wrote)") from None
            if kept == plan:
                for leftover in root.glob(".tmp-*"):
                    shutil.rmtree(leftover, ignore_errors=True)
                return cls(root, plan)
            shutil.rmtree(root)  # an earlier run's shards, of other images or another model
        root.mkdir()
        write_json(root / "plan.json", plan)
        return cls(root, plan)

    def shard(self, n: int) -> Path:
        return self.root / f"shard-{n:05d}"

    def done(self) -> list[Path]:
        """The finished shards' folders, in order."""
        return [self.shard(n) for n in range(self.plan["shards"]) if self.shard(n).is_dir()]

    def todo(self) -> list[int]:
        """The numbers of the shards still to encode."""
        return [n for n in range(self.plan["shards"]) if not self.shard(n).is_dir()]

    def staging(self, n: int) -> Path:
        """A new folder for the images shard `n` keeps (a packed input's), moved into the shard
        when it is written (a run of the same plan removes one left by a killed run)."""
        return Path(tempfile.mkdtemp(prefix=f".tmp-images-{n:05d}-", dir=self.root))

    def encode(self, plans: list[dict], source: ImageSource, out: Path, backbone: Backbone, batch_size: int,
               progress: bool, times: StageTimes) -> None:
        """Encode every shard not on disk yet, in this process."""
        from tqdm.auto import tqdm

        todo = self.todo()
        bar = tqdm(total=source.count, initial=source.count - sum(plans[n]["count"] for n in todo),
                   desc="encoding images", unit="img", disable=not progress, smoothing=0.1)
        seen_ids = {item["id"] for p in self.done() for item in load_jsonl(p / "items.jsonl")}
        for n in todo:
            self.encode_shard(n, plans[n], source, out, backbone, batch_size, times, bar, seen_ids)
            times.shard_done(plans[n]["count"])
        bar.close()

    def encode_shard(self, n: int, plan: dict, source: ImageSource, out: Path, backbone: Backbone, batch_size: int,
                     times: StageTimes, bar, seen_ids: set[str]) -> None:
        """Shard `n` (its `plan`) read, encoded and written: what either engine does per shard."""
        encoded = _encode_images(source, plan, out, backbone, batch_size, times, bar, seen_ids,
                                 keep=self.staging(n) if source.packed else None,
                                 keep_as=f"{PACKED_IMAGES_DIR}/{n:05d}")
        with times("write"):
            self.write(n, encoded)

    def write(self, n: int, encoded: EncodedImages) -> None:
        """Shard `n` on disk, complete or not at all (written aside, then renamed); a shard done
        already (a Ray task retried after its first attempt wrote it) is left as it is."""
        if self.shard(n).is_dir():
            if encoded.kept is not None:
                shutil.rmtree(encoded.kept, ignore_errors=True)
            return
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{self.shard(n).name}-", dir=self.root))
        try:
            for name, array in encoded.arrays.items():
                np.save(tmp / f"{name}.npy", array)
            write_jsonl(tmp / "items.jsonl", encoded.items)
            write_json(tmp / "skipped.json", encoded.skipped)
            if encoded.kept is not None:
                os.replace(encoded.kept, tmp / PACKED_IMAGES_DIR)
            os.replace(tmp, self.shard(n))
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not self.shard(n).is_dir():  # not another attempt's finished shard: a real failure
                raise

    def count(self) -> int:
        """Items in the finished shards."""
        return sum(len(np.load(p / "embeds.npy", mmap_mode="r")) for p in self.done())

    def top_reasons(self, most: int = 3) -> str:
        """The commonest reasons images were skipped, with their counts."""
        from collections import Counter

        reasons = Counter(s["reason"] for p in self.done() for s in read_json_list(p / "skipped.json", "skipped"))
        return "; ".join(f"{count}x {reason}" for reason, count in reasons.most_common(most)) or "no reason recorded"

    def remove(self) -> None:
        """Removed in one rename first: a run stopped while deleting leaves no shard folder
        without its plan (which the next run would refuse to touch)."""
        trash = self.root.with_name(f"{self.root.name}.trash-{os.getpid()}")
        try:
            os.replace(self.root, trash)
        except OSError:
            trash = self.root
        shutil.rmtree(trash, ignore_errors=True)


@dataclass
class EncodedImages:
    """One shard: its items (metadata records), their features, the images skipped and the
    folder of the images it keeps (a packed input's, moved into the shard when it is written)."""

    items: list[dict]
    arrays: dict[str, np.ndarray]  # embeds (n, D) float32; regions (n, R, D) int8; scale (n, R); mask (n, R)
    skipped: list[dict]
    kept: Path | None = None


DECODE_THREADS = 2  # threads that decode and preprocess the next batch while the backbone encodes this one


def _encode_images(source: ImageSource, shard: dict, out: Path, backbone: Backbone, batch_size: int,
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


def write_catalog(shards: ShardFolder, out: Path, backbone: Backbone, heads: dict[str, Any] | None = None,
                  index_spec: str | None = None, progress: bool = True, times: StageTimes | None = None,
                  missing: list[str] | None = None, replaceable: Callable[[Path], None] | None = None) -> dict:
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
        index, index_type, nprobe = build_index_from_shards(embeds, index_spec, progress)
        nprobe_recall = None
        if nprobe:
            nprobe, nprobe_recall = tune_nprobe_on_shards(index, embeds, _title_queries(parts, backbone, count))
        region_index, region_entry = None, None
        if count > REGION_INDEX_ITEMS:
            region_index, region_entry = build_region_index(
                parts, r_max, _title_queries(parts, backbone, count, regions=True), progress)
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
            full = {name: _pad_regions(shard[name], r_max) for name in ("regions.npy", "region_scale.npy",
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


_KEPT_IMAGE = re.compile(r"\d{5,}\.(jpg|png|webp|gif|bmp|tif)")


def _kept_images_only(folder: Path, count: int | None) -> bool:
    """Whether `folder` is what `_link_kept_images` wrote and nothing else: `count` plain files
    named SHARD/ROW.ext (the count the catalog's manifest gives), so replacing the catalog
    deletes no file of someone else's."""
    if folder.is_symlink() or not folder.is_dir() or not isinstance(count, int):
        return False
    found = 0
    for shard in folder.iterdir():
        if shard.is_symlink() or not shard.is_dir() or not re.fullmatch(r"\d{5,}", shard.name):
            return False
        with os.scandir(shard) as entries:
            for entry in entries:
                if not (entry.is_file(follow_symlinks=False) and _KEPT_IMAGE.fullmatch(entry.name)):
                    return False
                found += 1
    return found == count


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


def _pad_regions(array: np.ndarray, r_max: int) -> np.ndarray:
    """A shard's (n, R, ...) region array padded with zeros to r_max regions."""
    padded = np.zeros((len(array), r_max, *array.shape[2:]), dtype=array.dtype)
    padded[:, :array.shape[1]] = array
    return padded
