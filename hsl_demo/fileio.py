"""Writing files so that an interrupted run never leaves half-written output behind."""

from __future__ import annotations

import fcntl
import json
import mmap
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .errors import HslDemoError


@contextmanager
def atomic_dir(final: str | Path, replaceable: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """Yield a temporary folder next to `final`; on success it replaces `final` in one rename.

    On any error (or Ctrl-C) the temporary folder is removed and `final` is left untouched.
    `replaceable(final)`, called right before an existing `final` is replaced, may raise to keep
    it (a file that appeared in it while the content was being made).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        _normal_modes(tmp)
        if final.exists() and replaceable is not None:
            replaceable(final)
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def output_lock(final: str | Path) -> Iterator[list[str]]:
    """Hold the lock on writing `final` (a `.NAME.lock` file next to it) for the whole block.

    A second writer of the same output gets a one-line "in use" HslDemoError at once instead of
    racing. Under the lock, the leftovers of a killed run (`.NAME.tmp-*`, `.NAME.old-*`, made
    by `atomic_dir`) are cleaned: a previous output moved aside but never replaced is put back,
    the rest removed. Yields one note per leftover cleaned.
    """
    final = Path(os.path.abspath(final))
    if not final.name:
        raise HslDemoError(f"{final}: not a folder that can be written (choose a folder below it)")
    lock_path = final.with_name(f".{final.name}.lock")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise HslDemoError(f"{final}: cannot write there ({e.strerror or e})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # a lock file unlinked by a finishing writer between our open and flock is stale
            if os.fstat(fd).st_ino != os.stat(lock_path).st_ino:
                raise BlockingIOError
        except (BlockingIOError, FileNotFoundError):
            raise HslDemoError(f"{final} is in use: another hsl-demo run is writing it (lock {lock_path.name}); "
                               "wait for it to finish") from None
        try:
            yield _clean_leftovers(final)
        finally:
            lock_path.unlink(missing_ok=True)  # still holding the lock: no one can be mid-way in between
    finally:
        os.close(fd)


def _clean_leftovers(final: Path) -> list[str]:
    notes = []
    leftovers = sorted(p for pattern in (f".{final.name}.tmp-*", f".{final.name}.old-*")
                       for p in final.parent.glob(pattern) if p.is_dir() and not p.is_symlink())
    for path in leftovers:
        if ".old-" in path.name and not final.exists():
            # killed between moving the old output aside and moving the new one in: restore it
            os.replace(path, final)
            notes.append(f"restored {final.name} from an interrupted run ({path.name})")
        else:
            shutil.rmtree(path)
            notes.append(f"removed {path.name}, left behind by an interrupted run")
    return notes


def _normal_modes(folder: Path) -> None:
    """mkdtemp makes 0700 folders (and some writers 0600 files): give them the usual modes."""
    mask = _umask()
    os.chmod(folder, 0o777 & ~mask)
    for path in folder.rglob("*"):
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


@contextmanager
def atomic_file(final: str | Path, mode: str = "w") -> Iterator:
    """Open a temporary file next to `final`; it is renamed over `final` only on success."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.tmp-", dir=final.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give it a normal file's mode
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl(path: str | Path, records: Iterable[dict]) -> None:
    with atomic_file(path) as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def write_json(path: str | Path, obj: object) -> None:
    with atomic_file(path) as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def load_jsonl(path: str | Path) -> list[dict]:
    """Records of a JSON-lines file; a malformed line is a one-line error naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise HslDemoError(f"no such file: {path}")
    records = []
    line_no = 0
    try:
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise HslDemoError(f"{path}:{line_no}: not valid JSON ({e.msg})") from None
                if not isinstance(record, dict):
                    raise HslDemoError(f"{path}:{line_no}: expected a JSON object per line")
                records.append(record)
    except UnicodeDecodeError:
        raise HslDemoError(f"{path}:{line_no + 1}: not UTF-8 text") from None
    except OSError as e:
        raise HslDemoError(f"{path}: unreadable ({e.strerror or e})") from None
    return records


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_json(path: str | Path, what: str, kind: type = dict):
    """A JSON file that must hold a `kind` (a list or an object; `what` it holds goes into the
    messages); any problem is a one-line HslDemoError."""
    path = Path(path)
    if not path.is_file():
        raise HslDemoError(f"{path}: no such file ({what})")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise HslDemoError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    except UnicodeDecodeError:
        raise HslDemoError(f"{path}: not UTF-8 text") from None
    except OSError as e:
        raise HslDemoError(f"{path}: unreadable ({e.strerror or e})") from None
    if not isinstance(data, kind):
        expected = "list" if kind is list else "object"
        raise HslDemoError(f"{path}: expected a JSON {expected} ({what}), found a {type(data).__name__}")
    return data


def read_json_list(path: str | Path, what: str) -> list:
    """A JSON file that must hold a list: `read_json` with kind list."""
    return read_json(path, what, list)


class NpyRowWriter:
    """A .npy file of known shape written row block by row block, in order, with plain writes.

    Unlike filling an np.memmap, the written rows do not stay in this process's resident
    memory (dirty mapped pages count there until unmapped): what lets a catalog of millions be
    written in a few GB. Rows narrower than the file (fewer regions) are zero-padded."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype | type):
        self.path, self.shape, self.dtype = path, shape, np.dtype(dtype)
        self._file = open(path, "wb")
        np.lib.format.write_array_header_1_0(self._file, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                          "fortran_order": False, "shape": shape})
        self.rows = 0

    def write(self, block: np.ndarray) -> None:
        block = np.asarray(block, dtype=self.dtype)
        if block.shape[1:] != self.shape[1:]:  # pad trailing axes up to the file's
            padded = np.zeros((len(block), *self.shape[1:]), dtype=self.dtype)
            padded[tuple(slice(0, n) for n in block.shape)] = block
            block = padded
        if self.rows + len(block) > self.shape[0]:
            raise ValueError(f"{self.path.name}: more than {self.shape[0]} rows written")
        self._file.write(np.ascontiguousarray(block).tobytes())
        self.rows += len(block)

    def close(self, check: bool = True) -> None:
        """Close the file; with `check`, an error unless every announced row was written."""
        self._file.close()
        if check and self.rows != self.shape[0]:
            raise ValueError(f"{self.path.name}: {self.rows} rows written, {self.shape[0]} announced")


