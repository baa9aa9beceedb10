"""Search in two stages: FAISS candidates, then a re-rank by the mode's head.

`Retriever` is the Python API behind the CLI and the app:

    r = Retriever.from_pretrained()                # embedded model + products catalog
    for hit in r.search_text("green dotted scarf", k=5):
        print(hit.rank, hit.id, hit.title, hit.score, hit.breakdown)

Each mode's search lives in its module (hsl_demo/modes/); a search returns a SearchResponse:
its results, each with a typed breakdown of its score, and its notices.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from . import modes
from .backbone import Backbone
from .catalog import Catalog
from .defaults import REGION_INDEX_ITEMS, default_catalog, default_model
from .errors import HslDemoError
from .hub import load_backbone
from .models import load_head
from .modes.describe import TextQuery
from .modes.drill_down import DrillDownRound
from .modes.drill_down.pipeline import DrillDownSession
from .modes.modify import ComposedQuery
from .query import clean_text
from .results import Breakdown, RegionMark, SearchResponse, SearchResult, is_box

__all__ = ["DrillDownRound", "DrillDownSession", "Retriever", "SearchResponse", "SearchResult", "clean_text",
           "load_heads"]

DEFAULT_CANDIDATES = 200


class Retriever:
    """A backbone, its heads and a catalog, checked to belong together: the components every
    mode's search is built from (`heads`: by head name, as a model folder's subfolders). Safe to
    share between threads: a search changes nothing on it (what a mode prepares is built on
    first use; the app builds it before it serves).

    `cache_items`: catalogs up to this size keep a mode's computed image side in memory (e.g.
    drill-down's); larger ones read it per query from the catalog's stores and indexes."""

    def __init__(self, backbone: Backbone, catalog: Catalog, candidates: int = DEFAULT_CANDIDATES,
                 heads: dict[str, Any] | None = None, cache_items: int = REGION_INDEX_ITEMS, **named_heads: Any):
        catalog.check_model(backbone)
        trained = {name: head for name, head in {**(heads or {}), **named_heads}.items() if head is not None}
        for name, head in trained.items():
            mode = modes.by_head(name)
            if mode is None:
                raise HslDemoError(f"no mode uses a head called {name!r} (heads: "
                                   f"{', '.join(m.head for m in modes.MODES.values())})")
            if getattr(head, "embed_dim", backbone.embed_dim) != backbone.embed_dim:
                raise HslDemoError(f"the {name} head ({mode.name}) expects {head.embed_dim}-d features, the "
                                   f"backbone gives {backbone.embed_dim}-d (a head trained on another backbone?)")
        self.backbone = backbone
        self.catalog = catalog
        self.candidates = _check_k(candidates)
        self.cache_items = cache_items
        self.trained = frozenset(trained)  # the heads loaded from a model folder (not stand-ins)
        # A mode without a trained head uses its untrained stand-in (e.g. modify's equal-weight sum).
        standins = {m.head: m.untrained(backbone.embed_dim) for m in modes.MODES.values()
                    if m.untrained is not None and m.head not in trained}
        self.heads: dict[str, Any] = {name: head.eval() for name, head in {**standins, **trained}.items()}
        self._prepared: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        """A head by name (`retriever.hsl`: None when the folder has none), for the Python API."""
        heads = self.__dict__.get("heads")
        if heads is not None and modes.by_head(name) is not None:
            return heads.get(name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @classmethod
    def from_pretrained(
        cls, model: str | None = None, catalog: str | Path | None = None, device: str | None = None,
        candidates: int = DEFAULT_CANDIDATES, max_params: int | None = None,
    ) -> Retriever:
        """Load a model (folder, Hub repo id or open_clip name; default: the embedded demo
        model, with its heads) and open a catalog (name or folder; default: the demo products).
        `max_params`: the most parameters the model's or a head's config may ask for (default:
        defaults.default_max_params), checked before anything is built."""
        opened = Catalog.open(catalog or default_catalog())  # cheap checks first
        backbone = load_backbone(model or default_model(), device=device, max_params=max_params)
        return cls(backbone, opened, candidates, heads=load_heads(backbone, max_params))

    def results(self, rows: np.ndarray, scores: np.ndarray, breakdowns: list[Breakdown],
                regions: list[list[tuple[int, str]]] | None = None) -> list[SearchResult]:
        """Catalog rows, best first, as results with their scores and breakdowns; `regions`:
        per result, the (region, label) pairs to mark on its photo."""
        out = []
        regions = regions or [[] for _ in breakdowns]
        for i, (row, score, breakdown, marked) in enumerate(zip(rows.tolist(), scores.tolist(), breakdowns, regions)):
            item = self.catalog.items[row]
            marks = (region_mark(self.catalog, row, r, label, item) for r, label in marked)
            out.append(SearchResult(
                rank=i + 1, id=item["id"], title=item.get("title", item["id"]), score=float(score),
                image=self.catalog.image_path(row, item), breakdown=breakdown,
                metadata={k: v for k, v in item.items() if k not in ("id", "title", "image")},
                marks=[m for m in marks if m is not None],
            ))
        return out

    def search(self, mode: str, query: Any, k: int = 10, variant: str | None = None) -> list[SearchResponse]:
        """Any mode's search: `query` is the mode's typed query (e.g. TextQuery), or a query-file
        record (a dict, checked by the mode). The ranking after each round, best first (one
        round for most modes)."""
        found = modes.get(mode)
        if isinstance(query, dict):
            query = found.parse(query, f"{found.name} query")
        return found.search(self, query, _check_k(k), found.check_variant(variant, self))

    def prepared(self, mode: str) -> Any:
        """What `mode` prepares once per retriever (e.g. describe's HSL image side), built on
        first use. No lock: the app builds it before serving; racing first calls build equal ones."""
        if mode not in self._prepared:
            found = modes.get(mode)
            self._prepared[mode] = found.prepare(self) if found.prepare else None
        return self._prepared[mode]

    def search_text(self, text: str, k: int = 10, variant: str | None = None) -> SearchResponse:
        """Describe: the k best items for a description, best first. Stage 1 takes the top
        `candidates` (at least k) by global cosine from FAISS; stage 2 re-ranks them with the
        HSL head. `variant`: full (default), image, object or global (see modes/describe)."""
        return self.search("describe", TextQuery(clean_text(text)), k, variant)[0]

    def search_composed(self, reference: str | Path | Image.Image, text: str | None, k: int = 10,
                        variant: str | None = None) -> SearchResponse:
        """Modify: the k best items for a reference (catalog id, image file or PIL image) changed
        as `text` says. Each breakdown carries the query's (w_image, w_text) and the result's
        similarity to the reference image and to the text. `variant`: adaptive (default), sum,
        image or text. An empty text is an image-only query, with a notice."""
        _check_k(k)
        text = clean_text(text, what="the modification text", empty_ok=True)
        return self.search("modify", ComposedQuery(reference, text), k, variant)[0]

    def session(self, k: int = 10, variant: str | None = None) -> DrillDownSession:
        """Drill down: add a region query per round, undo, reset (see DrillDownSession)."""
        return DrillDownSession(self, _check_k(k), modes.get("drill-down").check_variant(variant, self))

    def search_multi(self, regions: list[str], k: int = 10, variant: str | None = None) -> list[DrillDownRound]:
        """Drill down through `regions`, one per round; the ranking after every round."""
        if isinstance(regions, (str, bytes)) or not isinstance(regions, (list, tuple)):
            raise HslDemoError(f"regions must be a list of strings, one query per round (e.g. [\"a red handbag\", "
                               f"\"white sneakers\"]), not {type(regions).__name__}")
        session = self.session(k, variant)
        for text in regions:
            session.add(text)
        return session.rounds

    def warm_up(self) -> None:
        """One query of each mode, so that a visitor's first query does not pay for first use
        (what each mode prepares, e.g. drill-down's region side for a small catalog; torch's
        first runs at these shapes), and the catalog's row files read into memory (a minute at
        most): what the app does before it serves searches."""
        self.catalog.wait_prefetched(timeout=60)
        for mode in modes.MODES.values():
            self.prepared(mode.name)
            query = mode.warm_up_query(self.catalog) if mode.warm_up_query and len(self.catalog) else None
            if query is not None:
                self.search(mode.name, query, k=1)


def region_mark(catalog: Catalog, row: int, region: int, label: str, record: dict) -> RegionMark | None:
    """Where region `region` of item `row` lies on its photo, labelled: the item's `region`-th
    box, or, for an item indexed without boxes, a cell of its region grid (None when the region
    count is not a square grid). `record`: the item's."""
    parts = record.get("items") if isinstance(record.get("items"), list) else []
    boxes = [part["box"] for part in parts if isinstance(part, dict) and "box" in part]
    if boxes:  # a box that is not four finite numbers, left to right and top to bottom, is not drawn
        box = boxes[region] if region < len(boxes) else None
        return RegionMark(label, box=tuple(float(v) for v in box)) if is_box(box) else None
    regions = int(np.count_nonzero(catalog.region_mask[row]))
    n = math.isqrt(regions)
    if n * n != regions or region >= n * n:
        return None
    return RegionMark(label, cell=(region // n, region % n, n))


def load_heads(backbone: Backbone, max_params: int | None = None) -> dict:
    """The trained heads in the backbone's model folder, by head name (none for a bare
    open_clip name): the folder's model_index.json lists them, else its head subfolders."""
    from .model_folder import read_model_index

    folder = backbone.folder
    if folder is None:
        return {}
    index = read_model_index(folder)
    found = {name: modes.by_head(name) for name in index.heads}
    return {name: load_head(mode.head_class(), folder / name, max_params) for name, mode in found.items()
            if mode is not None}  # a head no registered mode uses (a plugin's, not installed) is left


def _check_k(k: int) -> int:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise HslDemoError(f"k must be a positive whole number, not {k!r}")
    return int(k)
