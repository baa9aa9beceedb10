"""The reader: what `hsl-demo index` encodes, planned as shards that are read one at a time.

Three inputs, told apart by what the path holds:
- a folder of image files (subfolders too), with `--metadata` JSONL records keyed by image
  path; the catalog refers to the files where they are;
- Parquet files of image bytes plus metadata columns: the image column holds bytes, or a struct
  with "bytes" as a Hugging Face `datasets` Image column does; every other column is metadata;
- WebDataset tar shards: a sample is the members that share a key (`0001.jpg`, `0001.json`
  holding its metadata, `0001.txt` its title).

A packed input (Parquet, WebDataset) has no files to show, so the catalog keeps a copy of each
image it encodes (`images/SHARD/ROW.ext`, written by the worker that encodes it). A shard
never crosses an input file, so a worker reads one file's range: Parquet row groups, a tar's
members by offset. A plan of shards is plain JSON, so Ray workers (hsl_demo/indexing/ray.py)
get the same shards as the local engine (hsl_demo/indexing/).
"""

from __future__ import annotations

import datetime
import decimal
import hashlib
import io
import json
import math
import posixpath
import tarfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from .errors import HslDemoError
from .fileio import load_jsonl
from .images import IMAGE_SUFFIXES, list_images
from .query import printable
from .results import is_box

PACKED_IMAGES_DIR = "images"  # a catalog's copies of a packed input's images
MAX_MEMBER_BYTES = 64 * 2**20  # a tar member read into memory (a photo is far smaller; a huge one is refused)
MAX_RECORD_BYTES = 2**20  # a sample's JSON metadata
# (MAX_MEMBER_BYTES bounds a Parquet image cell too.) A row group whose image column holds more
# than this is read a row at a time rather than 64 rows at a time.
PARQUET_BATCH_BYTES = 256 * 2**20
IMAGE_COLUMN = "image"
PARQUET_SUFFIX, TAR_SUFFIX = ".parquet", ".tar"
_FORMAT_SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif"}


@dataclass
class SourceImage:
    """One image to encode: `name` says where it came from (messages, skipped lists); `data` is
    its file or its bytes; `record` its metadata, with an "id" and a "title" at least; `problem`,
    when set, is why it cannot be used (it is skipped, with that reason)."""

    name: str
    data: Path | bytes
    record: dict = field(default_factory=dict)
    problem: str | None = None


class ImageSource(ABC):
    """What a run encodes. Made cheaply (a Ray worker makes one from `config()` to read its
    shards); `scan()` then lists the input (the driver's step): `count` images in
    `shards(size)` (JSON-able plans, each with its "count"), read by `read(shard)`."""

    kind = ""
    packed = False  # whether the catalog keeps copies of the images (an input without files to show)

    def __init__(self, root: Path):
        self.root = root
        self.missing: list[str] = []  # metadata records without an image

    @abstractmethod
    def scan(self) -> ImageSource:
        """List the input (and check it): what `count`, `shards` and `digest` report."""
        ...

    @property
    @abstractmethod
    def count(self) -> int:
        ...

    @abstractmethod
    def shards(self, size: int) -> list[dict]:
        ...

    @abstractmethod
    def read(self, shard: dict) -> Iterator[SourceImage]:
        ...

    @abstractmethod
    def digest(self) -> str:
        """What the images are: a run resumes only the shards of the same digest."""
        ...

    def config(self) -> dict:
        return {"kind": self.kind, "root": str(self.root)}