def load_mapped(path: Path) -> np.ndarray:
    """A .npy file memory-mapped read-only, for reads of scattered rows: the kernel's
    read-ahead is turned off (it would page in, and count as resident, some 128 KB around
    every row a search reads)."""
    try:
        array = np.load(path, allow_pickle=False, mmap_mode="r")
    except EOFError:  # an empty or cut-short file
        raise ValueError(f"{path.name} is empty or cut short") from None
    if array.ndim == 0:
        raise ValueError(f"{path.name} holds a single value, not an array")
    mapping = getattr(array, "_mmap", None)  # None for an empty file
    if mapping is not None and hasattr(mmap, "MADV_RANDOM"):
        mapping.madvise(mmap.MADV_RANDOM)
    return array


def prefetch(paths: list[Path], share: float = 0.5) -> threading.Thread | None:
    """Read `paths` once, in the background, into the kernel's page cache, in order, as many
    as fit in `share` of the free memory: a search then reads its rows from memory, not from
    disk (a cold 4 KB read costs ~0.1 ms, and a re-rank reads hundreds of rows). Page cache,
    not this process's memory: the kernel takes it back when it needs it. Returns the reading
    thread (a daemon), or None when nothing fits."""
    try:
        budget = share * os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        sizes = [p.stat().st_size for p in paths]
    except (OSError, ValueError):
        return None
    fits = [p for p, used in zip(paths, np.cumsum(sizes)) if used <= budget]
    if not fits:
        return None
    paths = fits

    def read_all() -> None:
        for path in paths:
            try:
                with open(path, "rb", buffering=0) as f:
                    while f.read(16 << 20):
                        pass
            except OSError:
                pass

    thread = threading.Thread(target=read_all, name="hsl-demo-prefetch", daemon=True)
    thread.start()
    return thread
