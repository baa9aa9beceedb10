"""Training data read from an indexed catalog (`train ... --catalog DIR`): no image is decoded
again. The frozen backbone's global embeddings come back from the FAISS index, the region
features from regions.npy (the exact int8 features the heads re-rank at search time), and the
texts from each item's metadata.

What each head learns from, documented in docs/your-catalog.md:
- hsl: an item's texts, from the fields in `TEXT_FIELDS` (strings, or lists of strings);
- composed: a triplet file (JSONL of {"reference", "text", "targets"}), or else pairs of items
  that differ in one or two attributes (`ATTRIBUTE_FIELDS`, or every other short string field)
  and agree on the rest, with the text "change the colour to blue and the pattern to striped";
- hmrn: items with boxes (metadata "items": [{"box": [...], "caption": ...}]): each box's caption
  is one round of a drill-down query whose answer is the item.

Held-out items: those whose "split" field is anything but "train" when items have one, else a
stable tenth of the ids (by hash), so a retrained head is scored on the same items.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import HslDemoError

TEXT_FIELDS = ("title", "description", "descriptions", "caption", "captions", "text", "texts")
# Fields that are never attributes of an item (identity, files, texts, structure).
NOT_ATTRIBUTES = frozenset({"id", "image", "split", "items", "url", "dataset", "group", *TEXT_FIELDS})
ATTRIBUTE_FIELDS = ("category", "color", "colour", "pattern", "material", "style", "brand", "size")
MAX_ATTRIBUTE_LENGTH = 40  # longer strings are texts, not attribute values
HELDOUT_FRACTION = 0.1


def item_texts(item: dict) -> list[str]:
    """The item's texts, in `TEXT_FIELDS` order, without duplicates or empty strings. A title
    that `hsl-demo index` made from the file name (none was given) is not a text."""
    made_up = Path(str(item.get("image", ""))).stem.replace("_", " ")
    found: list[str] = []
    for name in TEXT_FIELDS:
        value = item.get(name)
        values = value if isinstance(value, list) else [value]
        found.extend(v.strip() for v in values if isinstance(v, str) and v.strip()
                     and not (name == "title" and v == made_up))
    return list(dict.fromkeys(found))


def heldout_rows(items: list[dict], fraction: float = HELDOUT_FRACTION) -> np.ndarray:
    """Boolean (N,): which items are held out (see the module docstring)."""
    if any("split" in item for item in items):
        return np.array([item.get("split", "train") != "train" for item in items])
    ranks = np.array([_id_hash(item["id"]) for item in items])
    heldout = ranks < int(fraction * 2**32)
    if not heldout.any() and len(items) > 1:  # a small catalog: hold out its lowest-hash item
        heldout[ranks.argmin()] = True
    return heldout


def _id_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha1(text.encode()).digest()[:4], "big")


def catalog_fingerprint(catalog) -> str:
    """What a head was trained on, in 16 hex digits: the ids and the model probe of the catalog."""
    h = hashlib.sha256()
    for item in catalog.items:
        h.update(item["id"].encode() + b"\0")
    h.update(repr(catalog.manifest.get("model", {}).get("probe")).encode())
    return h.hexdigest()[:16]


@dataclass
class CatalogPool:
    """A catalog's features as training tensors, row = catalog item."""

    catalog: object  # hsl_demo.catalog.Catalog
    embeds: torch.Tensor  # (N, D) unit vectors
    heldout: np.ndarray  # (N,) bool
    fingerprint: str = ""

    def regions(self, rows) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, R, D) region features, dequantised as the re-rank sees them, and their (n, R) mask:
        read per batch, so a large catalog's int8 regions are never all held as floats."""
        return self.catalog.region_features(np.asarray(rows, dtype=np.int64))

    @property
    def items(self) -> list[dict]:
        return self.catalog.items

    def rows(self, heldout: bool) -> list[int]:
        return [int(r) for r in np.flatnonzero(self.heldout == heldout)]

    def describe(self) -> dict:
        """How the catalog is recorded in a head's training.json and model card."""
        return {"name": self.catalog.name, "items": len(self.items), "heldout_items": int(self.heldout.sum()),
                "fingerprint": self.fingerprint, "model": self.catalog.manifest.get("model", {}).get("id")}


