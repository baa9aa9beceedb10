"""Drill down: a look described one product per round, ranked by HMRN.

Each round adds a region query ("a red handbag", then "white sneakers") and re-ranks the
looks with all the queries so far (hsl_demo/models/hmrn.py): FAISS candidates from the
regions that match each query in the head's own space (HmrnStore), then the full re-rank.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import faiss
import numpy as np
import torch

from ..catalog import first_items
from ..defaults import HMRN_VARIANTS
from ..errors import HslDemoError
from ..models.hmrn import HMRNHead, HMRNImages
from ..query import clean_text
from ..results import SearchResponse, SearchResult, Term, rounded
from . import Mode, register

if TYPE_CHECKING:
    from ..catalog import Catalog
    from ..search import Retriever

EMPTY_QUERY = "empty region query: ignored (describe one product, e.g. \"a red handbag\")"
NOTHING_TO_UNDO = "no round to undo"


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
        return first_items(np.where(found >= 0, self.region_rows[found], -1), per_query)


@torch.no_grad()
def encode_hmrn_store(head: HMRNHead, embeds: torch.Tensor, regions: torch.Tensor, mask: torch.Tensor) -> HmrnStore:
    side = head.encode_images(embeds, regions, mask)
    valid = side.mask.numpy()
    index = faiss.IndexFlatIP(side.regions.shape[-1])
    index.add(np.ascontiguousarray(side.regions.numpy()[valid]))
    region_rows = np.nonzero(valid)[0]
    return HmrnStore(HMRNImages(side.regions.half(), side.pooled.half(), side.mask), index, region_rows)


def image_side(catalog: Catalog, head: HMRNHead) -> HmrnStore:
    """The HMRN image side of every item for `head`, with its region index (computed here, in
    memory: about 1.5 KB an item with 5 regions)."""
    regions, mask = catalog.region_features(np.arange(len(catalog)))
    return encode_hmrn_store(head, torch.from_numpy(catalog.embeddings), regions, mask)


@torch.no_grad()
def rank_round(retriever: Retriever, queries: np.ndarray, texts: list[str], variant: str, k: int,
               earlier: list[dict[int, int]]) -> tuple[list[int], list[SearchResult]]:
    """Rank the catalog for a set of region queries (T, D), whose words are `texts`: FAISS
    candidates for each query (from the regions that match it), then the HMRN re-rank. Returns
    every candidate's catalog row, best first, and the first k as results (their earlier ranks looked up
    in `earlier`, and on each the region every query attended to, marked with its text)."""
    head = retriever.hmrn
    q = torch.from_numpy(queries)[None]
    query_mask = torch.ones(q.shape[:2], dtype=torch.bool)
    # One candidate budget shared by the queries, so a round's cost grows with its queries
    # (each candidate is scored against all of them), not also with its candidate count.
    per_query = max(k, -(-retriever.candidates // len(queries)))
    store = retriever.hmrn_store()
    if store is not None:
        rows = store.candidates(head.encode_queries(q, query_mask)[0][0], per_query)
        images = store.side.take(torch.from_numpy(rows))
    else:  # a large catalog: candidates from its region index, image side computed for them alone
        rows = retriever.catalog.region_candidates(queries, per_query)
        images = head.encode_images(torch.from_numpy(retriever.catalog.vectors(rows)),
                                    *retriever.catalog.region_features(rows))
    scores = head.scores(q, query_mask, images)
    final = head.combine(scores, len(queries), variant)[0]
    order = torch.argsort(final, descending=True, stable=True)
    order = order[torch.isfinite(final[order])]  # a row with broken (NaN) features ranks nowhere
    weights = head.variant_weights(len(queries), variant)
    ranked = rows[order.numpy()].tolist()  # rows, not ids: an id would parse every candidate's record
    breakdowns = []
    for row, i in zip(ranked, order[:k].tolist()):
        local, global_, reasoning = (Term(float(s[0, i]), w) for s, w in
                                     zip((scores.local, scores.global_, scores.reasoning), weights))
        breakdowns.append(DrillDownBreakdown(local, global_, reasoning, scores.per_query[0, i].tolist(),
                                             float(final[i]), [ranks.get(row) for ranks in earlier]))
    top = order[:k].numpy()
    attended = head.attended_regions(q, query_mask, images.take(torch.from_numpy(top)))[0].tolist()  # (k, T)
    marks = [[(region, f"{n}. {text}") for n, (region, text) in enumerate(zip(per_result, texts), 1)]
             for per_result in attended]
    return ranked, retriever.results(rows[top], final[top].numpy(), breakdowns, marks)


@dataclass
class DrillDownRound:
    """The ranking after one round (each result's breakdown is a DrillDownBreakdown)."""

    round: int
    queries: list[str]
    results: list[SearchResult]

    def to_dict(self) -> dict:
        return {"round": self.round, "queries": self.queries, "results": [r.to_dict() for r in self.results]}


@dataclass
class DrillDownStep:
    """What one add or undo did: the current round (None when there is none) and notices
    (a query ignored, nothing to undo)."""

    round: DrillDownRound | None
    notices: list[str]

    @property
    def results(self) -> list[SearchResult]:
        return self.round.results if self.round else []


class DrillDownSession:
    """The rounds of one drill-down search. Each round adds a region query and re-ranks the
    catalog with all the queries so far.

    Bad input never breaks the state: an empty or repeated query is ignored with a notice, a
    round past the maximum is an HslDemoError, and undo with no rounds is only a notice.
    """

    def __init__(self, retriever: Retriever, k: int, variant: str):
        self.retriever, self.k, self.variant = retriever, k, variant
        self.queries: list[str] = []
        self._embeds: list[np.ndarray] = []
        self._ranks: list[dict[int, int]] = []  # per round: catalog row -> rank of every candidate
        self.rounds: list[DrillDownRound] = []

    @property
    def max_rounds(self) -> int:
        return self.retriever.hmrn.max_rounds

    @property
    def current(self) -> DrillDownRound | None:
        return self.rounds[-1] if self.rounds else None

    def add(self, text: str | None) -> DrillDownStep:
        """Add a round with query `text`: the new ranking, or the current one with a notice when
        the query was ignored."""
        text = clean_text(text, what="a region query", empty_ok=True)
        if not text:
            return DrillDownStep(self.current, [EMPTY_QUERY])
        if len(self.queries) >= self.max_rounds:
            raise HslDemoError(f"at most {self.max_rounds} rounds: undo a round or reset to start over")
        seen = [q.lower() for q in self.queries]
        if text.lower() in seen:
            return DrillDownStep(self.current, [f"{text!r} was already asked in round "
                                                f"{seen.index(text.lower()) + 1}: ignored"])
        embed = self.retriever.backbone.encode_text([text])[0]  # before any state changes
        ranked, results = rank_round(self.retriever, np.stack([*self._embeds, embed]), [*self.queries, text],
                                  self.variant, self.k, self._ranks)
        self.queries.append(text)
        self._embeds.append(embed)
        self._ranks.append({row: rank for rank, row in enumerate(ranked, 1)})
        self.rounds.append(DrillDownRound(len(self.queries), list(self.queries), results))
        return DrillDownStep(self.current, self.retriever.backbone.unknown_words_notice(text))

    def undo(self) -> DrillDownStep:
        """Drop the last round: the ranking before it (no round, and a notice, when none is left)."""
        if not self.rounds:
            return DrillDownStep(None, [NOTHING_TO_UNDO])
        for stack in (self.queries, self._embeds, self._ranks, self.rounds):
            stack.pop()
        return DrillDownStep(self.current, [])

    def reset(self) -> None:
        for stack in (self.queries, self._embeds, self._ranks, self.rounds):
            stack.clear()


def validate(query: dict, where: str) -> None:
    regions = query.get("regions")
    if not isinstance(regions, list) or not regions or not all(isinstance(r, str) for r in regions):
        raise HslDemoError(f"{where}: a {MODE.name} query needs \"regions\", a non-empty list of strings "
                           "(one query per round)")


def check_rounds(retriever: Retriever, queries: list[dict]) -> None:
    longest = max(len(q["regions"]) for q in queries)
    if longest > retriever.hmrn.max_rounds:
        raise HslDemoError(f"a {MODE.name} query has {longest} regions; the model takes at most "
                           f"{retriever.hmrn.max_rounds} rounds")


def rank(retriever: Retriever, query: dict, k: int, variant: str) -> list[SearchResponse]:
    """The ranking after every round, with the notices met on the way to it (a query ignored
    before the first round goes with the first ranking, a later one with the ranking it kept)."""
    session = retriever.session(k, variant)
    out: list[SearchResponse] = []
    pending: list[str] = []
    for text in query["regions"]:
        rounds_before = len(session.rounds)
        step = session.add(text)
        if len(session.rounds) > rounds_before:
            out.append(SearchResponse(step.results, pending + step.notices))
            pending = []
        elif out:
            out[-1].notices.extend(step.notices)
        else:
            pending.extend(step.notices)
    return out or [SearchResponse([], pending)]


MODE = register(Mode(
    name="drill-down", title="Drill down", head="hmrn", head_class=lambda: HMRNHead,
    head_summary="HMRN drill-down head (multi-round region queries: local, global, reasoning)",
    variants=HMRN_VARIANTS, breakdown=lambda: DrillDownBreakdown, validate=validate,
    rank=rank, aliases=("multi",), in_rounds=True, precheck=check_rounds,
    default_for=lambda retriever: retriever.hmrn_variant,
))