class FolderSource(ImageSource):
    """Image files below a folder; `metadata`: JSONL records with "image" (relative to it)."""

    kind = "images"

    def __init__(self, root: Path, metadata: Path | None = None):
        super().__init__(root)
        self.metadata = metadata
        self.paths: list[Path] = []
        self.meta: dict[str, dict] = {}

    def scan(self) -> FolderSource:
        self.paths = list_images(self.root)
        if not self.paths:
            raise HslDemoError(f"{self.root}: no images (.jpg, .jpeg, .png, .webp) found")
        self.meta = metadata_by_image(self.metadata, self.root)
        self.missing = sorted(set(self.meta) - {p.relative_to(self.root).as_posix() for p in self.paths})
        return self

    @property
    def count(self) -> int:
        return len(self.paths)

    def shards(self, size: int) -> list[dict]:
        plans = []
        for start in range(0, len(self.paths), size):
            files = [p.relative_to(self.root).as_posix() for p in self.paths[start:start + size]]
            plans.append({"count": len(files), "files": files,
                          "meta": {rel: self.meta[rel] for rel in files if rel in self.meta}})
        return plans

    def read(self, shard: dict) -> Iterator[SourceImage]:
        for rel in shard["files"]:
            record = dict(shard["meta"].get(rel, {}))
            record.setdefault("id", Path(rel).with_suffix("").as_posix())
            record.setdefault("title", Path(rel).stem.replace("_", " "))
            yield SourceImage(rel, self.root / rel, record)

    def digest(self) -> str:
        digest = hashlib.sha256()
        for path in self.paths:
            digest.update(path.relative_to(self.root).as_posix().encode() + b"\0")
        digest.update(json.dumps(self.meta, sort_keys=True, default=str).encode())
        return digest.hexdigest()[:32]


class _PackedSource(ImageSource):
    """Input files (`suffix`) each holding many images: shards are ranges of one file's rows."""

    packed = True
    suffix = ""
    unit = "row"

    def __init__(self, root: Path):
        super().__init__(root)
        self.files: list[Path] = []
        self.rows: list[int] = []

    def scan(self) -> _PackedSource:
        from tqdm.auto import tqdm

        root = self.root
        self.files = [root] if root.is_file() else sorted(p for p in _files(root) if p.suffix.lower() == self.suffix)
        if not self.files:
            raise HslDemoError(f"{root}: no {self.suffix} files found")
        self.rows = [self._rows(f) for f in tqdm(self.files, desc=f"reading the {self.kind} layout", unit="file",
                                                  disable=len(self.files) < 10)]
        if not self.count:
            raise HslDemoError(f"{root}: its {self.suffix} files hold no {self.unit}s")
        return self

    @abstractmethod
    def _rows(self, file: Path) -> int:
        """How many images the input file holds (reading its layout only)."""

    def _name(self, file: Path) -> str:
        return file.name if file == self.root else file.relative_to(self.root).as_posix()

    def _default_id(self, file: str, key: str, separator: str) -> str:
        """KEY in a single input file; FILE (its path below INPUT, without suffix) + separator +
        KEY in a folder of them, so that two files' rows or samples never share an id."""
        return key if self.root.is_file() else f"{posixpath.splitext(file)[0]}{separator}{key}"

    @property
    def count(self) -> int:
        return sum(self.rows)

    def shards(self, size: int) -> list[dict]:
        return [{"count": min(size, rows - start), "file": self._name(file), "start": start,
                 "stop": min(rows, start + size)}
                for file, rows in zip(self.files, self.rows) for start in range(0, rows, size)]

    def _file(self, shard: dict) -> Path:
        return self.root if self.root.is_file() else self.root / shard["file"]

    def digest(self) -> str:
        digest = hashlib.sha256()
        for file, rows in zip(self.files, self.rows):
            stat = file.stat()
            digest.update(f"{self._name(file)}\0{stat.st_size}\0{stat.st_mtime_ns}\0{rows}\0".encode())
        return digest.hexdigest()[:32]