def open_training_catalog(spec: str | Path, model: str | None, log=print):
    """The catalog at `spec` and its backbone: `model`, or else the model the catalog was indexed
    with (its manifest says which). Returns (backbone, pool) with the catalog's features read."""
    from ..catalog import Catalog
    from ..hub import load_backbone

    catalog = Catalog.open(spec)
    model = model or catalog.manifest.get("model", {}).get("id")
    if not model:
        raise HslDemoError(f"catalog {catalog.name!r} does not say which model indexed it: give --model")
    try:
        backbone = load_backbone(model)
    except HslDemoError as e:
        raise HslDemoError(f"{e} (catalog {catalog.name!r} was indexed with it; give --model to load it from "
                           "elsewhere)") from None
    catalog.check_model(backbone)
    log(f"reading the features of {len(catalog)} items from catalog {catalog.name!r}")
    embeds = torch.from_numpy(np.ascontiguousarray(catalog.embeddings, dtype=np.float32))
    heldout = heldout_rows(catalog.items)
    if heldout.all() or not heldout.any():
        raise HslDemoError(f"catalog {catalog.name!r}: {'every' if heldout.all() else 'no'} item is held out; "
                           "give items a \"split\" field (\"train\" for training items) or index more items")
    return backbone, CatalogPool(catalog, embeds, heldout, catalog_fingerprint(catalog))


def neighbours(pool: CatalogPool, rows: list[int], k: int, allowed: set[int]) -> list[list[int]]:
    """Each row's nearest catalog items in `allowed` (itself excluded), by the catalog's own
    index: the look-alikes its FAISS candidates will hold at search time."""
    _, found = pool.catalog.search(pool.embeds[rows].numpy(), k + 1)
    return [[int(j) for j in line if j >= 0 and j != r and int(j) in allowed][:k] for r, line in zip(rows, found)]


# ---- HSL: texts ------------------------------------------------------------------------------
def text_rows(pool: CatalogPool, heldout: bool) -> list[int]:
    rows = [r for r in pool.rows(heldout) if item_texts(pool.items[r])]
    if not rows:
        which = "held-out" if heldout else "training"
        raise HslDemoError(f"catalog {pool.catalog.name!r}: no {which} item has a text (metadata fields "
                           f"{', '.join(TEXT_FIELDS)})")
    return rows


def text_positives(texts: list[str], item_texts_of: list[list[str]], rows: list[int],
                   columns: list[int]) -> torch.Tensor:
    """(texts, columns) bool: a column answers a text when it is the text's item or has the same text."""
    normal = [{t.casefold() for t in its} for its in item_texts_of]
    return torch.tensor([[row == col or text.casefold() in normal[c] for c, col in enumerate(columns)]
                         for text, row in zip(texts, rows)])


