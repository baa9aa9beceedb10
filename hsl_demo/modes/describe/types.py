"""Describe's query and the breakdown of each result's score (no torch: the CLI, the charts and
the JSON output read them)."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import HslDemoError
from ...results import Term, rounded


@dataclass(frozen=True)
class TextQuery:
    text: str

    @classmethod
    def parse(cls, record: dict, where: str) -> TextQuery:
        """A query-file line: {"text": "..."}."""
        if not isinstance(record.get("text"), str) or not record["text"].strip():
            raise HslDemoError(f"{where}: \"text\" must be a non-empty string")
        return cls(record["text"])


@dataclass
class HslBreakdown:
    """The backbone's global cosine and, per level, the object- and image-granularity terms,
    each with its weight; `final` is their weighted sum. A global-only ranking (no head, or the
    `global` variant) has no levels and weight 1."""

    global_: Term
    levels: list[dict[str, Term]]  # level 1, 2, ...: {"object": Term, "image": Term}
    final: float

    def to_dict(self) -> dict:
        out: dict = {"global": self.global_.to_dict()}
        for n, level in enumerate(self.levels, 1):
            out[f"level{n}"] = {g: term.to_dict() for g, term in level.items()}
        out["final"] = rounded(self.final)
        return out

    @classmethod
    def global_only(cls, similarity: float) -> HslBreakdown:
        return cls(Term(similarity, 1.0), [], similarity)

    @classmethod
    def of_terms(cls, levels: int, granularities: tuple[str, ...], terms: list[float],
                 weights: list[float]) -> HslBreakdown:
        """From one item's (1 + 2L) term similarities and their weights, in the head's
        `term_names()` order."""
        per_level = [{g: Term(terms[1 + 2 * lv + i], weights[1 + 2 * lv + i]) for i, g in enumerate(granularities)}
                     for lv in range(levels)]
        return cls(Term(terms[0], weights[0]), per_level, sum(s * w for s, w in zip(terms, weights)))
