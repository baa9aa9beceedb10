"""Drill-down's query, a round's ranking and the breakdown of each result's score (no torch)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...errors import HslDemoError
from ...results import SearchResponse, Term, rounded


@dataclass(frozen=True)
class RegionQuery:
    """One region query per round, e.g. ("a red handbag", "white sneakers")."""

    regions: tuple[str, ...]

    @classmethod
    def parse(cls, record: dict, where: str) -> RegionQuery:
        """A query-file line: {"regions": ["...", ...]}."""
        regions = record.get("regions")
        if not isinstance(regions, list) or not regions or not all(isinstance(r, str) for r in regions):
            raise HslDemoError(f"{where}: a drill-down query needs \"regions\", a non-empty list of strings "
                               "(one query per round)")
        return cls(tuple(regions))


@dataclass
class DrillDownBreakdown:
    """Local, global and reasoning similarity with their weights this round, the local score
    of each query so far (`per_query`), `final`, and `earlier_ranks`: the result's rank after
    each earlier round (None where it was not a candidate)."""

    local: Term
    global_: Term
    reasoning: Term
    per_query: list[float]
    final: float
    earlier_ranks: list[int | None]

    def to_dict(self) -> dict:
        return {"local": self.local.to_dict(), "global": self.global_.to_dict(),
                "reasoning": self.reasoning.to_dict(), "per_query": [rounded(v) for v in self.per_query],
                "final": rounded(self.final), "earlier_ranks": list(self.earlier_ranks)}


@dataclass
class DrillDownRound(SearchResponse):
    """The ranking after one round (each result's breakdown is a DrillDownBreakdown): its
    number and the queries so far."""

    round: int = 0
    queries: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"round": self.round, "queries": self.queries, "results": [r.to_dict() for r in self.results]}
