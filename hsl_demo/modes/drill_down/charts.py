"""Drill down's charts, drawn in the browser: each round's score terms, and how ranks moved."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from ...charts import (
    COLORS,
    RANK_LABEL,
    RESULT_COLORS,
    RESULT_ORDER,
    ROUND_ORDER,
    TOP,
    Chart,
    ChartSpec,
    ChartUpdate,
    contributions,
    result_labels,
)

TERMS = ("local", "global", "reasoning")
SPEC = ChartSpec(
    "bar", "result", "contribution", "term",
    f"Scores of the top {TOP} this round: local, global, reasoning, weight × similarity (a bar adds up to "
    "the final score)",
    "result", "weight × similarity", ("title", "similarity", "weight", "final"), sort=RESULT_ORDER,
    color_map=tuple((term, COLORS[term]) for term in TERMS))
# Points, not lines: Gradio's line draws nothing for a single round. The rank is a label
# (RANK_LABEL), so rank 1 is drawn at the top: Gradio cannot reverse a numeric axis.
RANK_SPEC = ChartSpec(
    "scatter", "round", "rank", "result",
    f"Rank of the current top {TOP} after each round (1, the best, at the top; no point: not among "
    "that round's candidates)", "round", "rank", ("title", "query"), sort=ROUND_ORDER, color_map=RESULT_COLORS)


def drill_rows(results: Sequence, highlight: int | None = None) -> ChartUpdate:
    """The local, global and reasoning contributions to each result's final score this round
    (weight × similarity; the reasoning weight grows with the round)."""
    results = list(results)
    parts = {"local": lambda b: b.local, "global": lambda b: b.global_, "reasoning": lambda b: b.reasoning}
    terms = [(name, [(parts[name](r.breakdown).similarity, parts[name](r.breakdown).weight) for r in results])
             for name in TERMS] if results else []
    return contributions(SPEC, results, highlight, terms)


def rank_rows(results: Sequence, highlight: int | None = None, queries: Sequence[str] = ()) -> ChartUpdate:
    """The rank of the current top results after every round (a round where a result was not
    among the candidates has no point). `queries`: each round's query, shown in the tooltip."""
    results = list(results)
    labels = result_labels(results, highlight)
    rounds = len(results[0].breakdown.earlier_ranks) + 1 if results else 0
    names = [f"round {n}" for n in range(1, rounds + 1)]  # categories, so the axis shows whole rounds
    rows = []
    for label, r in zip(labels, results):
        for n, rank in enumerate([*r.breakdown.earlier_ranks, r.rank], 1):
            if rank is not None:
                rows.append({"round": names[n - 1], "rank": RANK_LABEL.format(rank), "result": label, "title": r.title,
                             "query": queries[n - 1] if n <= len(queries) else ""})
    return ChartUpdate(RANK_SPEC, pd.DataFrame(rows, columns=["round", "rank", "result", "title", "query"]))


def drill_figure(results: Sequence, highlight: int | None = None):
    from .figures import drill_figure  # matplotlib, imported only when PNG charts are asked for

    return drill_figure(results, highlight)


def rank_figure(results: Sequence, highlight: int | None = None):
    from .figures import rank_figure

    return rank_figure(results, highlight)


CHART = Chart(SPEC, drill_rows, drill_figure)
RANK_CHART = Chart(RANK_SPEC, rank_rows, rank_figure)
