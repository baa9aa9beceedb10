"""A catalog's item records, read one at a time: what lets a catalog of millions open in a second.

`items.jsonl` holds one JSON record per item (row order). Beside it, `hsl-demo index` writes
- item_offsets.npy: (N + 1,) int64, the byte where each record's line starts (and the end);
- item_ids.npy: (N, 2) uint64, [hash of the id, row], sorted by hash: id -> row by binary search.
Both are memory-mapped, as is items.jsonl: opening a catalog parses no record, and a search
parses only the records of the results it shows (a few microseconds each).

Catalogs written before these files existed are read whole and indexed in memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mmap
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from .errors import HslDemoError
from .fileio import load_jsonl, load_mapped

log = logging.getLogger(__name__)
ITEMS_FILE, OFFSETS_FILE, IDS_FILE = "items.jsonl", "item_offsets.npy", "item_ids.npy"


def id_hash(item_id: str) -> int:
    """A stable 64-bit hash of an item id (Python's `hash` changes from process to process)."""
    # surrogatepass: an id from a command line or JSON may hold a lone surrogate; it hashes, and matches nothing
    return int.from_bytes(hashlib.blake2b(item_id.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def _id_map(ids: Iterable[str], n: int) -> np.ndarray:
    """(n, 2) uint64 [hash, row] sorted by hash."""
    table = np.empty((n, 2), dtype=np.uint64)
    table[:, 0] = np.fromiter((id_hash(i) for i in ids), dtype=np.uint64, count=n)
    table[:, 1] = np.arange(n, dtype=np.uint64)
    return table[np.argsort(table[:, 0], kind="stable")]


def _first_duplicate(table: np.ndarray, ids: list[str]) -> tuple[int, int] | None:
    """Two rows with the same id (found among equal hashes in the sorted `table`), or None."""
    for i in np.flatnonzero(table[1:, 0] == table[:-1, 0]).tolist():
        first, second = sorted((int(table[i, 1]), int(table[i + 1, 1])))
        if ids[first] == ids[second]:
            return first, second
    return None


class ItemWriter:
    """Writes items.jsonl and its two index files into a folder, record by record."""

    def __init__(self, folder: Path, count: int):
        self.folder, self.count = folder, count
        self._file = open(folder / ITEMS_FILE, "wb")
        self._offsets = np.zeros(count + 1, dtype=np.int64)
        self._ids: list[str] = []

    def add(self, record: dict) -> None:
        row = len(self._ids)
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        self._file.write(line)
        self._offsets[row + 1] = self._offsets[row] + len(line)
        self._ids.append(record["id"])

    def close(self, check: bool = True) -> None:
        """Close items.jsonl and write the index files (without `check`: only close it)."""
        self._file.close()
        if not check:
            return
        if len(self._ids) != self.count:
            raise RuntimeError(f"ItemWriter: {len(self._ids)} records written, {self.count} announced")
        table = _id_map(self._ids, self.count)
        duplicate = _first_duplicate(table, self._ids)
        if duplicate:
            first, second = duplicate
            raise HslDemoError(f"duplicate item id {self._ids[first]!r} (items {first + 1} and {second + 1}): "
                               "ids must be unique")
        np.save(self.folder / OFFSETS_FILE, self._offsets)
        np.save(self.folder / IDS_FILE, table)


def write_items(folder: Path, records: list[dict]) -> None:
    """items.jsonl and its index files for `records` (row order)."""
    writer = ItemWriter(folder, len(records))
    for record in records:
        writer.add(record)
    writer.close()


class ItemStore:
    """The item records of a catalog, a read-only sequence of dicts (row -> record) with
    id -> row lookup. Safe to share between threads."""

    def __init__(self, data: bytes | mmap.mmap, offsets: np.ndarray, ids: np.ndarray, where: Path):
        self._data, self._offsets, self._ids, self._where = data, offsets, ids, where

    @classmethod
    def open(cls, root: Path) -> ItemStore:
        """The records of catalog folder `root`, memory-mapped. A catalog written before the
        index files, or whose items.jsonl was edited since (its lines no longer where the
        offsets say), is read whole and checked instead (logged: slow for millions of items)."""
        path = root / ITEMS_FILE
        try:
            if not (root / OFFSETS_FILE).is_file():
                return cls.from_records(load_jsonl(path), path)
            offsets = load_mapped(root / OFFSETS_FILE)
            ids = load_mapped(root / IDS_FILE)
            with open(path, "rb") as f:
                size = f.seek(0, 2)
                data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
            if size and hasattr(mmap, "MADV_RANDOM"):
                data.madvise(mmap.MADV_RANDOM)  # a search reads a few scattered records: no read-ahead
        except (OSError, ValueError) as e:
            raise HslDemoError(f"{root}: item files unreadable ({e}); rebuild the catalog") from None
        if not _indexes(data, offsets, ids):
            log.warning("%s: %s does not match %s (edited since it was written?): reading it whole; re-index the "
                        "catalog to open it faster", root, OFFSETS_FILE, ITEMS_FILE)
            return cls.from_records(load_jsonl(path), path)
        return cls(data, np.asarray(offsets), np.asarray(ids), path)  # plain arrays: np.memmap indexing is slow

    @classmethod
    def from_records(cls, records: list[dict], where: Path | str = "items") -> ItemStore:
        """An in-memory store of `records` (checked: a non-empty string id, unique, and image)."""
        lines = [(json.dumps(r, ensure_ascii=False) + "\n").encode("utf-8") for r in records]
        offsets = np.zeros(len(lines) + 1, dtype=np.int64)
        np.cumsum([len(line) for line in lines], out=offsets[1:])
        where = Path(where)
        for line, record in enumerate(records, 1):
            _check_record(record, where, line)
        ids = [r["id"] for r in records]
        table = _id_map(ids, len(ids))
        duplicate = _first_duplicate(table, ids)
        if duplicate:
            raise HslDemoError(f"{where}: items {duplicate[0] + 1} and {duplicate[1] + 1} have the same id: duplicate "
                               f"id {ids[duplicate[0]]!r}; rebuild the catalog")
        return cls(b"".join(lines), offsets, table, where)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, row: int | slice) -> dict | list[dict]:
        if isinstance(row, slice):
            return [self[r] for r in range(*row.indices(len(self)))]
        row = int(row)
        if not -len(self) <= row < len(self):
            raise IndexError(f"item row {row} out of range ({len(self)} items)")
        row %= len(self)
        start, end = int(self._offsets[row]), int(self._offsets[row + 1])
        try:
            record = json.loads(self._data[start:end])
        except (ValueError, RecursionError):
            record = None
        _check_record(record, self._where, row + 1)
        return record

    def __iter__(self) -> Iterator[dict]:
        return (self[row] for row in range(len(self)))

    def row_of(self, item_id: str) -> int | None:
        """The row of `item_id`, or None."""
        if not isinstance(item_id, str):
            return None
        key = np.uint64(id_hash(item_id))
        hashes = self._ids[:, 0]
        lo, hi = int(np.searchsorted(hashes, key, "left")), int(np.searchsorted(hashes, key, "right"))
        for row in self._ids[lo:hi, 1].tolist():  # more than one only if two ids share a hash
            if self[row]["id"] == item_id:
                return row
        return None


def _indexes(data: bytes | mmap.mmap, offsets: np.ndarray, ids: np.ndarray) -> bool:
    """Whether `offsets` and `ids` index `data`: lines where the offsets say, hashes in order,
    rows a permutation (a few milliseconds for a million items)."""
    if offsets.ndim != 1 or offsets.dtype != np.int64 or len(offsets) < 1:
        return False
    n = len(offsets) - 1
    if not (ids.shape == (n, 2) and ids.dtype == np.uint64 and int(offsets[0]) == 0
            and int(offsets[-1]) == len(data) and np.all(np.diff(offsets) > 0)):
        return False  # (increasing from 0 to the file's size: every offset lies inside it)
    if not (np.all(ids[1:, 0] >= ids[:-1, 0]) and np.array_equal(np.sort(ids[:, 1]), np.arange(n, dtype=np.uint64))):
        return False
    # line ends checked on a sample: reading every one would page the whole file in
    ends = np.asarray(offsets[1:][np.linspace(0, n - 1, min(n, 1024)).astype(np.int64)]) - 1 if n else []
    return bool(n == 0 or np.all(np.frombuffer(data, dtype=np.uint8)[ends] == ord("\n")))


def _check_record(record: object, where: Path, line: int) -> None:
    if not isinstance(record, dict):
        raise HslDemoError(f"{where}: item {line} is not a JSON object; rebuild the catalog")
    for key in ("id", "image"):
        if not isinstance(record.get(key), str) or not record[key]:
            raise HslDemoError(f"{where}: item {line} has no \"{key}\" (a non-empty string); rebuild the catalog")