class ParquetSource(_PackedSource):
    """Parquet files: a row per image, its bytes in `image_column`, metadata in the others."""

    kind = "parquet"
    suffix = PARQUET_SUFFIX

    def __init__(self, root: Path, image_column: str = IMAGE_COLUMN, max_cell_bytes: int = MAX_MEMBER_BYTES):
        super().__init__(root)
        self.image_column = image_column
        self.max_cell_bytes = max_cell_bytes  # an image cell's limit (MAX_MEMBER_BYTES, as a tar member's)
        self.parquet = _import_parquet()
        import pyarrow.types

        self.parquet_types = pyarrow.types

    def _open(self, file: Path):
        try:
            return self.parquet.ParquetFile(file)
        except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
            raise HslDemoError(f"{file}: not a readable Parquet file ({str(e).splitlines()[0][:120]})") from None

    def _rows(self, file: Path) -> int:
        parquet = self._open(file)
        schema = parquet.schema_arrow
        if self.image_column not in schema.names:
            raise HslDemoError(f"{file}: no column {self.image_column!r} of image bytes (columns: "
                               f"{', '.join(schema.names[:8])}); name it with --image-column")
        kind = schema.field(self.image_column).type
        types = self.parquet_types
        if types.is_struct(kind) and kind.get_field_index("bytes") >= 0:
            kind = kind.field("bytes").type
        if not (types.is_binary(kind) or types.is_large_binary(kind) or types.is_fixed_size_binary(kind)):
            raise HslDemoError(f"{file}: column {self.image_column!r} holds {kind}, not image bytes (binary, or a "
                               "struct with \"bytes\"); name the right one with --image-column")
        return parquet.metadata.num_rows

    def config(self) -> dict:
        return {**super().config(), "image_column": self.image_column, "max_cell_bytes": self.max_cell_bytes}

    def read(self, shard: dict) -> Iterator[SourceImage]:
        """The rows start..stop of one file, read a row group at a time (a corrupt group's rows
        are skipped and listed; the others are read)."""
        parquet = self._open(self._file(shard))
        start, stop, first = shard["start"], shard["stop"], 0
        for group in range(parquet.metadata.num_row_groups):
            size = parquet.metadata.row_group(group).num_rows
            if first < stop and first + size > start:
                yield from self._group(parquet, group, first, shard)
            first += size

    def _group(self, parquet, group: int, first: int, shard: dict) -> Iterator[SourceImage]:
        """One row group's rows, bounded in memory by its metadata, before any cell is read: a
        group whose image bytes pass `max_cell_bytes` per row is skipped unread (a page is decoded
        whole, and one page may hold all of a group's cells: reading a row at a time would not
        bound it; a good cell in such a group is lost with the rest); one whose batch of 64 rows could pass
        PARQUET_BATCH_BYTES, or whose cells are dictionary-encoded (its sizes are the dictionary's:
        equal cells decode to as many copies), is read a row at a time, each cell checked as it
        comes, by its length in Arrow before it is copied out. (A 4 KB file of zstd-compressed
        zero bytes can hold gigabytes.)"""
        limit = self.max_cell_bytes
        meta = parquet.metadata.row_group(group)
        size, dictionary = _column_bytes(meta, self.image_column)
        rows = meta.num_rows
        row = first
        if size > limit * rows:
            reason = f"{_mb(size // max(rows, 1))} per image cell in its row group's metadata (limit {_mb(limit)})"
            for left in range(max(first, shard["start"]), min(first + rows, shard["stop"])):
                yield SourceImage(f"{printable(shard['file'])}#{left}", b"", {}, reason)
            return
        # a dictionary-encoded column's sizes are the dictionary's: equal cells decode to many copies
        batch_size = 1 if dictionary or size > min(PARQUET_BATCH_BYTES, limit) else 64
        try:
            for batch in parquet.iter_batches(batch_size=batch_size, row_groups=[group]):
                for i, length in enumerate(self._cell_lengths(batch)):
                    if shard["start"] <= row < shard["stop"]:
                        yield (self._image(shard["file"], row, batch.slice(i, 1).to_pylist()[0]) if length <= limit
                               else SourceImage(f"{printable(shard['file'])}#{row}", b"", {},
                                                f"{_mb(length)} image cell (limit {_mb(limit)})"))
                    row += 1
        except (OSError, ValueError) as e:  # corrupt pages (ArrowInvalid is a ValueError)
            reason = f"unreadable Parquet data ({printable(str(e).splitlines()[0][:120])})"
            end = first + parquet.metadata.row_group(group).num_rows
            for left in range(max(row, shard["start"]), min(end, shard["stop"])):
                yield SourceImage(f"{printable(shard['file'])}#{left}", b"", {}, reason)

    def _cell_lengths(self, batch) -> list[int]:
        """Each row's image bytes, counted in Arrow (no copy of a cell yet)."""
        import pyarrow.compute

        column = batch.column(self.image_column)
        if self.parquet_types.is_struct(column.type):
            column = column.field("bytes")
        return [n or 0 for n in pyarrow.compute.binary_length(column).to_pylist()]

    def _image(self, file: str, row: int, values: dict) -> SourceImage:
        name = f"{printable(file)}#{row}"
        data = values.pop(self.image_column)
        if isinstance(data, dict):  # a Hugging Face datasets Image: {"bytes": ..., "path": ...}
            data = data.get("bytes")
        if not isinstance(data, (bytes, bytearray)) or not data:
            data, problem = b"", f"no image bytes in column {self.image_column!r}"
        else:
            data, problem = bytes(data), None
        try:
            record = json_safe(values)
        except RecursionError:
            record, problem = {}, problem or "metadata nested too deeply"
        return SourceImage(name, data, *_checked_record(record, self._default_id(file, str(row), "-"), name, problem))


