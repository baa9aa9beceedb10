"""The back: a catalog folder, opened and checked, ready to search.

A catalog folder (written by `hsl-demo index`, hsl_demo/indexing/, atomically) holds
- manifest.json: format version, the model that encoded it (id, dim, a probe fingerprint),
  item count, index type (a faiss.index_factory spec), region layout, skipped files;
- items.jsonl: one record per item (id, image path relative to the catalog, title, metadata),
  with item_offsets.npy and item_ids.npy to read one record or find an id without parsing the
  rest (hsl_demo/items.py);
- images/SHARD/ROW.ext: the images of a Parquet or WebDataset input (a folder's are referred to
  where they are; hsl_demo/reader.py);
- embeds.npy: (N, D) float32 L2-normalised global embeddings, memory-mapped;
- index.faiss: an inner-product FAISS index over them (row = item), any faiss.index_factory
  type: exact, IVF, or IVF-PQ, which keeps only codes (candidates are re-scored from embeds.npy);
- regions.npy / region_scale.npy / region_mask.npy: compact per-item region features for
  re-ranking (hsl_demo/features.py), int8 with one float16 scale per region;
- regions.faiss (catalogs above defaults.REGION_INDEX_ITEMS): an IVF-PQ index of those regions,
  id = row * regions per item + region, where drill-down finds its candidates;
- HEAD_NAME.npy: what a mode stores at index time with its head (a head listed in the manifest's
  "heads" owns the files `HEAD_*.npy`), e.g. the HSL head's query-independent image side
  (hsl_demo/modes/describe/), one row per item, memory-mapped. The catalog reads them back
  without knowing the mode: `Catalog.stores[HEAD]`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import faiss
import numpy as np

from .defaults import BUILTIN_CATALOGS, CATALOGS_DIR
from .errors import HslDemoError
from .fileio import load_mapped, prefetch
from .items import IDS_FILE, ITEMS_FILE, OFFSETS_FILE, ItemStore

if TYPE_CHECKING:  # torch and open_clip are not needed to open a catalog (the app serves its page first)
    import torch

    from .backbone import Backbone

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
PROBE_MIN_COSINE = 0.99
BOX_SOURCE = "box-crops"  # box regions are crop embeddings (catalogs before them said "boxes": pooled tokens)
EMBEDS_FILE = "embeds.npy"
REGION_INDEX_FILE = "regions.faiss"
# IVF lists stay on disk, mapped: opening reads none, a search pages in the lists it probes
INDEX_READ_FLAGS = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY


# What `hsl-demo index` writes into a catalog folder, with its heads' store files (see
# `catalog_files`): it replaces a folder only if it holds nothing else, so it never deletes a
# file it did not write.
CATALOG_FILES = frozenset({"manifest.json", ITEMS_FILE, OFFSETS_FILE, IDS_FILE, EMBEDS_FILE, "index.faiss",
                           REGION_INDEX_FILE, "regions.npy", "region_scale.npy", "region_mask.npy"})
MANIFEST_SECTIONS = {"model": dict, "regions": dict, "heads": dict, "skipped": list, "missing_images": list}


def _read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise HslDemoError(f"{path}: not valid JSON ({e.msg})") from None
    except UnicodeDecodeError:
        raise HslDemoError(f"{path}: not UTF-8 text") from None
    except RecursionError:
        raise HslDemoError(f"{path}: nested too deeply to be a catalog manifest") from None
    if not isinstance(manifest, dict):
        raise HslDemoError(f"{path}: expected a JSON object, found a {type(manifest).__name__}; rebuild the catalog")
    heads = manifest.get("heads", {})
    if isinstance(heads, dict) and not all(isinstance(v, dict) for v in heads.values()):
        raise HslDemoError(f"{path}: each entry of \"heads\" must be a JSON object; rebuild the catalog")
    for key, kind in MANIFEST_SECTIONS.items():
        if key in manifest and not isinstance(manifest[key], kind):
            raise HslDemoError(f"{path}: \"{key}\" must be a JSON {'object' if kind is dict else 'list'}, "
                               f"found a {type(manifest[key]).__name__}; rebuild the catalog")
    return manifest


def _check_region_arrays(root: Path, regions: np.ndarray, scale: np.ndarray, mask: np.ndarray) -> None:
    if regions.ndim != 3 or regions.dtype != np.int8:
        raise HslDemoError(f"{root}: regions.npy must be (items, regions, dim) int8, found {regions.shape} "
                           f"{regions.dtype}; rebuild it")
    check_array(root, "region_scale.npy", scale, regions.shape[:2], "f")
    check_array(root, "region_mask.npy", mask, regions.shape[:2], "b")


def check_array(root: Path, name: str, array: np.ndarray, shape: tuple, kind: str) -> None:
    """`array` (catalog file `name`) has `shape` (None: any size on that axis) and dtype kind."""
    fits = array.ndim == len(shape) and all(want is None or got == want for got, want in zip(array.shape, shape))
    if not fits or array.dtype.kind != kind or not array.dtype.isnative:  # (a big-endian file: written elsewhere)
        wanted = "x".join("?" if n is None else str(n) for n in shape)
        raise HslDemoError(f"{root}: {name} is {array.shape} {array.dtype}, expected {wanted} of kind "
                           f"{kind!r}; rebuild the catalog")


def store_files(root: Path, manifest: dict) -> dict[str, dict[str, Path]]:
    """The store files of each head the manifest lists: {head: {name: ROOT/HEAD_NAME.npy}}."""
    heads = manifest.get("heads", {})
    return {head: {f.stem.removeprefix(f"{head}_"): f for f in sorted(root.glob(f"{head}_*.npy"))}
            for head in (heads if isinstance(heads, dict) else {})}


def catalog_files(root: Path, manifest: dict) -> set[str]:
    """The names of the files `hsl-demo index` wrote into catalog folder `root`."""
    return set(CATALOG_FILES) | {f.name for files in store_files(root, manifest).values() for f in files.values()}


def _open_stores(root: Path, manifest: dict, n: int) -> dict[str, dict[str, np.ndarray]]:
    """Every head's stored arrays, memory-mapped (a large catalog's re-rank features stay on
    disk until a query reads them), each checked to have a row per item."""
    stores = {}
    for head, files in store_files(root, manifest).items():
        if not files:
            continue
        try:
            stores[head] = {name: load_mapped(path) for name, path in files.items()}
        except (OSError, ValueError) as e:
            raise HslDemoError(f"{root}: the {head} head's stored features are unreadable ({e}); rebuild it") from None
        for name, array in stores[head].items():
            check_array(root, files[name].name, array, (n, *array.shape[1:]), array.dtype.kind)
    return stores


def same_probe(a, b) -> bool:
    """Whether two model fingerprints (`Backbone.probe`) are of the same weights, allowing for
    float16 storage and another device."""
    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    return a.shape == b.shape and float(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-8) >= PROBE_MIN_COSINE


@dataclass
class Catalog:
    root: Path
    manifest: dict
    items: ItemStore  # row -> record (a dict), and id -> row
    index: faiss.Index
    embeds: np.ndarray  # (N, D) float32 global embeddings, memory-mapped
    regions: np.ndarray  # (N, R, D) int8
    region_scale: np.ndarray  # (N, R) float16
    region_mask: np.ndarray  # (N, R) bool
    stores: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # head -> name -> (N, ...)
    region_index_file: Path | None = None  # regions.faiss, in large catalogs (read on first use)
    _prefetching: threading.Thread | bool | None = field(default=None, repr=False)  # False: nothing fit

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, item_id: object) -> bool:
        return isinstance(item_id, str) and self.items.row_of(item_id) is not None

    @property
    def name(self) -> str:
        return self.root.name

    @classmethod
    def open(cls, spec: str | Path) -> Catalog:
        """Open a built-in catalog by name ("products", "looks") or a catalog folder."""
        if not isinstance(spec, (str, Path)):
            raise HslDemoError(f"catalog must be a name or a folder, not {type(spec).__name__} ({str(spec)[:40]!r})")
        root = CATALOGS_DIR / spec if str(spec) in BUILTIN_CATALOGS else Path(spec).expanduser()
        if not root.is_dir():
            raise HslDemoError(
                f"catalog {str(spec)!r}: no such catalog (built-in: {', '.join(BUILTIN_CATALOGS)}; "
                "or a folder written by `hsl-demo index`)"
            )
        manifest_path = root / "manifest.json"
        if not manifest_path.is_file():
            raise HslDemoError(f"{root}: no manifest.json, so not a catalog folder (build one with `hsl-demo index`)")
        manifest = _read_manifest(manifest_path)
        if manifest.get("format_version") != FORMAT_VERSION:
            raise HslDemoError(
                f"{root}: catalog format {manifest.get('format_version')!r}, this version reads "
                f"{FORMAT_VERSION}; rebuild it with `hsl-demo index`"
            )
        try:
            items = ItemStore.open(root)
            index = faiss.read_index(str(root / "index.faiss"), INDEX_READ_FLAGS)
            # memory-mapped: a search reads the rows of its candidates, not the whole catalog
            regions = load_mapped(root / "regions.npy")
            scale = load_mapped(root / "region_scale.npy")
            mask = load_mapped(root / "region_mask.npy")
            if (root / EMBEDS_FILE).is_file():
                embeds = load_mapped(root / EMBEDS_FILE)
            else:  # written before embeds.npy: its index (exact or IVF-Flat) gives the vectors back
                embeds = index.reconstruct_n(0, index.ntotal)
        except (OSError, ValueError, RuntimeError) as e:
            raise HslDemoError(f"{root}: catalog files unreadable ({e}); rebuild it") from None
        _check_region_arrays(root, regions, scale, mask)
        check_array(root, EMBEDS_FILE, embeds, (None, index.d), "f")
        if not (len(items) == index.ntotal == len(regions) == len(embeds) == manifest.get("count")):
            raise HslDemoError(f"{root}: catalog files disagree on the item count; rebuild it")
        if index.d != regions.shape[2]:
            raise HslDemoError(f"{root}: index.faiss holds {index.d}-d vectors, regions.npy {regions.shape[2]}-d; "
                               "rebuild it")
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None:
            ivf.nprobe = int(manifest.get("nprobe", 16))
        if manifest.get("regions", {}).get("source") == "boxes":
            log.warning("catalog %r stores box regions as pooled patch tokens, which the current heads were not "
                        "trained on; re-index it with `hsl-demo index` for crop embeddings", root.name)
        stores = _open_stores(root, manifest, len(items))
        region_index_file = root / REGION_INDEX_FILE if (root / REGION_INDEX_FILE).is_file() else None
        return cls(root, manifest, items, index, embeds, regions, scale, mask, stores, region_index_file)

    def head_fingerprint(self, head: str) -> str | None:
        """The fingerprint of the head whose store this catalog holds (None: it holds none)."""
        entry = self.manifest.get("heads", {}).get(head)
        return entry.get("fingerprint") if isinstance(entry, dict) else None

    @cached_property
    def region_index(self) -> faiss.Index | None:
        """The index of every region (regions.faiss, in large catalogs), read on first use:
        only drill-down needs it, and fast-scan codes are read into memory, not mapped.
        (A server's warm-up reads it; racing first calls read equal copies.)"""
        if self.region_index_file is None:
            return None
        try:
            region_index = faiss.read_index(str(self.region_index_file), INDEX_READ_FLAGS)
        except RuntimeError as e:
            raise HslDemoError(f"{self.root}: {REGION_INDEX_FILE} unreadable ({str(e).splitlines()[0][:120]}); "
                               "rebuild the catalog") from None
        region_ivf = faiss.try_extract_index_ivf(region_index)
        entry = self.manifest.get("region_index")
        per_item = self.regions.shape[1]
        fits = (isinstance(entry, dict) and isinstance(entry.get("nprobe"), int) and entry["nprobe"] > 0
                and entry.get("vectors") == region_index.ntotal == int(np.count_nonzero(self.region_mask))
                and entry.get("per_item", per_item) == per_item)
        if region_index.d != self.index.d or region_ivf is None or not fits:
            raise HslDemoError(f"{self.root}: {REGION_INDEX_FILE} is not the IVF index of this catalog's "
                               f"{self.index.d}-d regions its manifest describes; rebuild the catalog")
        region_ivf.nprobe = entry["nprobe"]
        return region_index

    def start_prefetch(self) -> None:
        """Start reading the mapped files searches read rows of into the page cache, in the
        background, in the order queries need them (once; what a server does right after
        opening its catalogs: a one-off search does not need it)."""
        if self._prefetching is None:
            stored = [path.name for files in store_files(self.root, self.manifest).values() for path in files.values()]
            names = ("index.faiss", EMBEDS_FILE, *stored, REGION_INDEX_FILE, "regions.npy",
                     "region_scale.npy", "region_mask.npy")
            self._prefetching = prefetch([self.root / n for n in names if (self.root / n).is_file()]) or False

    def wait_prefetched(self, timeout: float | None = None) -> None:
        """Wait (at most `timeout` s) until that read is done (starting it if need be): queries
        after it read memory, not disk."""
        self.start_prefetch()
        if self._prefetching:
            self._prefetching.join(timeout)

    def check_model(self, backbone: Backbone) -> None:
        """A clear error if the catalog was encoded by a different model than `backbone`."""
        meta = self.manifest.get("model", {})
        try:
            probe = np.asarray(meta.get("probe", []), dtype=np.float32)
        except (TypeError, ValueError):
            raise HslDemoError(f"{self.root}: manifest.json's model probe is not a list of numbers; rebuild "
                               "the catalog") from None
        if not (same_probe(probe, backbone.probe()) and self.index.d == backbone.embed_dim):
            if meta.get("id") == backbone.model_id and ":" not in backbone.model_id and backbone.folder is None:
                raise HslDemoError(
                    f"catalog {self.name!r} was indexed with {backbone.model_id!r} without a pretrained tag: its "
                    "weights were random, and every load draws new ones (in another process too), so no later "
                    "search can match it; "
                    f"give a tag (e.g. `--model {backbone.model_id}:TAG`) or a model folder, and re-index")
            raise HslDemoError(
                f"catalog {self.name!r} was indexed with model {meta.get('id')!r} "
                f"(dim {meta.get('embed_dim')}), not with {backbone.model_id!r} (dim {backbone.embed_dim}); "
                f"re-index it with `hsl-demo index ... --model {backbone.model_id}`"
            )

    def row(self, item_id: str) -> int:
        row = self.items.row_of(item_id)
        if row is None:
            raise HslDemoError(f"no item {item_id!r} in catalog {self.name!r}")
        return row

    def image_path(self, row: int, record: dict | None = None) -> Path:
        """The photo of item `row` (`record`: its record, when read already)."""
        record = record if record is not None else self.items[row]
        return Path(os.path.normpath(self._resolved_root / record["image"]))

    @cached_property
    def _resolved_root(self) -> Path:
        return self.root.resolve()

    def search(self, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-n (scores, rows) per query by inner product; rows are -1 where fewer exist.

        FAISS finds the rows; their scores are then the exact inner products with the stored
        embeddings (a compressed index's own are approximate), best first."""
        n = max(1, min(n, len(self)))
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        _, rows = self.index.search(queries, n)
        rows = np.where(rows < len(self), rows, -1)  # an index that names rows past the items (hand-edited)
        found = rows >= 0
        scores = np.full(rows.shape, -np.inf, dtype=np.float32)
        for q in range(len(queries)):
            scores[q, found[q]] = self.vectors(rows[q, found[q]]) @ queries[q]
        bad = found & ~np.isfinite(scores)  # a NaN embedding ranks nowhere, never first
        rows, scores = np.where(bad, -1, rows), np.where(bad, -np.inf, scores)
        order = np.argsort(-scores, axis=1, kind="stable")
        return np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)

    def region_candidates(self, queries: np.ndarray, per_query: int) -> np.ndarray:
        """Item rows whose regions best match each query (T, D), up to `per_query` items per
        query, best first, merged without repeats: drill-down's candidates in a catalog too large
        to keep its regions in memory. From the region index; in a catalog without one, from
        the global embeddings (which a query about one product of a flat-lay matches poorly)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if self.region_index is None:
            return first_items(self.search(queries, per_query)[1], per_query)
        per_item = self.regions.shape[1]
        _, ids = self.region_index.search(queries, min(self.region_index.ntotal, per_query * per_item))
        valid = (ids >= 0) & (ids < len(self) * per_item)
        rows, regions = np.where(valid, ids // per_item, 0), np.where(valid, ids % per_item, 0)
        # the index's scores are those of its compressed codes: the stored int8 regions order
        # its hits exactly (a few hundred KB read per query)
        scores = np.einsum("tkd,td->tk", self.regions[rows, regions].astype(np.float32), queries)
        scores *= self.region_scale[rows, regions].astype(np.float32)
        order = np.argsort(np.where(valid, -scores, np.inf), axis=1, kind="stable")
        return first_items(np.take_along_axis(np.where(valid, rows, -1), order, 1), per_query)

    def region_features(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, R, D) float unit region vectors and (n, R) validity mask for the given rows."""
        import torch

        from .features import dequantize

        scale = np.asarray(self.region_scale[rows], dtype=np.float32)
        valid = np.array(self.region_mask[rows]) & np.isfinite(scale)  # a NaN scale: that region is left out
        return dequantize(np.asarray(self.regions[rows]), np.where(valid, scale, 0)), torch.from_numpy(valid)

    def vectors(self, rows: np.ndarray | list[int]) -> np.ndarray:
        """(n, D) float32 global embeddings of the given rows (read from disk: only those)."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        return np.asarray(self.embeds[rows], dtype=np.float32)

    @property
    def embeddings(self) -> np.ndarray:
        """(N, D) float32 global embeddings of every item, a copy in memory (small catalogs)."""
        return np.array(self.embeds, dtype=np.float32)  # writable: torch.from_numpy warns on a read-only map


def first_items(hits: np.ndarray, per_query: int) -> np.ndarray:
    """Item rows from per-query hits (T, H), best first, -1 where none: the first `per_query`
    distinct items of each query, merged without repeats."""
    rows: dict[int, None] = {}
    for query_hits in hits:
        rows.update(dict.fromkeys(list(dict.fromkeys(query_hits[query_hits >= 0].tolist()))[:per_query]))
    return np.fromiter(rows, dtype=np.int64, count=len(rows))
