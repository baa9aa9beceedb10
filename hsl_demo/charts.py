"""The app's charts, drawn in the browser: the data of each explanation as a table for Gradio's
native plots (gr.BarPlot / gr.LinePlot / gr.ScatterPlot send rows and let Vega-Lite draw them,
with hover tooltips), so a request costs the server a few rows of JSON instead of a PNG.

One function per chart, named as its matplotlib twin in hsl_demo/viz.py (which draws the same
explanations as static figures: README, reports, `--charts png`). Each returns a
`ChartUpdate` that `component()` turns into the plot component, or the update of one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
DRILL_TERMS = ("local", "global", "reasoning")


SPECS = {
    "hsl_chart": ChartSpec(
        "bar", "result", "contribution", "term",
        f"Why the top {TOP} ranked: each HSL term's weight × similarity (a bar adds up to the final score)",
        "result", "weight × similarity", ("title", "similarity", "weight", "final"), sort=RESULT_ORDER),
    "composed_chart": ChartSpec(
        "scatter", "similarity to the reference image", "similarity to the text", "result",
        f"The top {TOP} results: image side vs text side", "similarity to the reference image (cosine)",
        "similarity to the modification text (cosine)", ("title", "final", "query weights"),
        color_map=RESULT_COLORS),
    "drill_chart": ChartSpec(
        "bar", "result", "contribution", "term",
        f"Scores of the top {TOP} this round: local, global, reasoning, weight × similarity (a bar adds up to "
        "the final score)",
        "result", "weight × similarity", ("title", "similarity", "weight", "final"), sort=RESULT_ORDER,
        color_map=tuple((term, COLORS[term]) for term in DRILL_TERMS)),
    # Points, not lines: Gradio's line draws nothing for a single round. The rank is a label
    # (RANK_LABEL), so rank 1 is drawn at the top: Gradio cannot reverse a numeric axis.
    "rank_chart": ChartSpec(
        "scatter", "round", "rank", "result",
        f"Rank of the current top {TOP} after each round (1, the best, at the top; no point: not among "
        "that round's candidates)", "round", "rank", ("title", "query"), sort=ROUND_ORDER, color_map=RESULT_COLORS),
}
RANK_LABEL = "{:>3}"  # padded with spaces, so that the labels sort as the ranks do (" 2" < " 10")


@dataclass
class ChartUpdate:
    """A chart's rows, and its title when it tells something about them."""

    name: str
    frame: pd.DataFrame
    title: str | None = None


def shown(results: Sequence, selected: int | None = None, top: int = TOP) -> tuple[list, int | None]:
    """The results a chart shows (the top `top`, plus the selected one when it is further
    down) and the index of the selected one among them (None: nothing selected)."""
    rows = list(results[:top])
    if selected is None or not 0 <= selected < len(results):
        return rows, None
    if selected < top:
        return rows, selected
    return [*rows, results[selected]], len(rows)


def component(name: str, **kwargs):
    """The empty native plot for chart `name` (kwargs: label, elem_id, ...)."""
    import gradio as gr

    spec = SPECS[name]
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
    plot = {"bar": gr.BarPlot, "line": gr.LinePlot, "scatter": gr.ScatterPlot}[SPECS[chart.name].kind]
    return plot(value=chart.frame, label=chart.title)


def _labels(results: Sequence, highlight: int | None) -> list[str]:
    """Each result's name in a chart: its rank ("#3"; "▶ #3" when selected), short enough for
    an axis and a legend; its title is in the tooltip."""
    return [f"{SELECTED if i == highlight else ''}#{r.rank}" for i, r in enumerate(results)]


