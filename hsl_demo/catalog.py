"""Catalogs: a folder of product images, encoded once, ready to search.

A catalog folder (written by `hsl-demo index`, atomically) holds
- manifest.json: format version, the model that encoded it (id, dim, a probe fingerprint),
  item count, index type, region layout, and the files that were skipped;
- items.jsonl: one record per item (id, image path relative to the catalog, title, metadata);
- index.faiss: inner-product index over the L2-normalised global embeddings (row = item);
- regions.npy / region_scale.npy / region_mask.npy: compact per-item region features for
  re-ranking, int8 with one float16 scale per region (patch tokens pooled on a grid, or, where
  the metadata gives boxes, the backbone embedding of each box's square crop);
- hsl_*.npy (when built with an HSL head): that head's query-independent image side, per level
  one vector per region and one pooled vector, int8 with float16 scales.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import faiss
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .backbone import Backbone
from .defaults import BUILTIN_CATALOGS, CATALOGS_DIR
from .errors import HslDemoError
from .fileio import atomic_dir, load_jsonl, output_lock, write_json, write_jsonl
from .images import list_images, open_image
from .models import head_fingerprint
from .models.hmrn import HMRNHead, HMRNImages
from .models.hsl import HSLHead, ImageSide

FORMAT_VERSION = 1
IVF_THRESHOLD = 100_000  # exact search below this many items, IVF above
REGION_GRID = 4  # patch tokens are average-pooled to at most 4x4 regions per image
BOX_SOURCE = "box-crops"  # box regions are crop embeddings (catalogs before them said "boxes": pooled tokens)
PROBE_MIN_COSINE = 0.99


# ---- region features ---------------------------------------------------------------------
def grid_regions(tokens: torch.Tensor, grid: tuple[int, int], cells: int = REGION_GRID) -> torch.Tensor:
    """(B, P, D) patch tokens -> (B, R, D) tokens average-pooled on a coarser grid."""
    b, p, d = tokens.shape
    rows, cols = grid
    if rows * cols != p:  # towers without a patch grid: one region, the image
        return tokens.mean(1, keepdim=True)
    fmap = tokens.transpose(1, 2).reshape(b, d, rows, cols)
    pooled = F.adaptive_avg_pool2d(fmap, (min(cells, rows), min(cells, cols)))
    return pooled.flatten(2).transpose(1, 2)


def box_crops(image: Image.Image, boxes: list[list[float]], margin: float = 0.1) -> list[Image.Image]:
    """One square crop per box (in image pixels), grown by `margin` on each side and clamped to
    the image: what the backbone encodes as that region's feature.

    Square, so the backbone's centre crop keeps the whole product; the backbone was trained on
    single-product photos, so a crop's embedding is a region feature aligned with text (where
    pooled patch tokens of a small ViT are not).
    """
    w, h = image.size
    source_w, source_h = image.info.get("source_size", image.size)  # open_image may have reduced it
    sx, sy = w / source_w, h / source_h
    crops = []
    for x0, y0, x1, y1 in ((b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy) for b in boxes):
        side = max(x1 - x0, y1 - y0, 1) * (1 + 2 * margin)
        side = min(side, w, h)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        left = min(max(cx - side / 2, 0), w - side)
        top = min(max(cy - side / 2, 0), h - side)
        crops.append(image.crop((round(left), round(top), round(left + side), round(top + side))))
    return crops


def region_features_for(backbone: Backbone, images: list[Image.Image],
                        boxes: list[list[list[float]]]) -> tuple:
    """The backbone's features of a batch of images, and per image its (R, D) region features:
    the embeddings of its box crops, or, for an image without boxes, its patch tokens pooled on
    a grid."""
    feats = backbone.image_features(images)
    grid_pooled = grid_regions(feats.tokens.float().cpu(), feats.grid)
    crops = [c for image, b in zip(images, boxes) for c in box_crops(image, b)]
    crop_embeds = torch.from_numpy(backbone.encode_images(crops)) if crops else None
    out, used = [], 0
    for i, b in enumerate(boxes):
        if b:
            out.append(crop_embeds[used:used + len(b)])
            used += len(b)
        else:
            out.append(grid_pooled[i])
    return feats, out


def quantize(regions: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Unit-normalise each vector (last axis) and store it as int8 with a float16 scale."""
    unit = F.normalize(regions.float(), dim=-1)
    scale = unit.abs().amax(-1).clamp_min(1e-8) / 127.0
    q = torch.round(unit / scale[..., None]).clamp(-127, 127).to(torch.int8)
    return q.numpy(), scale.half().numpy()