class WebDatasetSource(_PackedSource):
    """WebDataset tar shards: the members sharing a key make a sample (an image, and optionally
    KEY.json metadata and KEY.txt a title). Read by offset with the standard library's tarfile:
    a shard's worker seeks to its samples instead of streaming the whole tar."""

    kind = "webdataset"
    suffix = TAR_SUFFIX
    unit = "sample"
    _read_samples: tuple[tuple, list[Sample]] | None = None  # (file, size, mtime) and its samples: the last tar read

    def _samples(self, file: Path) -> list[Sample]:
        """The tar's samples, in order. Its headers are read once per file (and again only when
        it changes): every shard of the file seeks to its own samples by their offsets, so
        reading a tar's shards costs one pass over its headers, not one per shard."""
        stat = file.stat()
        version = (str(file), stat.st_size, stat.st_mtime_ns)
        if self._read_samples is None or self._read_samples[0] != version:
            self._read_samples = (version, _tar_samples(file))
        return self._read_samples[1]

    def _rows(self, file: Path) -> int:
        return len(self._samples(file))

    def read(self, shard: dict) -> Iterator[SourceImage]:
        file = self._file(shard)
        with open(file, "rb") as f:
            for sample in self._samples(file)[shard["start"]:shard["stop"]]:
                name = f"{printable(shard['file'])}:{printable(sample.key)}"
                if sample.problem:
                    yield SourceImage(name, b"", {}, sample.problem)
                    continue
                yield self._image(f, name, self._default_id(shard["file"], sample.key, "/"), sample.members)

    def _image(self, f, name: str, default_id: str, members: dict[str, tarfile.TarInfo]) -> SourceImage:
        image = next((members[e] for e in ("jpg", "jpeg", "png", "webp") if e in members), None)
        record: dict = {}
        problem = None if image is not None else "no image member (.jpg, .jpeg, .png, .webp)"
        if image is not None and image.size > MAX_MEMBER_BYTES:
            problem = f"{image.size // 2**20} MB image member (limit {MAX_MEMBER_BYTES // 2**20} MB)"
        if "json" in members and problem is None:
            try:
                record = json_safe(json.loads(_member_bytes(f, members["json"], MAX_RECORD_BYTES)))
            except (ValueError, UnicodeDecodeError, RecursionError) as e:
                problem = f"its .json is not JSON ({printable(str(e)[:120])})"
            if not isinstance(record, dict):
                record, problem = {}, problem or "its .json is not a JSON object"
        if "txt" in members and problem is None and "title" not in record:
            try:
                record["title"] = _member_bytes(f, members["txt"], MAX_RECORD_BYTES).decode().strip()
            except (ValueError, UnicodeDecodeError):
                problem = "its .txt is not UTF-8 text"
        data = _member_bytes(f, image, MAX_MEMBER_BYTES) if problem is None else b""
        return SourceImage(name, data, *_checked_record(record, default_id, name, problem))


