"""Describe's tab: a description in, a gallery of results with the region the HSL object term
matched marked on each, a chart and a table of every term, and a link (?q=...&k=N)."""

from __future__ import annotations

import gradio as gr

from ...results import SearchResult
from ...widgets import (
    PRIVATE,
    QUIET,
    TabContext,
    TabParts,
    as_messages,
    gallery_items,
    link_box,
    link_k,
    message,
    notice_markdown,
    results_gallery,
    results_slider,
    search_link,
    selected_index,
    show_notices,
    vocabulary_line,
)
from .charts import CHART

EXAMPLES = ["green dotted scarf", "red striped t-shirt", "a backpack in blue with checks", "plain white sneaker"]
LINK_KEY = "q"


def breakdown_table(results: list[SearchResult]) -> dict:
    """One row per result: its final score and each HSL term as "similarity × weight"."""
    headers = ["rank", "title", "final", "global"]
    rows = []
    for r in results:
        terms = {"global": r.breakdown.global_}
        for n, level in enumerate(r.breakdown.levels, 1):
            terms.update({f"level{n} {g}": term for g, term in level.items()})
        headers += [name for name in terms if name not in headers]
        rows.append([r.rank, r.title, round(r.score, 4)]
                    + [f"{t.similarity:.3f} × {t.weight:.2f}" for t in terms.values()])
    return {"headers": headers, "data": rows}


def check_description(text: str | None) -> None:
    """Before a search from the page: an empty description is one message, and the search does
    not run (the last results stay, no output shows an error). The search itself refuses it
    too, for API callers."""
    if not (text or "").strip():
        raise message("empty query: type a description of the product")


class DescribeTab:
    """The tab's handlers: small functions from component values to component values. (Named as
    the API and MCP tools are: Gradio names a tool after its function.)"""

    def __init__(self, context: TabContext):
        self.context = context
        self.describe = context.gpu(self.describe)  # runs the model

    def describe(self, text: str, k: float, request: gr.Request = None):
        """Search the product catalog with a description of the product wanted (the HSL head
        ranks by object- and image-level similarity).

        Args:
            text: what the product looks like, e.g. "red striped t-shirt" or "green dotted scarf"
            k: how many results to return, from 1 to 50
        Returns:
            The results (captioned "#rank title · score"), their chart and table, and a link to the search.
        """
        # returns (gallery, chart, table, results, notices, link): results and notices are gr.State,
        # not in the API's outputs
        with as_messages():
            response = self.context.retriever().search_text(text, k=int(k))
        results = response.results
        link = search_link(request, **{LINK_KEY: " ".join(text.split()), "k": str(int(k))})
        return (gallery_items(results, self.context.thumbnails), self.context.charts.render(CHART, results),
                breakdown_table(results), results, notice_markdown(response.notices), link)

    def describe_select(self, results: list[SearchResult] | None, evt: gr.SelectData):
        selected = selected_index(evt, len(results or []))
        return gr.skip() if selected is None else self.context.charts.render(CHART, results, selected)

    def build(self) -> TabParts:
        with gr.Row(equal_height=True):
            text = gr.Textbox(label="Description", placeholder="e.g. green dotted scarf", scale=4,
                              min_width=240, elem_id="describe-text")
            k = results_slider(scale=1, min_width=160)
        search = gr.Button("Search", variant="primary", elem_id="describe-search")
        knows = gr.Markdown("", elem_id="describe-knows")
        examples = gr.Examples(EXAMPLES, inputs=[text], label="Examples (click one to search)",
                               api_visibility="private", elem_id="describe-examples")
        notice = gr.Markdown("", elem_id="describe-notice", elem_classes="notice")
        gallery = results_gallery("describe-gallery")
        gr.Markdown("<small>The box on each photo: the region the HSL object term matched best (what that "
                    "term looks at; the chart shows how much it counts). Click a result to see it larger "
                    "and highlight it in the chart.</small>")
        chart = self.context.charts.component(CHART, elem_id="describe-chart")
        with gr.Accordion("Scores as a table: similarity × weight per level and granularity", open=False):
            table = gr.Dataframe(label="Breakdown", interactive=False, wrap=True)
        link = link_box("describe-link")
        found, notes = gr.State(), gr.State()
        outputs = [gallery, chart, table, found, notes, link]
        # An empty description is refused before the search (check_description): the last
        # results stay. (Not a Gradio validator: it answers a malformed API call's join
        # with an HTTP error instead of a message.)
        checked = {"fn": check_description, "inputs": [text], "outputs": None, **QUIET}
        show_notices(search.click(**checked).success(self.describe, [text, k], outputs, api_name="describe"),
                     notes, notice, gallery)
        for event in (text.submit(**checked).success(self.describe, [text, k], outputs, **PRIVATE),
                      examples.load_input_event.then(self.describe, [text, k], outputs, **PRIVATE)):
            show_notices(event, notes, notice, gallery)
        gallery.select(self.describe_select, [found], [chart], **PRIVATE)

        def opened(params: dict[str, str] | None, request: gr.Request | None) -> dict:
            updates: dict = {knows: vocabulary_line(self.context.catalog, self.context.retriever().backbone.vocabulary)}
            if params is not None:
                updates |= dict(zip(outputs, self.describe(params[LINK_KEY], link_k(params), request)))
                updates[notice] = updates[notes]
            return updates

        def link_inputs(params: dict[str, str]) -> dict:
            return {text: params[LINK_KEY], k: link_k(params)}

        return TabParts(notice, LINK_KEY, opened, link_inputs, outputs=[text, k, knows, *outputs])


def build(context: TabContext) -> TabParts:
    """The tab, built inside the page's current gr.Tab."""
    return DescribeTab(context).build()