def dequantize(q: np.ndarray, scale: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(q).float() * torch.from_numpy(scale).float()[..., None]


# ---- precomputed HSL image side --------------------------------------------------------------
HSL_FILES = ("hsl_objects", "hsl_object_scale", "hsl_pooled", "hsl_pooled_scale", "hsl_mask")


@dataclass
class HslStore:
    """The query-independent half of the HSL score for N items, int8 with float16 scales."""

    hsl_objects: np.ndarray  # (N, L, R, d) int8
    hsl_object_scale: np.ndarray  # (N, L, R) float16
    hsl_pooled: np.ndarray  # (N, L, d) int8
    hsl_pooled_scale: np.ndarray  # (N, L) float16
    hsl_mask: np.ndarray  # (N, R) bool

    def take(self, rows: np.ndarray) -> ImageSide:
        """The float image side of the given rows (what a re-rank of candidates reads)."""
        rows = np.asarray(rows)
        return ImageSide(
            objects=dequantize(np.asarray(self.hsl_objects[rows]), np.asarray(self.hsl_object_scale[rows])),
            pooled=dequantize(np.asarray(self.hsl_pooled[rows]), np.asarray(self.hsl_pooled_scale[rows])),
            mask=torch.from_numpy(np.asarray(self.hsl_mask[rows])),
        )

    def bytes_per_item(self) -> int:
        return int(sum(getattr(self, k)[0].nbytes for k in HSL_FILES))

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in HSL_FILES}


@torch.no_grad()
def encode_hsl_store(head: HSLHead, embeds: torch.Tensor, regions: torch.Tensor, mask: torch.Tensor,
                     batch: int = 1024, progress: bool = False) -> HslStore:
    """Run the image side of `head` over every item and quantise the result."""
    from tqdm.auto import tqdm

    parts: dict[str, list[np.ndarray]] = {k: [] for k in HSL_FILES}
    for i in tqdm(range(0, len(embeds), batch), desc="HSL image side", disable=not progress):
        side = head.encode_image_side(embeds[i:i + batch].float(), regions[i:i + batch].float(), mask[i:i + batch])
        for name, value in zip(HSL_FILES, (*quantize(side.objects), *quantize(side.pooled), side.mask.numpy())):
            parts[name].append(value)
    return HslStore(**{k: np.concatenate(v) for k, v in parts.items()})


# ---- HMRN image side, in memory ----------------------------------------------------------------
@dataclass
class HmrnStore:
    """The HMRN head's image side of every item, and a FAISS index over its regions.

    Drill-down queries describe *regions*, so their candidates come from the regions that
    match them in the head's own space, not from the whole image's global embedding (which a
    query about one product of a flat-lay matches poorly).
    """

    side: HMRNImages  # float16 regions and pooled vectors of every item
    index: faiss.Index  # inner product over every valid region
    region_rows: np.ndarray  # the item row of each indexed region

    def candidates(self, queries: torch.Tensor, per_query: int) -> np.ndarray:
        """Item rows whose regions best match each query (T, dim): up to `per_query` items per
        query, best first, merged without repeats."""
        n_regions = min(self.index.ntotal, per_query * self.side.mask.shape[1])
        _, found = self.index.search(np.ascontiguousarray(queries.float().numpy()), n_regions)
        rows: dict[int, None] = {}
        for hits in found:
            items = list(dict.fromkeys(self.region_rows[hits[hits >= 0]].tolist()))[:per_query]
            rows.update(dict.fromkeys(items))
        return np.fromiter(rows, dtype=np.int64)


