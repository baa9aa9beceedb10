"""Modify's static chart (matplotlib): the twin of its browser chart (charts.py)."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure

from ...charts import COLORS
from ...viz import empty, figure, grouped_barh, label_final, legend


def composed_figure(results: Sequence, highlight: int | None = None) -> Figure:
    """Modify: the query's image vs text weight, and each result's similarity to the
    reference image and to the modification text (and its final score)."""
    results = list(results)
    fig, (wax, ax) = figure(len(results), cols=2, width_ratios=[1, 4])
    if not results:
        empty(fig, wax, "query side", "weight")
        return empty(fig, ax, "similarity", "result")
    first = results[0].breakdown
    weights = [first.w_image, first.w_text]
    bars = wax.bar(["image", "text"], weights, color=[COLORS["image"], COLORS["text"]])
    wax.bar_label(bars, fmt="%.2f")
    wax.set_ylim(0, 1.1)
    wax.set_xlabel("query side")
    wax.set_ylabel("weight in the query")
    wax.set_title("Query weights")
    series = [
        ("similarity to the reference image", [r.breakdown.image_similarity for r in results],
         {"color": COLORS["image"]}),
        ("similarity to the text", [r.breakdown.text_similarity for r in results], {"color": COLORS["text"]}),
        ("final (to the composed query)", [r.breakdown.final for r in results], {"color": COLORS["final"]}),
    ]
    grouped_barh(ax, results, series, highlight, "similarity (cosine)")
    label_final(ax)
    ax.set_title("Each result: image side vs text side")
    legend(ax)
    return fig
