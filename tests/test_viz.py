"""The explanation charts: a Figure with labelled axes, one bar per result and term, one
line per result across rounds, from hand-made results (no model needed)."""

from pathlib import Path

import matplotlib
import pytest
from matplotlib.container import BarContainer
from matplotlib.figure import Figure

from hsl_demo import charts
from hsl_demo.modes.describe import HslBreakdown
from hsl_demo.modes.describe import charts as describe_charts
from hsl_demo.modes.describe import figures as describe_figures
from hsl_demo.modes.drill_down import DrillDownBreakdown
from hsl_demo.modes.drill_down import charts as drill_charts
from hsl_demo.modes.drill_down import figures as drill_figures
from hsl_demo.modes.modify import ComposedBreakdown
from hsl_demo.modes.modify import charts as modify_charts
from hsl_demo.modes.modify import figures as modify_figures
from hsl_demo.results import SearchResult, Term


def result(rank: int, breakdown) -> SearchResult:
    return SearchResult(rank=rank, id=f"p{rank:05d}", title=f"Item {rank} with a rather long product title",
                        score=breakdown.final, image=Path("x.jpg"), breakdown=breakdown)


def hsl_results(n: int) -> list[SearchResult]:
    return [result(i + 1, HslBreakdown(
        Term(0.7 - 0.01 * i, 0.05),
        [{"object": Term(0.6, 0.0), "image": Term(0.65, 0.2)},
         {"object": Term(0.7, 0.0), "image": Term(0.72 - 0.02 * i, 0.75)}],
        0.705 - 0.0155 * i)) for i in range(n)]  # the weighted sum of the terms


def composed_results(n: int) -> list[SearchResult]:
    return [result(i + 1, ComposedBreakdown(0.62, 0.38, 0.8 - 0.05 * i, 0.1 + 0.02 * i, 0.53 - 0.01 * i))
            for i in range(n)]


def drill_results(n: int, rounds: int) -> list[SearchResult]:
    out = []
    for i in range(n):
        earlier = [None if (i + r) % 3 == 0 else 3 * i + r + 1 for r in range(rounds - 1)]
        out.append(result(i + 1, DrillDownBreakdown(Term(0.6 - 0.01 * i, 0.6), Term(0.33, 0.1), Term(0.45, 0.3),
                                                    [0.5] * rounds, 0.4 - 0.01 * i, earlier)))
    return out


def bars(ax) -> int:
    return sum(len(c) for c in ax.containers if isinstance(c, BarContainer))


def assert_labelled(fig: Figure) -> None:
    assert isinstance(fig, Figure)
    for ax in fig.axes:
        assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title(), ax


def test_the_backend_is_agg():
    assert matplotlib.get_backend().lower() == "agg"


@pytest.mark.parametrize("n", [1, 5])
def test_hsl_chart_has_a_bar_per_result_and_term(n):
    fig = describe_figures.hsl_figure(hsl_results(n))
    assert_labelled(fig)
    (ax,) = fig.axes
    assert bars(ax) == n * 6  # global, 2 levels x 2 granularities, final
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[0] == "global (w 0.05)" and "level2 · image (w 0.75)" in legend and legend[-1].startswith("final")
    assert [t.get_text() for t in ax.get_yticklabels()][0].startswith("#1 Item 1")


def test_composed_chart_shows_the_query_weights_and_both_sides_per_result():
    fig = modify_figures.composed_figure(composed_results(4))
    assert_labelled(fig)
    weights, per_result = fig.axes
    assert bars(weights) == 2
    assert [round(b.get_height(), 2) for b in weights.containers[0]] == [0.62, 0.38]
    assert bars(per_result) == 4 * 3  # image side, text side, final


def test_drill_chart_has_local_global_reasoning_and_final_per_result():
    fig = drill_figures.drill_figure(drill_results(6, rounds=3))
    assert_labelled(fig)
    assert bars(fig.axes[0]) == 6 * 4


@pytest.mark.parametrize("rounds", [1, 3])
def test_rank_chart_has_a_line_per_result_and_a_point_per_round(rounds):
    fig = drill_figures.rank_figure(drill_results(5, rounds))
    assert_labelled(fig)
    (ax,) = fig.axes
    assert len(ax.lines) == 5
    assert all(len(line.get_xdata()) == rounds for line in ax.lines)
    assert list(ax.lines[0].get_xdata()) == list(range(1, rounds + 1))
    assert ax.lines[0].get_ydata()[-1] == 1  # the current rank ends each line
    if rounds > 1:  # a round where the item was not a candidate sits on the "not in the candidates" row
        labels = [t.get_text() for t in ax.get_yticklabels()]
        assert "not in the\ncandidates" in labels
        assert ax.lines[0].get_ydata()[0] > max(r for r in ax.lines[1].get_ydata())


