"""Drill-down's search: a session of rounds, each ranked by HMRN over FAISS candidates from the
regions that match its queries, and the head's image side of a catalog with its region index."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import faiss
import numpy as np
import torch

from ...catalog import first_items
from ...errors import HslDemoError
from ...models.hmrn import HMRNHead, HMRNImages
from ...query import clean_text
from ...results import SearchResponse, SearchResult, Term
from .types import DrillDownBreakdown, DrillDownRound

if TYPE_CHECKING:
    from ...catalog import Catalog

MODE_NAME = "drill-down"
HEAD = "hmrn"
EMPTY_QUERY = "empty region query: ignored (describe one product, e.g. \"a red handbag\")"
NOTHING_TO_UNDO = "no round to undo"


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
def rank_round(retriever, queries: np.ndarray, texts: list[str], variant: str, k: int,
               earlier: list[dict[int, int]]) -> tuple[list[int], list[SearchResult]]:
    """Rank the catalog for a set of region queries (T, D), whose words are `texts`: FAISS
    candidates for each query (from the regions that match it), then the HMRN re-rank. Returns
    every candidate's catalog row, best first, and the first k as results (their earlier ranks looked up
    in `earlier`, and on each the region every query attended to, marked with its text)."""
    head: HMRNHead = retriever.heads[HEAD]
    q = torch.from_numpy(queries)[None]
    query_mask = torch.ones(q.shape[:2], dtype=torch.bool)
    # One candidate budget shared by the queries, so a round's cost grows with its queries
    # (each candidate is scored against all of them), not also with its candidate count.
    per_query = max(k, -(-retriever.candidates // len(queries)))
    store: HmrnStore | None = retriever.prepared(MODE_NAME)
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

    def __init__(self, retriever, k: int, variant: str):
        self.retriever, self.k, self.variant = retriever, k, variant
        self.queries: list[str] = []
        self._embeds: list[np.ndarray] = []
        self._ranks: list[dict[int, int]] = []  # per round: catalog row -> rank of every candidate
        self.rounds: list[DrillDownRound] = []

    @property
    def max_rounds(self) -> int:
        return self.retriever.heads[HEAD].max_rounds

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
        self.rounds.append(DrillDownRound(results, round=len(self.queries), queries=list(self.queries)))
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


def rank(retriever, regions: tuple[str, ...], k: int, variant: str) -> list[SearchResponse]:
    """The ranking after every round, with the notices met on the way to it (a query ignored
    before the first round goes with the first ranking, a later one with the ranking it kept)."""
    session = DrillDownSession(retriever, k, variant)
    out: list[SearchResponse] = []
    pending: list[str] = []
    for text in regions:
        rounds_before = len(session.rounds)
        step = session.add(text)
        if len(session.rounds) > rounds_before:
            made = session.rounds[-1]
            out.append(DrillDownRound(made.results, pending + step.notices, made.round, list(made.queries)))
            pending = []
        elif out:
            out[-1].notices.extend(step.notices)
        else:
            pending.extend(step.notices)
    return out or [SearchResponse([], pending)]

