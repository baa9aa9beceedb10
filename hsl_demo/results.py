"""What a search returns: ranked results, each with a typed score breakdown, and notices.

Every retrieval mode has its breakdown dataclass (in its mode module, hsl_demo/modes/); they
share `Term` and the `to_dict()` that `--json` prints under "levels". Notices ("query
ignored", "image-only search") travel with the results as data: the UI shows them as
warnings, the CLI prints them to stderr; nothing goes through Python's warnings.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, overload

DECIMALS = 6  # what JSON output keeps


def rounded(value: float) -> float:
    return round(float(value), DECIMALS)


@dataclass(frozen=True)
class Term:
    """One term of a score: a similarity and the weight it gets in the final score."""

    similarity: float
    weight: float

    def to_dict(self) -> dict:
        return {"similarity": rounded(self.similarity), "weight": rounded(self.weight)}


class Breakdown(Protocol):
    """Why a result scored what it did; each mode has its own dataclass."""

    final: float

    def to_dict(self) -> dict: ...


@dataclass(frozen=True)
class RegionMark:
    """Where on a result's photo it matched, and what matched there: a box in the photo's
    pixels (a catalog region with a box), or a cell (row, col) of the n x n grid the
    backbone's patch tokens were pooled to, over the centred square it saw."""

    label: str
    box: tuple[float, float, float, float] | None = None
    cell: tuple[int, int, int] | None = None  # (row, col, n)

    def to_dict(self) -> dict:
        return {"label": self.label, **({"box": list(self.box)} if self.box else {}),
                **({"cell": list(self.cell)} if self.cell else {})}


@dataclass
class SearchResult:
    rank: int
    id: str
    title: str
    score: float  # the final score the ranking is sorted by
    image: Path
    breakdown: Breakdown
    metadata: dict = field(default_factory=dict)
    marks: list[RegionMark] = field(default_factory=list)  # the regions that matched (Describe, Drill down)

    def to_dict(self) -> dict:
        out = {"rank": self.rank, "id": self.id, "title": self.title, "score": rounded(self.score),
               "image": str(self.image), "levels": self.breakdown.to_dict()}
        if self.marks:
            out["marks"] = [m.to_dict() for m in self.marks]
        return out


@dataclass
class SearchResponse(Sequence[SearchResult]):
    """The results of one search, best first, and its notices. A sequence of its results, so
    `for hit in retriever.search_text(...)` reads them directly."""

    results: list[SearchResult]
    notices: list[str] = field(default_factory=list)

    @overload
    def __getitem__(self, i: int) -> SearchResult: ...
    @overload
    def __getitem__(self, i: slice) -> list[SearchResult]: ...
    def __getitem__(self, i):
        return self.results[i]

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[SearchResult]:
        return iter(self.results)


def is_box(box: object) -> bool:
    """[x0, y0, x1, y1]: four finite numbers with x0 < x1 and y0 < y1."""
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        return False
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box):
        return False
    try:
        x0, y0, x1, y1 = (float(v) for v in box)
    except OverflowError:
        return False
    return all(map(math.isfinite, (x0, y0, x1, y1))) and x0 < x1 and y0 < y1


def result_lines(results: Sequence[SearchResult]) -> list[str]:
    """A ranking as the CLI prints it: rank, id, score, title, one line each (ids and titles
    come from a catalog: their control characters are escaped)."""
    from .query import printable

    if not results:
        return []
    width = max(len(printable(r.id)) for r in results)
    return [f"{r.rank:>3}  {printable(r.id):<{width}}  {r.score:7.4f}  {printable(r.title)}" for r in results]