@dataclass
class Sample:
    """A WebDataset sample: its key, its members by extension, and why it cannot be used."""

    key: str
    members: dict[str, tarfile.TarInfo]
    problem: str | None = None


def _tar_samples(file: Path) -> list[Sample]:
    """The samples of a tar, in order. A sample's members are consecutive (WebDataset's rule):
    a key met again after another one, or a member repeated within a sample, is a second
    sample of that key, skipped and listed rather than merged into the first."""
    samples: list[Sample] = []
    seen: set[str] = set()
    try:
        with tarfile.open(file, "r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                folder, base = posixpath.split(member.name)
                if "." not in base.lstrip("."):
                    continue
                stem, extension = base.split(".", 1) if not base.startswith(".") else (base, "")
                key, extension = posixpath.join(folder, stem), extension.lower()
                current = samples[-1] if samples and samples[-1].key == key else None
                if current is None or extension in current.members:
                    duplicate = key in seen
                    samples.append(Sample(key, {}, f"a second sample with key {printable(key)!r} in this tar"
                                          if duplicate else None))
                    seen.add(key)
                    current = samples[-1]
                current.members[extension] = member
    except (tarfile.TarError, OSError) as e:
        raise HslDemoError(f"{file}: not a readable tar file ({e})") from None
    return samples


def _column_bytes(group_meta, column: str) -> tuple[int, bool]:
    """The uncompressed bytes of `column` (and of its struct fields) in one row group, and
    whether any of it is dictionary-encoded."""
    chunks = [group_meta.column(i) for i in range(group_meta.num_columns)
              if group_meta.column(i).path_in_schema.split(".")[0] == column]
    return sum(c.total_uncompressed_size for c in chunks), any(c.has_dictionary_page for c in chunks)


def _mb(size: int) -> str:
    return f"{size / 2**20:.0f} MB"


def _member_bytes(f, member: tarfile.TarInfo, limit: int) -> bytes:
    if member.size > limit:
        raise ValueError(f"{member.size} bytes (limit {limit})")
    f.seek(member.offset_data)
    return f.read(member.size)


def _checked_record(record: dict, default_id: str, name: str, problem: str | None) -> tuple[dict, str | None]:
    """A packed input's record with an id and a title, and why it cannot be used (a bad record
    is one skipped image, not a failed run of hours)."""
    if isinstance(record.get("id"), int) and not isinstance(record["id"], bool):
        record["id"] = str(record["id"])
    record.setdefault("id", default_id)
    if not isinstance(record["id"], str) or not record["id"]:
        return record, problem or "\"id\" must be a non-empty string"
    if isinstance(record.get("items"), str):  # boxes stored as a JSON string column
        try:
            record["items"] = json_safe(json.loads(record["items"]))
        except (ValueError, RecursionError):
            return record, problem or "\"items\" is not JSON"
    title = record.get("title")
    record["title"] = record["id"] if title is None or title == "" else str(title)
    try:
        check_boxes(record.get("items", []), name)
    except HslDemoError as e:
        return record, problem or str(e).split(": ", 1)[-1]
    return record, problem


def json_safe(value: object, depth: int = 0) -> object:
    """`value` as strict JSON can hold it: non-finite floats become null, dates and times ISO
    text, decimals numbers, durations seconds, bytes are dropped (a Parquet column may hold any
    of them; a catalog's items.jsonl must stay readable by any JSON parser)."""
    if depth > 64:
        raise RecursionError("nested more than 64 levels")
    if isinstance(value, dict):
        return {str(k): json_safe(v, depth + 1) for k, v in value.items() if not isinstance(v, (bytes, bytearray))}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, depth + 1) for v in value if not isinstance(v, (bytes, bytearray))]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, decimal.Decimal):
        return json_safe(float(value))
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return str(value)