# ---- composed: triplets ----------------------------------------------------------------------
@dataclass
class CatalogTriplet:
    reference: int  # catalog row
    text: str
    targets: list[int]  # catalog rows
    target_set: frozenset[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.target_set = frozenset(self.targets)


@dataclass
class Triplets:
    train: list[CatalogTriplet] = field(default_factory=list)
    heldout: list[CatalogTriplet] = field(default_factory=list)
    source: str = ""

    def fingerprint(self) -> str:
        """Which queries these are (a resumed run must train on the same)."""
        h = hashlib.sha256()
        for t in self.train + self.heldout:
            h.update(f"{t.reference}\0{t.text}\0{sorted(t.targets)}\n".encode())
        return h.hexdigest()[:16]


def read_triplet_file(path: str | Path, pool: CatalogPool) -> Triplets:
    """A JSONL of {"reference": ID, "text": "...", "targets": [ID, ...]} ("target": ID also works).

    With a "split" field (a converted data set's triplets.jsonl): only "train" triplets are
    used, and a stable tenth of them (by reference id) is held out for early stopping, so the
    file's val/test triplets stay unseen for `evaluate`. Without one, a triplet is held out
    when its reference item is."""
    from ..fileio import load_jsonl

    records = load_jsonl(Path(path))
    found = Triplets(source=Path(path).name)
    has_split = any("split" in r for r in records)
    ranked: list[tuple[int, CatalogTriplet]] = []
    for line, r in enumerate(records, 1):
        where = f"{path}: record {line}"
        if has_split and r.get("split", "train") != "train":
            continue
        targets = r.get("targets", [r["target"]] if "target" in r else None)
        if not isinstance(r.get("reference"), str) or not isinstance(r.get("text"), str) or not r["text"].strip():
            raise HslDemoError(f"{where}: needs \"reference\" (an item id) and \"text\" (a non-empty string)")
        if not isinstance(targets, list) or not targets or not all(isinstance(t, str) for t in targets):
            raise HslDemoError(f"{where}: needs \"targets\" (a list of item ids) or \"target\"")
        rows = [pool.catalog.row(i) for i in [r["reference"], *targets] if i in pool.catalog]
        if len(rows) < len(targets) + 1:
            missing = next(i for i in [r["reference"], *targets] if i not in pool.catalog)
            raise HslDemoError(f"{where}: no item {missing!r} in catalog {pool.catalog.name!r}")
        triplet = CatalogTriplet(rows[0], r["text"].strip(), rows[1:])
        if has_split:
            ranked.append((_id_hash(r["reference"]), triplet))
        else:
            (found.heldout if pool.heldout[rows[0]] else found.train).append(triplet)
    if ranked:  # a stable tenth of the references, and at least the first of them, held out
        cut = max(int(HELDOUT_FRACTION * 2**32), min(rank for rank, _ in ranked) + 1)
        for rank, triplet in ranked:
            (found.heldout if rank < cut else found.train).append(triplet)
    return _checked(found, pool)


def attribute_fields(items: list[dict]) -> list[str]:
    """The fields that hold an item's attributes: `ATTRIBUTE_FIELDS` present in the items, else
    every other field whose values are short strings in most items."""
    def varies(f: str) -> bool:  # in most items, with two values at least
        values = [it[f] for it in items if isinstance(it.get(f), str)]
        return len(values) > len(items) // 2 and len(set(values)) >= 2

    known = [f for f in ATTRIBUTE_FIELDS if varies(f)]
    if known:
        return known
    names = {k for it in items for k, v in it.items()
             if k not in NOT_ATTRIBUTES and isinstance(v, str) and 0 < len(v) <= MAX_ATTRIBUTE_LENGTH}
    return sorted(k for k in names if varies(k))


def modification_text(fields: list[str], target: dict) -> str:
    """"change the colour to blue and the pattern to striped": what the target has that differs."""
    return "change " + " and ".join(f"the {f.replace('_', ' ')} to {target[f]}" for f in fields)


def attribute_triplets(pool: CatalogPool, max_changed: int = 2, seed: int = 0, per_item: int = 6) -> Triplets:
    """Triplets from items that share attributes: for each item (reference) and each set of one or
    two fields, the items that differ exactly there are the targets of one query (one random
    new value per reference and field set; at most `per_item` field sets per reference, drawn at
    random). Train and held-out by the reference item."""
    import itertools

    fields = attribute_fields(pool.items)
    if not fields:
        raise HslDemoError(f"catalog {pool.catalog.name!r}: no attribute fields to make composed queries from "
                           f"({', '.join(ATTRIBUTE_FIELDS)}, or other short string fields); give --triplets FILE")
    values = [tuple(str(it.get(f, "")) for f in fields) for it in pool.items]
    by_values: dict[tuple, list[int]] = {}
    for row, v in enumerate(values):
        if all(v):
            by_values.setdefault(v, []).append(row)
    rng = random.Random(seed)
    found = Triplets(source=f"attributes: {', '.join(fields)}")
    field_sets = [w for n in range(1, min(max_changed, len(fields)) + 1)
                  for w in itertools.combinations(range(len(fields)), n)]
    chosen = {row: set(rng.sample(range(len(field_sets)), min(per_item, len(field_sets))))
              for rows in by_values.values() for row in rows}
    for index, which in enumerate(field_sets):
        kept = [i for i in range(len(fields)) if i not in which]
        groups: dict[tuple, list[tuple]] = {}
        for combo in by_values:  # combinations that agree on the kept fields
            groups.setdefault(tuple(combo[i] for i in kept), []).append(combo)
        for combo, rows in by_values.items():
            others = [c for c in groups[tuple(combo[i] for i in kept)] if all(c[i] != combo[i] for i in which)]
            for row in (r for r in rows if index in chosen[r]) if others else ():
                target = rng.choice(others)
                text = modification_text([fields[i] for i in which], dict(zip(fields, target)))
                triplet = CatalogTriplet(row, text, by_values[target])
                (found.heldout if pool.heldout[row] else found.train).append(triplet)
    return _checked(found, pool)


def _checked(found: Triplets, pool: CatalogPool) -> Triplets:
    if not found.train or not found.heldout:
        which = "training" if not found.train else "held-out"
        raise HslDemoError(f"catalog {pool.catalog.name!r}: no {which} composed triplets ({found.source})")
    return found


# ---- HMRN: boxes with captions -----------------------------------------------------------------
def region_captions(item: dict) -> list[str]:
    """The captions of the item's boxes, in region order (boxes without a caption are skipped)."""
    parts = item.get("items", [])
    if not isinstance(parts, list):
        return []
    return [p["caption"].strip() for p in parts if isinstance(p, dict) and "box" in p
            and isinstance(p.get("caption"), str) and p["caption"].strip()]


def caption_rows(pool: CatalogPool, heldout: bool) -> list[int]:
    rows = [r for r in pool.rows(heldout) if len(region_captions(pool.items[r])) >= 1]
    if not rows:
        which = "held-out" if heldout else "training"
        raise HslDemoError(f"catalog {pool.catalog.name!r}: no {which} item has boxes with captions "
                           "(metadata \"items\": [{\"box\": [x0, y0, x1, y1], \"caption\": \"...\"}])")
    return rows


# ---- held-out evaluation ------------------------------------------------------------------------
def recall_figures(scores: torch.Tensor, positives: torch.Tensor, ks: tuple[int, ...] = (1, 10)) -> dict:
    """R@k of each query (row of `scores`) over the columns, a hit when a positive column ranks in
    the top k; "score" is their mean (what early stopping keeps the best of)."""
    order = scores.argsort(dim=1, descending=True)
    ranked = positives.gather(1, order)
    figures = {f"R@{k}": ranked[:, :k].any(1).float().mean().item() for k in ks}
    figures["score"] = sum(figures.values()) / len(ks)
    return figures


def recall_in_top(scores: torch.Tensor, targets: list[frozenset[int]], ks: tuple[int, ...] = (1, 10)) -> dict:
    """`recall_figures` over a whole catalog, without a (queries, items) positives matrix: a hit
    when one of the query's target rows is among its top k columns."""
    top = scores.topk(min(max(ks), scores.shape[1]), dim=1).indices.tolist()
    figures = {f"R@{k}": sum(bool(t & set(row[:k])) for t, row in zip(targets, top)) / len(targets) for k in ks}
    figures["score"] = sum(figures.values()) / len(ks)
    return figures


def heldout_table(untrained: dict, result) -> dict:
    """The untrained head (the backbone's global cosine) against the kept trained one."""
    return {"untrained": {k: round(v, 4) for k, v in untrained.items()},
            "trained": {k: round(v, 4) for k, v in (result.best or {}).items()},
            "stopped_early": result.stopped_early}
