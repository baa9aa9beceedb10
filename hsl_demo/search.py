"""Search in two stages: FAISS candidates, then a re-rank by the mode's head.

`Retriever` is the Python API behind the CLI and the app:

    r = Retriever.from_pretrained()                # embedded model + products catalog
    for hit in r.search_text("green dotted scarf", k=5):
        print(hit.rank, hit.id, hit.title, hit.score, hit.breakdown)

Each mode's search lives in its module (hsl_demo/modes/); a search returns a SearchResponse:
its results, each with a typed breakdown of its score, and its notices.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import modes
from .backbone import Backbone
from .catalog import Catalog
from .defaults import REGION_INDEX_ITEMS, default_catalog, default_model
from .errors import HslDemoError
from .images import open_image
from .models import load_head
from .models.composed import ComposedHead
from .models.hmrn import HMRNHead
from .models.hsl import HSLHead
from .modes import describe, drill_down, modify
from .modes.drill_down import DrillDownRound, DrillDownSession
from .query import clean_text
from .results import Breakdown, SearchResponse, SearchResult

__all__ = ["DrillDownRound", "DrillDownSession", "Retriever", "SearchResponse", "SearchResult", "clean_text",
           "load_heads"]

DEFAULT_CANDIDATES = 200
HMRN_CACHE_ITEMS = REGION_INDEX_ITEMS  # catalogs up to this size keep their HMRN image side in memory


class Retriever:
    """A backbone, its heads and a catalog, checked to belong together. Safe to share between
    threads: a search changes nothing on it (the drill-down index is built on first use; the
    app builds it before it serves)."""

    def __init__(self, backbone: Backbone, catalog: Catalog, candidates: int = DEFAULT_CANDIDATES,
                 hsl: HSLHead | None = None, composed: ComposedHead | None = None, hmrn: HMRNHead | None = None):
        catalog.check_model(backbone)
        for name, head in (("hsl", hsl), ("composed", composed), ("hmrn", hmrn)):
            if head is not None and head.embed_dim != backbone.embed_dim:
                raise HslDemoError(f"the {name} head ({modes.by_head(name).name}) expects {head.embed_dim}-d "
                                   f"features, the backbone gives {backbone.embed_dim}-d (a head trained on another "
                                   "backbone?)")
        self.backbone = backbone
        self.catalog = catalog
        self.candidates = _check_k(candidates)
        self.hsl = hsl
        # Without a trained head, composed queries are the equal-weight sum (zero-shot baseline).
        self.composed = (composed or ComposedHead(embed_dim=backbone.embed_dim)).eval()
        # Without a trained HMRN head, drill-down ranks by its (untrained) local and global levels.
        self.hmrn = (hmrn or HMRNHead(embed_dim=backbone.embed_dim)).eval()
        self.hmrn_variant = "full" if hmrn is not None else "local+global"
        self._hmrn_cache: drill_down.HmrnStore | None = None
        self.hsl_store = describe.image_side(catalog, hsl) if hsl is not None else None

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
        backbone = Backbone.load(model or default_model(), device=device, max_params=max_params)
        return cls(backbone, opened, candidates, **load_heads(backbone, max_params))

    def results(self, rows: np.ndarray, scores: np.ndarray, breakdowns: list[Breakdown],
                regions: list[list[tuple[int, str]]] | None = None) -> list[SearchResult]:
        """Catalog rows, best first, as results with their scores and breakdowns; `regions`:
        per result, the (region, label) pairs to mark on its photo."""
        out = []
        regions = regions or [[] for _ in breakdowns]
        for i, (row, score, breakdown, marked) in enumerate(zip(rows.tolist(), scores.tolist(), breakdowns, regions)):
            item = self.catalog.items[row]
            marks = (self.catalog.region_mark(row, r, label, item) for r, label in marked)
            out.append(SearchResult(
                rank=i + 1, id=item["id"], title=item.get("title", item["id"]), score=float(score),
                image=self.catalog.image_path(row, item), breakdown=breakdown,
                metadata={k: v for k, v in item.items() if k not in ("id", "title", "image")},
                marks=[m for m in marks if m is not None],
            ))
        return out

    def search_text(self, text: str, k: int = 10, variant: str | None = None) -> SearchResponse:
        """Describe: the k best items for a description, best first. Stage 1 takes the top
        `candidates` (at least k) by global cosine from FAISS; stage 2 re-ranks them with the
        HSL head. `variant`: full (default), image, object or global (see modes.describe)."""
        variant = describe.MODE.check_variant(variant)
        return describe.search(self, clean_text(text), _check_k(k), variant)

    def search_composed(self, reference: str | Path | Image.Image, text: str | None, k: int = 10,
                        variant: str | None = None) -> SearchResponse:
        """Modify: the k best items for a reference (catalog id, image file or PIL image) changed
        as `text` says. Each breakdown carries the query's (w_image, w_text) and the result's
        similarity to the reference image and to the text. `variant`: adaptive (default), sum,
        image or text. An empty text is an image-only query, with a notice."""
        k, variant = _check_k(k), modify.MODE.check_variant(variant)
        text = clean_text(text, what="the modification text", empty_ok=True)
        image, ref_row = self._reference(reference)
        return modify.search(self, image, ref_row, text, k, variant)

    def session(self, k: int = 10, variant: str | None = None) -> DrillDownSession:
        """Drill down: add a region query per round, undo, reset (see DrillDownSession)."""
        return DrillDownSession(self, _check_k(k), drill_down.MODE.check_variant(variant, self))

    def search_multi(self, regions: list[str], k: int = 10, variant: str | None = None) -> list[DrillDownRound]:
        """Drill down through `regions`, one per round; the ranking after every round."""
        if isinstance(regions, (str, bytes)) or not isinstance(regions, (list, tuple)):
            raise HslDemoError(f"regions must be a list of strings, one query per round (e.g. [\"a red handbag\", "
                               f"\"white sneakers\"]), not {type(regions).__name__}")
        session = self.session(k, variant)
        for text in regions:
            session.add(text)
        return session.rounds

    def hmrn_store(self) -> drill_down.HmrnStore | None:
        """The catalog's HMRN image side and region index, built on first use; None for catalogs
        above HMRN_CACHE_ITEMS, which compute the image side per round for their candidates."""
        if len(self.catalog) > HMRN_CACHE_ITEMS:
            return None
        if self._hmrn_cache is None:  # no lock: the app builds it before serving; racing first calls build equal ones
            self._hmrn_cache = drill_down.image_side(self.catalog, self.hmrn)
        return self._hmrn_cache

    def warm_up(self) -> None:
        """One query of each mode, so that a visitor's first query does not pay for first use
        (drill-down's region side, built here for a small catalog; torch's first runs at these
        shapes), and the catalog's row files read into memory (a minute at most): what the app
        does before it serves searches."""
        self.catalog.wait_prefetched(timeout=60)
        self.hmrn_store()
        if len(self.catalog):
            self.search_text("a product", k=1)
            self.search_composed(self.catalog.items[0]["id"], "in another colour", k=1)
            self.search_multi(["a product"], k=1)

    def _reference(self, reference: str | Path | Image.Image) -> tuple[torch.Tensor, int]:
        """(1, D) unit embedding of the reference, and its catalog row (-1 for a file)."""
        if not isinstance(reference, (str, Path, Image.Image)):
            raise HslDemoError(f"reference must be a catalog item id, an image file or a PIL image, not "
                               f"{type(reference).__name__}")
        if isinstance(reference, str) and reference in self.catalog:
            row = self.catalog.row(reference)
            return torch.from_numpy(self.catalog.vectors([row]).copy()), row
        if isinstance(reference, (str, Path)) and not Path(reference).is_file():
            raise HslDemoError(f"reference {str(reference)!r}: not an item id in catalog {self.catalog.name!r} "
                               "and not an image file")
        image = open_image(reference)
        return torch.from_numpy(self.backbone.encode_images([image])), -1


def load_heads(backbone: Backbone, max_params: int | None = None) -> dict:
    """The trained heads in the backbone's model folder, by head name (none for a bare
    open_clip name): the folder's model_index.json lists them, else its head subfolders."""
    from .hub import read_model_index

    folder = backbone.folder
    if folder is None:
        return {}
    index = read_model_index(folder)
    return {name: load_head(modes.by_head(name).head_class(), folder / name, max_params) for name in index.heads}


def _check_k(k: int) -> int:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise HslDemoError(f"k must be a positive whole number, not {k!r}")
    return int(k)