@torch.no_grad()
def encode_hmrn_store(head: HMRNHead, embeds: torch.Tensor, regions: torch.Tensor, mask: torch.Tensor) -> HmrnStore:
    side = head.encode_images(embeds, regions, mask)
    valid = side.mask.numpy()
    index = faiss.IndexFlatIP(side.regions.shape[-1])
    index.add(np.ascontiguousarray(side.regions.numpy()[valid]))
    region_rows = np.nonzero(valid)[0]
    return HmrnStore(HMRNImages(side.regions.half(), side.pooled.half(), side.mask), index, region_rows)


# ---- the catalog ---------------------------------------------------------------------------
# What `hsl-demo index` writes into a catalog folder: it replaces a folder only if it holds
# nothing else, so it never deletes a file it did not write.
CATALOG_FILES = frozenset({"manifest.json", "items.jsonl", "index.faiss", "regions.npy", "region_scale.npy",
                           "region_mask.npy", *(f"{name}.npy" for name in HSL_FILES)})
MANIFEST_SECTIONS = {"model": dict, "regions": dict, "heads": dict, "skipped": list, "missing_images": list}


def _read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise HslDemoError(f"{path}: not valid JSON ({e.msg})") from None
    except UnicodeDecodeError:
        raise HslDemoError(f"{path}: not UTF-8 text") from None
    if not isinstance(manifest, dict):
        raise HslDemoError(f"{path}: expected a JSON object, found a {type(manifest).__name__}; rebuild the catalog")
    for key, kind in MANIFEST_SECTIONS.items():
        if key in manifest and not isinstance(manifest[key], kind):
            raise HslDemoError(f"{path}: \"{key}\" must be a JSON {'object' if kind is dict else 'list'}, "
                               f"found a {type(manifest[key]).__name__}; rebuild the catalog")
    return manifest


def _check_items(items: list[dict], path: Path) -> None:
    """Every item has a string id (unique) and a string image path."""
    seen: set[str] = set()
    for line, item in enumerate(items, 1):
        for key in ("id", "image"):
            if not isinstance(item.get(key), str) or not item[key]:
                raise HslDemoError(f"{path}: item {line} has no \"{key}\" (a non-empty string); rebuild the catalog")
        if item["id"] in seen:
            raise HslDemoError(f"{path}: item {line}: duplicate id {item['id']!r}; rebuild the catalog")
        seen.add(item["id"])


def _check_region_arrays(root: Path, regions: np.ndarray, scale: np.ndarray, mask: np.ndarray) -> None:
    if regions.ndim != 3 or regions.dtype != np.int8:
        raise HslDemoError(f"{root}: regions.npy must be (items, regions, dim) int8, found {regions.shape} "
                           f"{regions.dtype}; rebuild it")
    for name, array in (("region_scale.npy", scale), ("region_mask.npy", mask)):
        if array.shape != regions.shape[:2]:
            raise HslDemoError(f"{root}: {name} has shape {array.shape}, regions.npy needs {regions.shape[:2]}; "
                               "rebuild it")


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
    names = {p.name for p in out.iterdir()}
    if not names:
        return
    foreign = sorted(names - CATALOG_FILES)
    if "manifest.json" not in names or foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise HslDemoError(f"--out {out} exists and is not a catalog written by hsl-demo "
                           f"({'it holds ' + shown if foreign else 'no manifest.json'}); "
                           "choose another folder (hsl-demo only replaces its own catalogs)")
    try:
        is_catalog = "format_version" in _read_manifest(out / "manifest.json")
    except HslDemoError:
        is_catalog = False
    if not is_catalog:
        raise HslDemoError(f"--out {out} exists and its manifest.json is not an hsl-demo catalog manifest; "
                           "choose another folder")