def _contributions(name: str, results: Sequence, highlight: int | None,
                   terms: list[tuple[str, list[tuple[float, float]]]]) -> ChartUpdate:
    """A stacked bar per result, one segment per term: weight × similarity, so the segments of
    a bar add up to its final score. `terms`: (name, [(similarity, weight) per result])."""
    labels = _labels(results, highlight)
    rows = []
    for term, values in terms:
        for label, result, (similarity, weight) in zip(labels, results, values):
            rows.append({"result": label, "term": term, "contribution": round(similarity * weight, 4),
                         "title": result.title, "similarity": round(similarity, 4), "weight": round(weight, 3),
                         "final": round(result.breakdown.final, 4)})
    frame = pd.DataFrame(rows, columns=["result", "term", "contribution", "title", "similarity", "weight", "final"])
    return ChartUpdate(name, frame)


def hsl_chart(results: Sequence, highlight: int | None = None) -> ChartUpdate:
    """Describe: each HSL term's contribution (its weight × its similarity) to every result's
    final score: the global cosine, and object and image granularity at every level, those
    that carry weight (the breakdown table has them all)."""
    results = list(results)
    if not results:
        return _contributions("hsl_chart", [], None, [])
    terms = [("global", [(r.breakdown.global_.similarity, r.breakdown.global_.weight) for r in results])]
    for n, level in enumerate(results[0].breakdown.levels, 1):
        for granularity in level:
            terms.append((f"level{n} · {granularity}", [(r.breakdown.levels[n - 1][granularity].similarity,
                                                         r.breakdown.levels[n - 1][granularity].weight)
                                                        for r in results]))
    # a term weighted zero adds nothing to any bar: it would only be a legend entry never drawn
    weighted = [(term, values) for term, values in terms if any(weight for _, weight in values)]
    return _contributions("hsl_chart", results, highlight, weighted)


def composed_chart(results: Sequence, highlight: int | None = None) -> ChartUpdate:
    """Modify: each result as a point, its similarity to the reference image across and to the
    modification text up; the query's own image and text weights in the title and tooltips."""
    results = list(results)
    spec = SPECS["composed_chart"]
    labels = _labels(results, highlight)
    weights = ""
    if results:
        first = results[0].breakdown
        weights = f"image {first.w_image:.2f} · text {first.w_text:.2f}"
    frame = pd.DataFrame(
        [{spec.x: round(r.breakdown.image_similarity, 4), spec.y: round(r.breakdown.text_similarity, 4),
          "result": label, "title": r.title, "final": round(r.breakdown.final, 4), "query weights": weights}
         for label, r in zip(labels, results)],
        columns=[spec.x, spec.y, "result", "title", "final", "query weights"])
    title = f"{spec.title} (query weights: {weights})" if weights else spec.title
    return ChartUpdate("composed_chart", frame, title=title)


def drill_chart(results: Sequence, highlight: int | None = None) -> ChartUpdate:
    """Drill down: the local, global and reasoning contributions to each result's final score
    this round (weight × similarity; the reasoning weight grows with the round)."""
    results = list(results)
    parts = {"local": lambda b: b.local, "global": lambda b: b.global_, "reasoning": lambda b: b.reasoning}
    terms = [(name, [(parts[name](r.breakdown).similarity, parts[name](r.breakdown).weight) for r in results])
             for name in DRILL_TERMS] if results else []
    return _contributions("drill_chart", results, highlight, terms)


def rank_chart(results: Sequence, highlight: int | None = None, queries: Sequence[str] = ()) -> ChartUpdate:
    """Drill down: the rank of the current top results after every round (a round where a
    result was not among the candidates has no point). `queries`: each round's query, shown
    in the tooltip."""
    results = list(results)
    labels = _labels(results, highlight)
    rounds = len(results[0].breakdown.earlier_ranks) + 1 if results else 0
    names = [f"round {n}" for n in range(1, rounds + 1)]  # categories, so the axis shows whole rounds
    rows = []
    for label, r in zip(labels, results):
        for n, rank in enumerate([*r.breakdown.earlier_ranks, r.rank], 1):
            if rank is not None:
                rows.append({"round": names[n - 1], "rank": RANK_LABEL.format(rank), "result": label, "title": r.title,
                             "query": queries[n - 1] if n <= len(queries) else ""})
    return ChartUpdate("rank_chart", pd.DataFrame(rows, columns=["round", "rank", "result", "title", "query"]))
