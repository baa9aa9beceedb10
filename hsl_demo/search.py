"""Search: FAISS candidates by global cosine, then (where a head is loaded) a re-rank.

`Retriever` is the Python API behind the CLI and the app:

    r = Retriever.from_pretrained()                # embedded model + products catalog
    for hit in r.search_text("green dotted scarf", k=5):
        print(hit.rank, hit.id, hit.title, hit.score, hit.levels)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .backbone import Backbone
from .catalog import Catalog
from .defaults import default_catalog, default_model
from .errors import HslDemoError

DEFAULT_CANDIDATES = 200


@dataclass
class SearchResult:
    rank: int
    id: str
    title: str
    score: float  # the final score the ranking is sorted by
    image: Path
    levels: dict = field(default_factory=dict)  # the score's breakdown (filled by the heads)
    metadata: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "rank": self.rank,
            "id": self.id,
            "title": self.title,
            "score": round(self.score, 6),
            "image": str(self.image),
            "levels": self.levels,
        }


def clean_text(text: str | None) -> str:
    text = " ".join((text or "").split())
    if not text:
        raise HslDemoError("empty query: type a description of the product")
    return text


class Retriever:
    """A backbone and a catalog, checked to belong together."""

    def __init__(self, backbone: Backbone, catalog: Catalog, candidates: int = DEFAULT_CANDIDATES):
        catalog.check_model(backbone)
        self.backbone = backbone
        self.catalog = catalog
        self.candidates = candidates

    @classmethod
    def from_pretrained(
        cls, model: str | None = None, catalog: str | Path | None = None, device: str | None = None,
        candidates: int = DEFAULT_CANDIDATES,
    ) -> Retriever:
        """Load a model (folder, Hub repo id or open_clip name; default: the embedded demo
        model) and open a catalog (name or folder; default: the demo products)."""
        opened = Catalog.open(catalog or default_catalog())  # cheap checks first
        return cls(Backbone.load(model or default_model(), device=device), opened, candidates)

    def _results(self, rows: np.ndarray, scores: np.ndarray, levels: list[dict] | None = None) -> list[SearchResult]:
        out = []
        for i, (row, score) in enumerate(zip(rows.tolist(), scores.tolist())):
            item = self.catalog.items[row]
            out.append(SearchResult(
                rank=i + 1,
                id=item["id"],
                title=item.get("title", item["id"]),
                score=float(score),
                image=self.catalog.image_path(row),
                levels=levels[i] if levels else {},
                metadata={k: v for k, v in item.items() if k not in ("id", "title", "image")},
            ))
        return out

    def search_text(self, text: str, k: int = 10) -> list[SearchResult]:
        """The k best items for a description, best first."""
        text = clean_text(text)
        k = _check_k(k)
        query = self.backbone.encode_text([text])
        scores, rows = self.catalog.search(query, max(k, self.candidates))
        keep = rows[0] >= 0
        rows, scores = rows[0][keep][:k], scores[0][keep][:k]
        return self._results(rows, scores, [{"global": float(s)} for s in scores])


def _check_k(k: int) -> int:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise HslDemoError(f"k must be a positive whole number, not {k!r}")
    return int(k)
