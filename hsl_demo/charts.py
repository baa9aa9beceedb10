"""The app's charts, drawn in the browser: the data of each explanation as a table for Gradio's
native plots (gr.BarPlot / gr.LinePlot / gr.ScatterPlot send rows and let Vega-Lite draw them,
with hover tooltips), so a request costs the server a few rows of JSON instead of a PNG.

Each mode defines its charts (hsl_demo/modes/*/charts.py) as `Chart`s: a `ChartSpec` (the plot
kind and its axes), a function from results to rows (a `ChartUpdate`), and its matplotlib twin
(hsl_demo/viz.py's parts; static figures for reports and `--charts png`). This module holds
what they share: the palette, the fixed orders of the axes, `component()` (the empty plot of a
spec), `as_update()` and the stacked-contribution rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

COLORS = {  # one colour per level / modality, in every chart and figure
    "global": "#8c8c8c",  # the backbone's global cosine (HSL) and HMRN's global level
    "level1": "#1f77b4",
    "level2": "#2ca02c",
    "level3": "#9467bd",
    "level4": "#8c564b",
    "image": "#ff7f0e",  # composed queries: the reference image side
    "text": "#7b3fb0",  # composed queries: the modification text side
    "local": "#17becf",
    "reasoning": "#d62728",
    "final": "#333333",
}
TOP = 8  # results shown in a chart
SELECTED = "▶ "  # the result clicked in the gallery, in every chart of its tab


@dataclass(frozen=True)
class ChartSpec:
    """How one chart is drawn: the plot kind and the columns on its axes."""

    kind: str  # "bar" (stacked by color), "line" or "scatter"
    x: str
    y: str
    color: str
    title: str
    x_title: str
    y_title: str
    tooltip: tuple[str, ...]
    sort: tuple[str, ...] | None = None  # the order of the x values
    color_map: tuple[tuple[str, str], ...] | None = None  # (color value, colour)


# Updates carry the rows alone: Gradio 6 keeps drawing a native plot's old rows when an update
# also sets its look (sort, colours, limits), so the look is fixed here, for every ranking.
MAX_RANK = 50  # the app's largest k
RESULT_ORDER = tuple(label for n in range(1, MAX_RANK + 1) for label in (f"#{n}", f"{SELECTED}#{n}"))
ROUND_ORDER = tuple(f"round {n}" for n in range(1, MAX_RANK + 1))
# One colour per result in the charts coloured by result: Okabe and Ito's eight, told apart also
# with colour-blind eyes (Gradio's default repeats near-identical hues), the top 8 all distinct.
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
RESULT_COLORS = tuple((label, OKABE_ITO[(n - 1) % len(OKABE_ITO)]) for n in range(1, MAX_RANK + 1)
                      for label in (f"#{n}", f"{SELECTED}#{n}"))


RANK_LABEL = "{:>3}"  # padded with spaces, so that the labels sort as the ranks do (" 2" < " 10")


@dataclass
class ChartUpdate:
    """A chart's rows, and its title when it tells something about them."""

    spec: ChartSpec
    frame: pd.DataFrame
    title: str | None = None


@dataclass(frozen=True)
class Chart:
    """One explanation of a ranking: its native plot (`spec`, and `rows(results, highlight,
    **extra)`) and its matplotlib twin (`figure(results, highlight)`, imported on use)."""

    spec: ChartSpec
    rows: Callable[..., ChartUpdate]
    figure: Callable[..., Any]


def shown(results: Sequence, selected: int | None = None, top: int = TOP) -> tuple[list, int | None]:
    """The results a chart shows (the top `top`, plus the selected one when it is further
    down) and the index of the selected one among them (None: nothing selected)."""
    rows = list(results[:top])
    if selected is None or not 0 <= selected < len(results):
        return rows, None
    if selected < top:
        return rows, selected
    return [*rows, results[selected]], len(rows)


def component(spec: ChartSpec, **kwargs):
    """The empty native plot of a chart (kwargs: label, elem_id, ...)."""
    import gradio as gr

    plot = {"bar": gr.BarPlot, "line": gr.LinePlot, "scatter": gr.ScatterPlot}[spec.kind]
    kwargs = {"label": spec.title, "show_label": True, **kwargs}
    return plot(x=spec.x, y=spec.y, color=spec.color, x_title=spec.x_title, y_title=spec.y_title,
                tooltip=[spec.x, spec.y, spec.color, *spec.tooltip],
                sort=list(spec.sort) if spec.sort else None,
                color_map=dict(spec.color_map) if spec.color_map else None, **kwargs)


def as_update(chart: ChartUpdate):
    """What a handler returns to show `chart`: its rows (and its title, when it has one)."""
    import gradio as gr

    if chart.title is None:
        return chart.frame
    plot = {"bar": gr.BarPlot, "line": gr.LinePlot, "scatter": gr.ScatterPlot}[chart.spec.kind]
    return plot(value=chart.frame, label=chart.title)


def result_labels(results: Sequence, highlight: int | None) -> list[str]:
    """Each result's name in a chart: its rank ("#3"; "▶ #3" when selected), short enough for
    an axis and a legend; its title is in the tooltip."""
    return [f"{SELECTED if i == highlight else ''}#{r.rank}" for i, r in enumerate(results)]


def contributions(spec: ChartSpec, results: Sequence, highlight: int | None,
                   terms: list[tuple[str, list[tuple[float, float]]]]) -> ChartUpdate:
    """A stacked bar per result, one segment per term: weight × similarity, so the segments of
    a bar add up to its final score. `terms`: (name, [(similarity, weight) per result])."""
    labels = result_labels(results, highlight)
    rows = []
    for term, values in terms:
        for label, result, (similarity, weight) in zip(labels, results, values):
            rows.append({"result": label, "term": term, "contribution": round(similarity * weight, 4),
                         "title": result.title, "similarity": round(similarity, 4), "weight": round(weight, 3),
                         "final": round(result.breakdown.final, 4)})
    frame = pd.DataFrame(rows, columns=["result", "term", "contribution", "title", "similarity", "weight", "final"])
    return ChartUpdate(spec, frame)
