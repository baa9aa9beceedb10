"""Drill down's static charts (matplotlib): the twins of its browser charts (charts.py)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib
from matplotlib.figure import Figure

from ...charts import COLORS
from ...viz import empty, figure, grouped_barh, label_final, legend, result_label


def drill_figure(results: Sequence, highlight: int | None = None) -> Figure:
    """Drill down: local / global / reasoning similarity of each result and its final score."""
    results = list(results)
    fig, (ax,) = figure(len(results))
    if not results:
        return empty(fig, ax, "similarity", "result")
    terms = {"local": lambda b: b.local, "global": lambda b: b.global_, "reasoning": lambda b: b.reasoning}
    first = results[0].breakdown
    series = [(f"{name} (w {term(first).weight:.2f})", [term(r.breakdown).similarity for r in results],
               {"color": COLORS[name]}) for name, term in terms.items()]
    series.append(("final", [r.breakdown.final for r in results], {"color": COLORS["final"]}))
    grouped_barh(ax, results, series, highlight, "similarity")
    label_final(ax)
    ax.set_title("Scores of this round: local, global, reasoning")
    legend(ax)
    return fig


def rank_figure(results: Sequence, highlight: int | None = None) -> Figure:
    """Drill down: how the current top results moved across the rounds (rank per round, from
    `earlier_ranks`; a round where an item was not among the candidates sits at the bottom)."""
    results = list(results)
    fig = Figure(figsize=(11, 4.2), dpi=100, layout="constrained")
    ax = fig.subplots()
    if not results:
        return empty(fig, ax, "round", "rank")
    rounds = len(results[0].breakdown.earlier_ranks) + 1
    history = [[*r.breakdown.earlier_ranks, r.rank] for r in results]
    worst = max(rank for ranks in history for rank in ranks if rank is not None)
    missing = 10 ** (math.log10(max(worst, 2)) + 0.25)  # below the worst rank, on the log axis
    cmap = matplotlib.colormaps["viridis"]
    for i, (result, ranks) in enumerate(zip(results, history)):
        ys = [missing if rank is None else rank for rank in ranks]
        bold = i == highlight
        ax.plot(range(1, rounds + 1), ys, marker="o", color=cmap(i / max(len(results) - 1, 1) * 0.9),
                linewidth=3.2 if bold else 1.6, alpha=1.0 if highlight is None or bold else 0.45,
                label=result_label(result))
    ax.set_yscale("log")
    ticks = [t for t in (1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000) if t <= worst]
    ax.set_yticks([*ticks, missing], [*map(str, ticks), "not in the\ncandidates"])
    ax.minorticks_off()
    ax.set_ylim(missing * 1.3, 0.8)  # rank 1 on top
    ax.set_xticks(range(1, rounds + 1))
    ax.set_xlim(0.8, rounds + 0.2)
    ax.set_xlabel("round")
    ax.set_ylabel("rank (log scale)")
    ax.set_title("Rank of the current top results after each round")
    ax.grid(alpha=0.3)
    legend(ax)
    return fig