def test_a_selected_result_is_highlighted_even_below_the_top():
    results = hsl_results(12)
    shown, index = charts.shown(results, 10)
    assert len(shown) == charts.TOP + 1 and shown[index] is results[10]
    assert charts.shown(results, 2) == (results[:charts.TOP], 2)
    assert charts.shown(results, None) == (results[:charts.TOP], None)
    fig = describe_figures.hsl_figure(shown, index)
    label = fig.axes[0].get_yticklabels()[index]
    assert label.get_text().startswith("#11") and label.get_fontweight() == "bold"
    fig = drill_figures.rank_figure(drill_results(4, 2), highlight=1)
    assert fig.axes[0].lines[1].get_linewidth() > fig.axes[0].lines[0].get_linewidth()


@pytest.mark.parametrize("chart", [describe_figures.hsl_figure, modify_figures.composed_figure,
                                   drill_figures.drill_figure, drill_figures.rank_figure])
def test_no_results_is_an_empty_labelled_chart(chart):
    fig = chart([])
    for ax in fig.axes:
        assert ax.get_xlabel() and ax.get_ylabel()


def test_figures_are_not_kept_by_pyplot():
    import matplotlib.pyplot as plt

    before = len(plt.get_fignums())
    for _ in range(3):
        describe_figures.hsl_figure(hsl_results(3))
        drill_figures.rank_figure(drill_results(3, 2))
    assert len(plt.get_fignums()) == before


# The browser charts (hsl_demo.charts): rows for Gradio's native plots ----------------------


def test_browser_bar_segments_add_up_to_the_final_score():
    chart = describe_charts.hsl_rows(hsl_results(3))
    frame = chart.frame
    assert list(frame["result"].unique()) == ["#1", "#2", "#3"]
    # global and 2 levels x 2 granularities per result, but the object terms weigh 0 here: not
    # drawn, so not in the legend either
    assert len(frame) == 3 * 3 and not frame["term"].str.endswith("object").any()
    for _, rows in frame.groupby("result"):
        assert rows["contribution"].sum() == pytest.approx(rows["final"].iloc[0], abs=2e-3)
    assert set(frame[frame["term"] == "level2 · image"]["weight"]) == {0.75}  # weights in the tooltip
    drill = drill_charts.drill_rows(drill_results(2, 3)).frame
    assert list(drill["term"].unique()) == ["local", "global", "reasoning"]
    # the x order is fixed when the page is built: ranks in order, a selected one in its place
    assert charts.RESULT_ORDER[:4] == ("#1", "▶ #1", "#2", "▶ #2") and "#50" in charts.RESULT_ORDER


def test_browser_rank_chart_reverses_the_axis_and_skips_missing_rounds():
    results = drill_results(4, 3)
    chart = drill_charts.rank_rows(results, highlight=1, queries=["a", "b", "c"])
    frame = chart.frame
    missing = sum(rank is None for r in results for rank in r.breakdown.earlier_ranks)
    assert missing and len(frame) == 4 * 3 - missing  # no point where an item was not a candidate
    assert set(frame["round"]) == {"round 1", "round 2", "round 3"}
    assert charts.ROUND_ORDER[:3] == ("round 1", "round 2", "round 3")  # the x order, also past round 9
    assert set(frame[frame["round"] == "round 3"]["query"]) == {"c"}
    assert "▶ #2" in set(frame["result"])
    # ranks as labels that sort as the numbers do: rank 1 is drawn at the top
    assert sorted(set(frame["rank"]), key=str) == sorted(set(frame["rank"]), key=int)


@pytest.mark.parametrize("chart", [describe_charts.CHART, modify_charts.CHART, drill_charts.CHART,
                                   drill_charts.RANK_CHART], ids=lambda c: c.rows.__name__)
def test_browser_charts_of_no_results_are_empty_tables(chart):
    update = chart.rows([])
    assert len(update.frame) == 0 and list(update.frame.columns) and update.spec is chart.spec
    assert charts.as_update(update) is not None
