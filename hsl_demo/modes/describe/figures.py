"""Describe's static chart (matplotlib): the twin of its browser chart (charts.py)."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure

from ...charts import COLORS
from ...viz import empty, figure, grouped_barh, label_final, legend, zoom

GRANULARITY_HATCH = {"object": "", "image": "///"}  # object: solid, image: hatched


def hsl_figure(results: Sequence, highlight: int | None = None) -> Figure:
    """Describe: per result, the similarity of each HSL term (global; object and image
    granularity at every level) and the final score. The learned weights are in the legend."""
    results = list(results)
    fig, (ax,) = figure(len(results))
    if not results:
        return empty(fig, ax, "similarity", "result")
    first = results[0].breakdown
    series = [(f"global (w {first.global_.weight:.2f})",
               [r.breakdown.global_.similarity for r in results], {"color": COLORS["global"]})]
    for n, level in enumerate(first.levels, 1):
        for granularity, term in level.items():
            series.append((
                f"level{n} · {granularity} (w {term.weight:.2f})",
                [r.breakdown.levels[n - 1][granularity].similarity for r in results],
                {"color": COLORS.get(f"level{n}", COLORS["level4"]), "hatch": GRANULARITY_HATCH.get(granularity, "..")},
            ))
    series.append(("final (Σ w × similarity)", [r.breakdown.final for r in results], {"color": COLORS["final"]}))
    grouped_barh(ax, results, series, highlight, "similarity (cosine)")
    zoom(ax, series)
    label_final(ax)
    ax.set_title("Why they ranked: similarity per level and granularity")
    legend(ax)
    return fig
