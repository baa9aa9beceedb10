"""The parts of the static charts that explain a ranking (matplotlib, Agg backend, thread-safe):
each mode draws its figures from these (hsl_demo/modes/*/figures.py), as the matplotlib twins
of its browser charts. Figures are built with `Figure()`, not pyplot, so they are never
registered globally: nothing leaks and the server may draw from many threads. One colour per
level / modality everywhere (COLORS); the final score is always dark grey.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # no display: the charts are rendered to PNG for the browser

from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

GRANULARITY_HATCH = {"object": "", "image": "///"}  # object: solid, image: hatched
HIGHLIGHT = "#fff2a8"
LABEL_CHARS = 30


def result_label(result) -> str:
    title = result.title if len(result.title) <= LABEL_CHARS else result.title[:LABEL_CHARS - 1] + "…"
    return f"#{result.rank} {title}"


def figure(n_results: int, cols: int = 1, width_ratios: Sequence[float] | None = None) -> tuple[Figure, list[Axes]]:
    height = 1.4 + 0.55 * max(n_results, 1)
    fig = Figure(figsize=(11, height), dpi=100, layout="constrained")
    axes = fig.subplots(1, cols, width_ratios=width_ratios, squeeze=False)[0]
    return fig, list(axes)


def grouped_barh(ax: Axes, results: Sequence, series: list[tuple[str, list[float], dict]],
                  highlight: int | None, xlabel: str) -> None:
    """One group of horizontal bars per result (#1 on top), one bar per series."""
    n, m = len(results), len(series)
    height = 0.8 / m
    for j, (label, values, style) in enumerate(series):
        ys = [i + (j - (m - 1) / 2) * height for i in range(n)]
        ax.barh(ys, values, height=height, label=label, edgecolor="white", linewidth=0.5, **style)
    ax.set_yticks(range(n), [result_label(r) for r in results])
    ax.set_ylim(n - 0.5, -0.5)  # best result on top
    ax.set_xlabel(xlabel)
    ax.set_ylabel("result")
    ax.axvline(0, color="black", linewidth=0.6)
    ax.grid(axis="x", alpha=0.3)
    highlight_row(ax, highlight)


def highlight_row(ax: Axes, highlight: int | None) -> None:
    if highlight is None:
        return
    ax.axhspan(highlight - 0.5, highlight + 0.5, color=HIGHLIGHT, zorder=0)
    ax.get_yticklabels()[highlight].set_fontweight("bold")


def legend(ax: Axes) -> None:
    """The legend beside the plot, never over the bars."""
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def label_final(ax: Axes) -> None:
    """Write each result's final score at the end of its (last, final) bar."""
    ax.bar_label(ax.containers[-1], fmt="%.3f", padding=2, fontsize="x-small")


def zoom(ax: Axes, series: list[tuple[str, list[float], dict]]) -> None:
    """Similarities that all lie high (HSL's do) differ little: start the axis near the
    lowest, so the differences show, and say so in the label."""
    values = [v for _, vs, _ in series for v in vs]
    low = math.floor((min(values) - 0.05) * 10) / 10
    if low >= 0.2:
        ax.set_xlim(low, max(values) + 0.05)
        ax.set_xlabel(f"{ax.get_xlabel()}; the axis starts at {low:.1f}")


def empty(fig: Figure, ax: Axes, xlabel: str, ylabel: str) -> Figure:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.text(0.5, 0.5, "no results", ha="center", va="center", transform=ax.transAxes, color="grey")
    return fig