@dataclass
class Catalog:
    root: Path
    manifest: dict
    items: list[dict]
    index: faiss.Index
    regions: np.ndarray  # (N, R, D) int8
    region_scale: np.ndarray  # (N, R) float16
    region_mask: np.ndarray  # (N, R) bool
    hsl: dict[str, np.ndarray] | None = None  # precomputed HSL image side (see HSL_FILES)
    _row_of: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._row_of = {item["id"]: row for row, item in enumerate(self.items)}

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._row_of

    @property
    def name(self) -> str:
        return self.root.name

    @classmethod
    def open(cls, spec: str | Path) -> Catalog:
        """Open a built-in catalog by name ("products", "looks") or a catalog folder."""
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
            items = load_jsonl(root / "items.jsonl")
            index = faiss.read_index(str(root / "index.faiss"))
            regions = np.load(root / "regions.npy", allow_pickle=False)
            scale = np.load(root / "region_scale.npy", allow_pickle=False)
            mask = np.load(root / "region_mask.npy", allow_pickle=False)
        except (OSError, ValueError, RuntimeError) as e:
            raise HslDemoError(f"{root}: catalog files unreadable ({e})") from None
        if not (len(items) == index.ntotal == len(regions) == manifest.get("count")):
            raise HslDemoError(f"{root}: catalog files disagree on the item count; rebuild it")
        _check_items(items, root / "items.jsonl")
        _check_region_arrays(root, regions, scale, mask)
        if isinstance(index, faiss.IndexIVF):
            index.nprobe = int(manifest.get("nprobe", 16))
        if manifest.get("regions", {}).get("source") == "boxes":
            warnings.warn(f"catalog {root.name!r} stores box regions as pooled patch tokens, which the current "
                          "heads were not trained on; re-index it with `hsl-demo index` for crop embeddings",
                          stacklevel=2)
        hsl = None
        if "hsl" in manifest.get("heads", {}):
            try:
                # mmap: a large catalog's re-rank features stay on disk until a query reads them
                hsl = {k: np.load(root / f"{k}.npy", allow_pickle=False, mmap_mode="r") for k in HSL_FILES}
            except (OSError, ValueError) as e:
                raise HslDemoError(f"{root}: HSL features unreadable ({e}); rebuild it") from None
            if any(len(a) != len(items) for a in hsl.values()):
                raise HslDemoError(f"{root}: HSL features disagree with the item count; rebuild it")
        return cls(root, manifest, items, index, regions, scale, mask, hsl)

    def check_model(self, backbone: Backbone) -> None:
        """A clear error if the catalog was encoded by a different model than `backbone`."""
        meta = self.manifest.get("model", {})
        probe = np.asarray(meta.get("probe", []), dtype=np.float32)
        mine = np.asarray(backbone.probe(), dtype=np.float32)
        same = probe.shape == mine.shape and float(probe @ mine) / (
            np.linalg.norm(probe) * np.linalg.norm(mine) + 1e-8) >= PROBE_MIN_COSINE
        if not same:
            raise HslDemoError(
                f"catalog {self.name!r} was indexed with model {meta.get('id')!r} "
                f"(dim {meta.get('embed_dim')}), not with {backbone.model_id!r} (dim {backbone.embed_dim}); "
                f"re-index it with `hsl-demo index ... --model {backbone.model_id}`"
            )

    def row(self, item_id: str) -> int:
        try:
            return self._row_of[item_id]
        except KeyError:
            raise HslDemoError(f"no item {item_id!r} in catalog {self.name!r}") from None

    def image_path(self, row: int) -> Path:
        return Path(os.path.normpath(self._resolved_root / self.items[row]["image"]))

    @cached_property
    def _resolved_root(self) -> Path:
        return self.root.resolve()

    def search(self, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-n (scores, rows) per query by inner product; rows are -1 where fewer exist."""
        n = max(1, min(n, len(self)))
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), n)

    def region_features(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, R, D) float unit region vectors and (n, R) validity mask for the given rows."""
        return (
            dequantize(self.regions[rows], self.region_scale[rows]),
            torch.from_numpy(self.region_mask[rows]),
        )

    def hsl_image_side(self, head: HSLHead) -> HslStore:
        """The HSL image side of every item for `head`: precomputed at index time when the
        catalog was built with this very head, otherwise computed now (with a warning)."""
        stored = self.manifest.get("heads", {}).get("hsl", {})
        if self.hsl is not None and stored.get("fingerprint") == head_fingerprint(head):
            return HslStore(**self.hsl)
        warnings.warn(
            f"catalog {self.name!r} has no HSL features precomputed for this head; computing them "
            f"for {len(self)} items now (re-index with `hsl-demo index` to skip this)", stacklevel=2,
        )
        return encode_hsl_store(head, torch.from_numpy(self.embeddings), *self.region_features(np.arange(len(self))),
                                progress=len(self) > 10_000)

    def hmrn_store(self, head: HMRNHead) -> HmrnStore:
        """The HMRN image side of every item for `head`, with its region index (computed here,
        in memory: about 1.5 KB an item with 5 regions)."""
        regions, mask = self.region_features(np.arange(len(self)))
        return encode_hmrn_store(head, torch.from_numpy(self.embeddings), regions, mask)

    @cached_property
    def embeddings(self) -> np.ndarray:
        """(N, D) global embeddings, read back from the index."""
        if isinstance(self.index, faiss.IndexIVF):
            self.index.make_direct_map()
        return self.index.reconstruct_n(0, self.index.ntotal)


# ---- building ------------------------------------------------------------------------------
def _metadata_by_image(metadata: Path | None, images_dir: Path) -> dict[str, dict]:
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
        _check_boxes(r.get("items", []), f"{metadata}: record {line}")
        by_image[Path(image).as_posix()] = r
    ids = [r["id"] for r in by_image.values() if "id" in r]
    if len(set(ids)) < len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise HslDemoError(f"{metadata}: duplicate item id {duplicate!r} (ids must be unique)")
    return by_image


def _check_boxes(parts: object, where: str) -> None:
    """`items`: a list of {"box": [x0, y0, x1, y1], "caption": ...} in image pixels, x1 > x0, y1 > y0."""
    if not isinstance(parts, list) or not all(isinstance(p, dict) for p in parts):
        raise HslDemoError(f"{where}: \"items\" must be a list of objects with a \"box\"")
    for part in parts:
        if "box" not in part:
            continue
        box = part["box"]
        ok = (isinstance(box, list) and len(box) == 4
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in box))
        if not ok or box[2] <= box[0] or box[3] <= box[1]:
            raise HslDemoError(f"{where}: box {json.dumps(box)[:60]} is not [x0, y0, x1, y1] with x1 > x0 and y1 > y0")


