"""Charts that explain a ranking (matplotlib, Agg backend, thread-safe).

Every function takes search results (SearchResult objects, whose `breakdown` explains the
score; one breakdown type per mode, hsl_demo/modes/) and returns a matplotlib Figure. Figures
are built with `Figure()`, not pyplot, so
they are never registered globally: nothing leaks and the server may draw from many threads.
One colour per level / modality everywhere (COLORS); the final score is always dark grey.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # no display: the charts are rendered to PNG for the browser

from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .charts import COLORS  # noqa: E402  (one palette for the browser charts and these figures)

GRANULARITY_HATCH = {"object": "", "image": "///"}  # object: solid, image: hatched
HIGHLIGHT = "#fff2a8"
LABEL_CHARS = 30


def _label(result) -> str:
    title = result.title if len(result.title) <= LABEL_CHARS else result.title[:LABEL_CHARS - 1] + "…"
    return f"#{result.rank} {title}"


def _figure(n_results: int, cols: int = 1, width_ratios: Sequence[float] | None = None) -> tuple[Figure, list[Axes]]:
    height = 1.4 + 0.55 * max(n_results, 1)
    fig = Figure(figsize=(11, height), dpi=100, layout="constrained")
    axes = fig.subplots(1, cols, width_ratios=width_ratios, squeeze=False)[0]
    return fig, list(axes)


def _grouped_barh(ax: Axes, results: Sequence, series: list[tuple[str, list[float], dict]],
                  highlight: int | None, xlabel: str) -> None:
    """One group of horizontal bars per result (#1 on top), one bar per series."""
    n, m = len(results), len(series)
    height = 0.8 / m
    for j, (label, values, style) in enumerate(series):
        ys = [i + (j - (m - 1) / 2) * height for i in range(n)]
        ax.barh(ys, values, height=height, label=label, edgecolor="white", linewidth=0.5, **style)
    ax.set_yticks(range(n), [_label(r) for r in results])
    ax.set_ylim(n - 0.5, -0.5)  # best result on top
    ax.set_xlabel(xlabel)
    ax.set_ylabel("result")
    ax.axvline(0, color="black", linewidth=0.6)
    ax.grid(axis="x", alpha=0.3)
    _highlight_row(ax, highlight)


def _highlight_row(ax: Axes, highlight: int | None) -> None:
    if highlight is None:
        return
    ax.axhspan(highlight - 0.5, highlight + 0.5, color=HIGHLIGHT, zorder=0)
    ax.get_yticklabels()[highlight].set_fontweight("bold")


def _legend(ax: Axes) -> None:
    """The legend beside the plot, never over the bars."""
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def _label_final(ax: Axes) -> None:
    """Write each result's final score at the end of its (last, final) bar."""
    ax.bar_label(ax.containers[-1], fmt="%.3f", padding=2, fontsize="x-small")


def _zoom(ax: Axes, series: list[tuple[str, list[float], dict]]) -> None:
    """Similarities that all lie high (HSL's do) differ little: start the axis near the
    lowest, so the differences show, and say so in the label."""
    values = [v for _, vs, _ in series for v in vs]
    low = math.floor((min(values) - 0.05) * 10) / 10
    if low >= 0.2:
        ax.set_xlim(low, max(values) + 0.05)
        ax.set_xlabel(f"{ax.get_xlabel()}; the axis starts at {low:.1f}")


def hsl_chart(results: Sequence, highlight: int | None = None) -> Figure:
    """Describe: per result, the similarity of each HSL term (global; object and image
    granularity at every level) and the final score. The learned weights are in the legend."""
    results = list(results)
    fig, (ax,) = _figure(len(results))
    if not results:
        return _empty(fig, ax, "similarity", "result")
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
    _grouped_barh(ax, results, series, highlight, "similarity (cosine)")
    _zoom(ax, series)
    _label_final(ax)
    ax.set_title("Why they ranked: similarity per level and granularity")
    _legend(ax)
    return fig


def composed_chart(results: Sequence, highlight: int | None = None) -> Figure:
    """Modify: the query's image vs text weight, and each result's similarity to the
    reference image and to the modification text (and its final score)."""
    results = list(results)
    fig, (wax, ax) = _figure(len(results), cols=2, width_ratios=[1, 4])
    if not results:
        _empty(fig, wax, "query side", "weight")
        return _empty(fig, ax, "similarity", "result")
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
    _grouped_barh(ax, results, series, highlight, "similarity (cosine)")
    _label_final(ax)
    ax.set_title("Each result: image side vs text side")
    _legend(ax)
    return fig


def drill_chart(results: Sequence, highlight: int | None = None) -> Figure:
    """Drill down: local / global / reasoning similarity of each result and its final score."""
    results = list(results)
    fig, (ax,) = _figure(len(results))
    if not results:
        return _empty(fig, ax, "similarity", "result")
    terms = {"local": lambda b: b.local, "global": lambda b: b.global_, "reasoning": lambda b: b.reasoning}
    first = results[0].breakdown
    series = [(f"{name} (w {term(first).weight:.2f})", [term(r.breakdown).similarity for r in results],
               {"color": COLORS[name]}) for name, term in terms.items()]
    series.append(("final", [r.breakdown.final for r in results], {"color": COLORS["final"]}))
    _grouped_barh(ax, results, series, highlight, "similarity")
    _label_final(ax)
    ax.set_title("Scores of this round: local, global, reasoning")
    _legend(ax)
    return fig


def rank_chart(results: Sequence, highlight: int | None = None) -> Figure:
    """Drill down: how the current top results moved across the rounds (rank per round, from
    `earlier_ranks`; a round where an item was not among the candidates sits at the bottom)."""
    results = list(results)
    fig = Figure(figsize=(11, 4.2), dpi=100, layout="constrained")
    ax = fig.subplots()
    if not results:
        return _empty(fig, ax, "round", "rank")
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
                label=_label(result))
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
    _legend(ax)
    return fig


def _empty(fig: Figure, ax: Axes, xlabel: str, ylabel: str) -> Figure:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.text(0.5, 0.5, "no results", ha="center", va="center", transform=ax.transAxes, color="grey")
    return fig