def image_suffix(data: bytes) -> str:
    """The file suffix of image bytes, by their format (".jpg" when unknown: Pillow reads by
    content anyway)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return _FORMAT_SUFFIX.get(image.format or "", ".jpg")
    except (OSError, ValueError, SyntaxError):
        return ".jpg"


def _import_parquet():
    try:
        import pyarrow.parquet
    except ImportError:
        raise HslDemoError("Parquet input needs pyarrow: pip install 'hsl-demo[parquet]' (or pyarrow)") from None
    return pyarrow.parquet


def open_source(path: str | Path, metadata: str | Path | None = None, image_column: str | None = None) -> ImageSource:
    """The input at `path`: a folder of images, Parquet (a file, or a folder of them) or
    WebDataset (a .tar, or a folder of them), told apart by what it holds."""
    path = Path(path)
    if not path.exists():
        raise HslDemoError(f"{path}: no such file or folder")
    if path.is_file():
        kind = {PARQUET_SUFFIX: "parquet", TAR_SUFFIX: "webdataset"}.get(path.suffix.lower())
        if kind is None:
            raise HslDemoError(f"{path}: give a folder of images, a .parquet file or a WebDataset .tar shard "
                               "(or a folder of them)")
    else:
        suffixes = {p.suffix.lower() for p in _files(path)}  # one walk of the folder
        found = {kind for kind, kind_suffixes in (("parquet", (PARQUET_SUFFIX,)), ("webdataset", (TAR_SUFFIX,)),
                                                  ("images", IMAGE_SUFFIXES))
                 if suffixes & set(kind_suffixes)}
        if len(found) > 1:
            raise HslDemoError(f"{path} holds {' and '.join(sorted(found))} input together: give a folder of one "
                               "kind")
        kind = found.pop() if found else "images"
    if kind != "images" and metadata:
        raise HslDemoError("--metadata goes with a folder of images: Parquet and WebDataset inputs carry their "
                           "metadata")
    if kind != "parquet" and image_column:
        raise HslDemoError("--image-column goes with Parquet input")
    if kind == "parquet":
        source: ImageSource = ParquetSource(path, image_column or IMAGE_COLUMN)
    elif kind == "webdataset":
        source = WebDatasetSource(path)
    else:
        source = FolderSource(path, Path(metadata) if metadata else None)
    return source.scan()


def open_source_config(config: dict) -> ImageSource:
    """The source that `ImageSource.config()` describes, unscanned (a Ray worker reads the
    shards it is given)."""
    root = Path(config["root"])
    if config["kind"] == "parquet":
        return ParquetSource(root, config["image_column"], config.get("max_cell_bytes", MAX_MEMBER_BYTES))
    return {"webdataset": WebDatasetSource, "images": FolderSource}[config["kind"]](root)


def _files(folder: Path) -> Iterator[Path]:
    return (p for p in folder.rglob("*") if p.is_file())


def metadata_by_image(metadata: Path | None, images_dir: Path) -> dict[str, dict]:
    """`--metadata` records by image path (relative to `images_dir`), checked: ids unique, boxes
    well-formed."""
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
        check_boxes(r.get("items", []), f"{metadata}: record {line}")
        try:
            by_image[posixpath.normpath(Path(image).as_posix())] = json_safe(r)
        except RecursionError:
            raise HslDemoError(f"{metadata}: record {line} is nested too deeply") from None
    ids = [r["id"] for r in by_image.values() if "id" in r]
    if len(set(ids)) < len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise HslDemoError(f"{metadata}: duplicate item id {duplicate!r} (ids must be unique)")
    return by_image


def check_boxes(parts: object, where: str) -> None:
    """`items`: a list of {"box": [x0, y0, x1, y1], "caption": ...} in image pixels, x1 > x0, y1 > y0."""
    if not isinstance(parts, list) or not all(isinstance(p, dict) for p in parts):
        raise HslDemoError(f"{where}: \"items\" must be a list of objects with a \"box\"")
    for part in parts:
        if part.get("box") is None:  # a part with a caption alone (Arrow gives its missing box as null)
            part.pop("box", None)
            continue
        box = part["box"]
        if not isinstance(box, list) or not is_box(box):
            raise HslDemoError(f"{where}: box {json.dumps(box)[:60]} is not [x0, y0, x1, y1] with x1 > x0 and y1 > y0")