def build_catalog(
    images_dir: str | Path,
    out: str | Path,
    backbone: Backbone,
    metadata: str | Path | None = None,
    batch_size: int = 64,
    progress: bool = True,
    hsl: HSLHead | None = None,
) -> dict:
    """Encode every image below `images_dir` and write a catalog folder at `out`.

    With an HSL head, its query-independent image side is computed here too, so a search
    only encodes the query. Unreadable files are skipped and listed (in the manifest and the
    returned summary); the folder appears only when everything is written.
    """
    images_dir, out = Path(images_dir), Path(out)
    paths = list_images(images_dir)
    meta = _metadata_by_image(Path(metadata) if metadata else None, images_dir)
    if not paths:
        raise HslDemoError(f"{images_dir}: no images (.jpg, .jpeg, .png, .webp) found")
    out = out.resolve() if out.is_symlink() else out  # a link to a catalog: replace the catalog, keep the link
    check_output_folder(out, images_dir)
    with output_lock(out) as cleaned:
        check_output_folder(out, images_dir)  # again under the lock: a finished run may have written it
        summary = _encode_and_write(paths, images_dir, out, backbone, meta, batch_size, progress, hsl)
    return {**summary, "cleaned": cleaned}


def _encode_and_write(paths: list[Path], images_dir: Path, out: Path, backbone: Backbone, meta: dict[str, dict],
                      batch_size: int, progress: bool, hsl: HSLHead | None) -> dict:
    from tqdm.auto import tqdm


    items, embeds, regions, scales, skipped = [], [], [], [], []
    seen_ids: set[str] = set()
    bar = tqdm(total=len(paths), desc="encoding images", unit="img", disable=not progress)
    for start in range(0, len(paths), batch_size):
        batch, batch_records = [], []
        for path in paths[start:start + batch_size]:
            rel = path.relative_to(images_dir).as_posix()
            try:
                image = open_image(path)
            except HslDemoError as e:
                skipped.append({"file": rel, "reason": str(e).split(": ", 1)[-1]})
                continue
            record = dict(meta.get(rel, {}))
            record.setdefault("id", Path(rel).with_suffix("").as_posix())
            record.setdefault("title", path.stem.replace("_", " "))
            if record["id"] in seen_ids:
                raise HslDemoError(f"duplicate item id {record['id']!r} ({rel})")
            seen_ids.add(record["id"])
            record["image"] = os.path.relpath(path.resolve(), out.resolve())
            batch.append(image)
            batch_records.append(record)
        if batch:
            boxes = [[it["box"] for it in record.get("items", []) if "box" in it] for record in batch_records]
            feats, per_image = region_features_for(backbone, batch, boxes)
            for r in per_image:
                q, s = quantize(r)
                regions.append(q)
                scales.append(s)
            embeds.append(feats.embeds.cpu().numpy().astype(np.float32))
            items.extend(batch_records)
        bar.update(len(paths[start:start + batch_size]))
    bar.close()
    if not items:
        raise HslDemoError(f"{images_dir}: none of the {len(paths)} files could be read as an image")
    missing = sorted(set(meta) - {p.relative_to(images_dir).as_posix() for p in paths})

    vectors = np.concatenate(embeds)
    r_max = max(len(r) for r in regions)
    dim = vectors.shape[1]
    region_arr = np.zeros((len(items), r_max, regions[0].shape[-1]), dtype=np.int8)
    scale_arr = np.zeros((len(items), r_max), dtype=np.float16)
    mask_arr = np.zeros((len(items), r_max), dtype=bool)
    for i, (q, s) in enumerate(zip(regions, scales)):
        region_arr[i, :len(q)], scale_arr[i, :len(q)], mask_arr[i, :len(q)] = q, s, True
    index, index_type, nprobe = _build_index(vectors)
    heads, store = {}, None
    if hsl is not None:
        store = encode_hsl_store(hsl, torch.from_numpy(vectors), dequantize(region_arr, scale_arr),
                                 torch.from_numpy(mask_arr), progress=progress)
        heads["hsl"] = {"fingerprint": head_fingerprint(hsl), "levels": hsl.levels, "dim": hsl.dim,
                        "bytes_per_item": store.bytes_per_item()}

    manifest = {
        "format_version": FORMAT_VERSION,
        "model": {"id": backbone.portable_id, "embed_dim": dim, "probe": backbone.probe()},
        "count": len(items),
        "index": index_type,
        "nprobe": nprobe,
        "regions": {
            "per_item": r_max,
            "source": BOX_SOURCE if any("items" in it for it in items) else f"grid{REGION_GRID}x{REGION_GRID}",
            "dtype": "int8",
            "bytes_per_item": int(region_arr[0].nbytes + scale_arr[0].nbytes + mask_arr[0].nbytes),
        },
        "heads": heads,
        "skipped": skipped,
        "missing_images": missing,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with atomic_dir(out) as tmp:
        faiss.write_index(index, str(tmp / "index.faiss"))
        np.save(tmp / "regions.npy", region_arr)
        np.save(tmp / "region_scale.npy", scale_arr)
        np.save(tmp / "region_mask.npy", mask_arr)
        for name, array in (store.arrays().items() if store else ()):
            np.save(tmp / f"{name}.npy", array)
        write_jsonl(tmp / "items.jsonl", items)
        write_json(tmp / "manifest.json", manifest)
    return {"count": len(items), "skipped": skipped, "index": index_type, "out": str(out)}


def _build_index(vectors: np.ndarray) -> tuple[faiss.Index, str, int]:
    n, dim = vectors.shape
    if n < IVF_THRESHOLD:
        index = faiss.IndexFlatIP(dim)
        index.add(vectors)
        return index, "flat", 0
    nlist = max(1, min(int(4 * np.sqrt(n)), n // 39))  # faiss wants ~39 training points per list
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(0)
    index.train(vectors[rng.choice(n, size=min(n, 64 * nlist), replace=False)])
    index.add(vectors)
    nprobe = 16
    index.nprobe = nprobe
    return index, "ivf", nprobe
