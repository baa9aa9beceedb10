"""Describe's chart, drawn in the browser: each HSL term's contribution to every result's score."""

from __future__ import annotations

from collections.abc import Sequence

from ...charts import RESULT_ORDER, TOP, Chart, ChartSpec, ChartUpdate, contributions

SPEC = ChartSpec(
    "bar", "result", "contribution", "term",
    f"Why the top {TOP} ranked: each HSL term's weight × similarity (a bar adds up to the final score)",
    "result", "weight × similarity", ("title", "similarity", "weight", "final"), sort=RESULT_ORDER)


def hsl_rows(results: Sequence, highlight: int | None = None) -> ChartUpdate:
    """Each HSL term's contribution (its weight × its similarity) to every result's final
    score: the global cosine, and object and image granularity at every level, those that
    carry weight (the breakdown table has them all)."""
    results = list(results)
    if not results:
        return contributions(SPEC, [], None, [])
    terms = [("global", [(r.breakdown.global_.similarity, r.breakdown.global_.weight) for r in results])]
    for n, level in enumerate(results[0].breakdown.levels, 1):
        for granularity in level:
            terms.append((f"level{n} · {granularity}", [(r.breakdown.levels[n - 1][granularity].similarity,
                                                         r.breakdown.levels[n - 1][granularity].weight)
                                                        for r in results]))
    # a term weighted zero adds nothing to any bar: it would only be a legend entry never drawn
    weighted = [(term, values) for term, values in terms if any(weight for _, weight in values)]
    return contributions(SPEC, results, highlight, weighted)


def hsl_figure(results: Sequence, highlight: int | None = None):
    from .figures import hsl_figure  # matplotlib, imported only when PNG charts are asked for

    return hsl_figure(results, highlight)


CHART = Chart(SPEC, hsl_rows, hsl_figure)
