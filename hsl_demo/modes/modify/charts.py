"""Modify's chart, drawn in the browser: each result's similarity to the reference and to the text."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from ...charts import RESULT_COLORS, TOP, Chart, ChartSpec, ChartUpdate, result_labels

SPEC = ChartSpec(
    "scatter", "similarity to the reference image", "similarity to the text", "result",
    f"The top {TOP} results: image side vs text side", "similarity to the reference image (cosine)",
    "similarity to the modification text (cosine)", ("title", "final", "query weights"), color_map=RESULT_COLORS)


def composed_rows(results: Sequence, highlight: int | None = None) -> ChartUpdate:
    """Each result as a point, its similarity to the reference image across and to the
    modification text up; the query's own image and text weights in the title and tooltips."""
    results = list(results)
    labels = result_labels(results, highlight)
    weights = ""
    if results:
        first = results[0].breakdown
        weights = f"image {first.w_image:.2f} · text {first.w_text:.2f}"
    frame = pd.DataFrame(
        [{SPEC.x: round(r.breakdown.image_similarity, 4), SPEC.y: round(r.breakdown.text_similarity, 4),
          "result": label, "title": r.title, "final": round(r.breakdown.final, 4), "query weights": weights}
         for label, r in zip(labels, results)],
        columns=[SPEC.x, SPEC.y, "result", "title", "final", "query weights"])
    title = f"{SPEC.title} (query weights: {weights})" if weights else SPEC.title
    return ChartUpdate(SPEC, frame, title=title)


def composed_figure(results: Sequence, highlight: int | None = None):
    from .figures import composed_figure  # matplotlib, imported only when PNG charts are asked for

    return composed_figure(results, highlight)


CHART = Chart(SPEC, composed_rows, composed_figure)
