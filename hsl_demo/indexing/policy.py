"""The index policy: which FAISS index a catalog gets (a `faiss.index_factory` spec chosen by
size, or the user's), trained on a sample of every shard and filled shard by shard, its
`nprobe` tuned to the exact top 10; and the region index of a large catalog."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from ..backbone import Backbone
from ..defaults import REGION_INDEX_ITEMS
from ..errors import HslDemoError
from ..features import dequantize
from ..fileio import load_jsonl
from .shards import pad_regions

FLAT_MAX_ITEMS = 50_000  # exact search up to this many items, IVF above


IVF_FLAT_MAX_BYTES = 1 << 30  # IVF keeps the full vectors up to this size, product-quantised codes above


DEFAULT_NPROBE = 16  # an IVF index's nprobe until tune_nprobe picks one


NPROBE_CANDIDATES = 200  # the candidates a search takes from FAISS (search.DEFAULT_CANDIDATES)


NPROBE_RECALL = 0.98  # the share of the exact top 10 those candidates must hold


REGION_LISTS = 4096  # IVF lists of a region index at most (tens of millions of region vectors)


REGION_MAX_NPROBE = 256  # a region index's nprobe stops here (its codes may cap the recall below the target)


@dataclass(frozen=True)
class IndexLimits:
    """Where the index policy changes with a catalog's size: parameters, not module constants
    (a test passes small ones)."""

    flat_max_items: int = FLAT_MAX_ITEMS  # exact search up to this many items, IVF above
    region_index_items: int = REGION_INDEX_ITEMS  # above this many items, a region index (regions.faiss)


DEFAULT_LIMITS = IndexLimits()


def default_index_spec(n: int, dim: int, flat_max_items: int = FLAT_MAX_ITEMS) -> str:
    """The faiss.index_factory spec for `n` vectors of `dim` floats: exact up to
    FLAT_MAX_ITEMS; then IVF with about 4 sqrt(n) lists (at least 39 training points a list, as
    faiss wants), keeping the vectors while they fit IVF_FLAT_MAX_BYTES, else OPQ-rotated
    product-quantised codes of dim/4 bytes (the catalog keeps the vectors on disk, and re-scores
    the candidates with them)."""
    if n <= flat_max_items:
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


def new_index(dim: int, spec: str) -> faiss.Index:
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


def title_queries(parts: list[Path], backbone: Backbone, count: int, regions: bool = False,
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


def build_index_from_shards(shards: list[np.ndarray], spec: str | None = None, progress: bool = False,
                            flat_max_items: int = FLAT_MAX_ITEMS) -> tuple[faiss.Index, str, int]:
    """`build_index` over vectors kept in shards (memory-mapped arrays): trained on a sample
    drawn from every shard, then filled one shard at a time."""
    from tqdm.auto import tqdm

    n = sum(len(s) for s in shards)
    dim = shards[0].shape[1]
    spec = spec or default_index_spec(n, dim, flat_max_items)
    sample = _sample_rows(shards, np.random.default_rng(0).choice(n, size=min(n, 64 * _nlist(spec)), replace=False))
    index = new_index(dim, spec)
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
        mask = pad_regions(np.load(part / "mask.npy"), r_max)
        vectors = pad_regions(dequantize(np.load(part / "regions.npy"), np.load(part / "scale.npy")).numpy(), r_max)
        vectors *= mask[..., None]
        return np.ascontiguousarray(vectors.reshape(-1, vectors.shape[-1])), mask.reshape(-1)

    valid = [int(np.load(p / "mask.npy", mmap_mode="r").sum()) for p in parts]
    total = sum(valid)
    dim = np.load(parts[0] / "regions.npy", mmap_mode="r").shape[-1]
    spec = region_index_spec(total, dim)
    index = new_index(dim, spec)
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
