"""The shards of an indexing run (`.OUT.shards/`): what is resumable, and how each is written
and removed; the stage timings; and the output folder's safety (a catalog folder is replaced
only when it holds what `hsl-demo index` wrote)."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..backbone import Backbone
from ..catalog import _read_manifest, catalog_files
from ..errors import HslDemoError
from ..fileio import read_json_list, write_json, write_jsonl
from ..reader import PACKED_IMAGES_DIR, ImageSource

SHARD_SIZE = 4096  # images encoded and written together; what an interrupted run keeps


PROFILE_STAGES = ("decode", "preprocess", "forward", "regions", "write", "index")


DECODE_THREADS = 2  # threads that decode and preprocess the next batch while the backbone encodes this one


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


@dataclass
class EncodedImages:
    """One shard: its items (metadata records), their features, the images skipped and the
    folder of the images it keeps (a packed input's, moved into the shard when it is written)."""

    items: list[dict]
    arrays: dict[str, np.ndarray]  # embeds (n, D) float32; regions (n, R, D) int8; scale (n, R); mask (n, R)
    skipped: list[dict]
    kept: Path | None = None


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


def pad_regions(array: np.ndarray, r_max: int) -> np.ndarray:
    """A shard's (n, R, ...) region array padded with zeros to r_max regions."""
    padded = np.zeros((len(array), r_max, *array.shape[2:]), dtype=array.dtype)
    padded[:, :array.shape[1]] = array
    return padded
