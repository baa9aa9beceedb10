"""Drill down's tab: a look described one product per round (Add, Undo, Reset), the looks
found after each round with the region each query matched, the score and rank charts, and a
link (?rounds=a|b|c)."""

from __future__ import annotations

import gradio as gr

from ...widgets import (
    PRIVATE,
    QUIET,
    TabContext,
    TabParts,
    as_messages,
    gallery_items,
    link_box,
    markdown_text,
    notice_markdown,
    results_gallery,
    search_link,
    selected_index,
    show_notices,
    vocabulary_line,
)
from .charts import CHART, RANK_CHART

# A drill-down session (pipeline.DrillDownSession) as handlers take it: Gradio reads the
# handlers' type hints at run time (to pass gr.Request and gr.SelectData), before the module
# that defines it, which needs torch, is imported.
Session = object

EXAMPLES = ["a red handbag", "white sneakers", "a checked scarf", "yellow dotted sandals"]
K = 12  # results per round
LINK_KEY = "rounds"
ROUNDS_SEPARATOR = "|"  # between the queries of a link's ?rounds=


def rounds_markdown(session: Session | None) -> str:
    if session is None or not session.rounds:
        return "*No rounds yet: describe one product of the look, e.g. “a red handbag”.*"
    lines = [f"**Rounds** ({len(session.rounds)} of at most {session.max_rounds}):", ""]
    backbone = session.retriever.backbone
    for rd in session.rounds:
        best = rd.results[0] if rd.results else None
        # a round in words the model never saw still ranks (and skews the rounds after it): said
        # here, next to the Undo that drops it
        unknown = "" if not backbone.unknown_words_notice(rd.queries[-1]) else \
            " — ⚠ *words the model does not know*" + (" (Undo drops it)" if rd.round == len(session.rounds) else "")
        lines.append(f"{rd.round}. {markdown_text(rd.queries[-1])}"
                     + (f" — best: {markdown_text(best.id)} ({best.score:.3f})" if best else "") + unknown)
    return "\n".join(lines)


def link_rounds(params: dict[str, str]) -> list[str]:
    return [t for t in params.get(LINK_KEY, "").split(ROUNDS_SEPARATOR) if t.strip()]


class DrillDownTab:
    """The tab's handlers. Each search returns (gallery, rounds, scores chart, rank chart, link,
    session, notices): the last two are gr.State, not in the API. (Named as the API and MCP tools
    are: Gradio names a tool after its function.)"""

    def __init__(self, context: TabContext):
        self.context = context
        for name in ("drill_add", "drill_undo", "run_link_rounds"):  # the ones that run the model
            setattr(self, name, context.gpu(getattr(self, name)))

    def new_session(self):
        return self.context.retriever().session(K)

    def drill_add(self, text: str | None, session: Session | None, request: gr.Request = None):
        """Drill down in the looks catalog: add one product of the look as a new round and re-rank
        the looks by all the rounds so far (HMRN). A call without the app's session starts a new one.

        Args:
            text: one product of the look, e.g. "a red handbag" (then "white sneakers" in the next round)
        Returns:
            The looks found, the rounds so far, their score and rank charts and a link.
        """
        session = session or self.new_session()
        with as_messages():
            notices = session.add(text).notices
        return *self.view(session, request), session, notice_markdown(notices)

    def drill_undo(self, session: Session | None, request: gr.Request = None):
        session = session or self.new_session()
        notices = session.undo().notices
        return *self.view(session, request), session, notice_markdown(notices)

    def drill_reset(self, session: Session | None, request: gr.Request = None):
        if session is not None:
            session.reset()
        return *self.view(session, request), session, ""

    def drill_select(self, session: Session | None, evt: gr.SelectData):
        shown = len(session.current.results) if session is not None and session.current is not None else 0
        selected = selected_index(evt, shown)
        return (gr.skip(), gr.skip()) if selected is None else self.charts(session, selected)

    def view(self, session: Session | None, request: gr.Request | None = None) -> tuple:
        results = session.current.results if session is not None and session.current else []
        link = search_link(request, **{LINK_KEY: ROUNDS_SEPARATOR.join(session.queries)}) if results else ""
        return (gallery_items(results, self.context.thumbnails), rounds_markdown(session), *self.charts(session),
                link)

    def charts(self, session: Session | None, selected: int | None = None) -> tuple:
        renderer = self.context.charts
        if session is None or session.current is None:  # empty native plots: None leaves Gradio's
            # plot drawing into a removed element (a page error on Reset)
            if not renderer.native:
                return None, None
            return renderer.render(CHART, []), renderer.render(RANK_CHART, [])
        results = session.current.results
        extra = {"queries": session.queries} if renderer.native else {}
        return renderer.render(CHART, results, selected), renderer.render(RANK_CHART, results, selected, **extra)

    def run_link_rounds(self, rounds: list[str], request: gr.Request | None = None):
        """Drill down through a link's rounds, one per round, in a fresh session."""
        session = self.new_session()
        notices: list[str] = []
        with as_messages():
            for text in rounds[: session.max_rounds]:
                notices += session.add(text).notices
        return *self.view(session, request), session, notice_markdown(notices)

    def build(self) -> TabParts:
        gr.Markdown("Describe a look one product at a time: each round adds a region query and re-ranks "
                    "the looks with all the queries so far.")
        with gr.Row(equal_height=True):
            query = gr.Textbox(label="Add a product of the look", placeholder="e.g. a red handbag", scale=4,
                               min_width=240, elem_id="drill-query")
            with gr.Row(scale=1):
                add = gr.Button("Add", variant="primary", min_width=60, elem_id="drill-add")
                undo = gr.Button("Undo", min_width=60, elem_id="drill-undo")
                reset = gr.Button("Reset", min_width=60, elem_id="drill-reset")
        knows = gr.Markdown("", elem_id="drill-knows")
        examples = gr.Examples(EXAMPLES, inputs=[query], label="Examples (click one to add it)",
                               api_visibility="private", elem_id="drill-examples")
        rounds = gr.Markdown(rounds_markdown(None), label="Rounds", elem_id="drill-rounds")
        notice = gr.Markdown("", elem_id="drill-notice", elem_classes="notice")
        gallery = results_gallery("drill-gallery")
        gr.Markdown("<small>The boxes on each look: the region each query matched, labelled with the "
                    "query. Click a result to see it larger and highlight it in the charts.</small>")
        with gr.Row():
            scores = self.context.charts.component(CHART, elem_id="drill-scores", min_width=300)
            moves = self.context.charts.component(RANK_CHART, elem_id="drill-moves", min_width=300)
        link = link_box("drill-link")
        session, notes = gr.State(), gr.State()
        outputs = [gallery, rounds, scores, moves, link, session, notes]
        for event in (add.click(self.drill_add, [query, session], outputs, api_name="drill_add"),
                      query.submit(self.drill_add, [query, session], outputs, **PRIVATE),
                      examples.load_input_event.then(self.drill_add, [query, session], outputs, **PRIVATE)):
            show_notices(event, notes, notice, gallery).success(lambda: "", None, query, **QUIET)
        show_notices(undo.click(self.drill_undo, [session], outputs, api_name="drill_undo"), notes, notice, gallery)
        show_notices(reset.click(self.drill_reset, [session], outputs, api_name="drill_reset"), notes, notice, gallery)
        gallery.select(self.drill_select, [session], [scores, moves], **PRIVATE)

        def opened(params: dict[str, str] | None, request: gr.Request | None) -> dict:
            updates: dict = {knows: vocabulary_line(self.context.catalog, self.context.retriever().backbone.vocabulary)}
            if params is not None:
                updates |= dict(zip(outputs, self.run_link_rounds(link_rounds(params), request)))
                updates[notice] = updates[notes]
            return updates

        return TabParts(notice, LINK_KEY, opened, outputs=[knows, *outputs])


def build(context: TabContext) -> TabParts:
    """The tab, built inside the page's current gr.Tab."""
    return DrillDownTab(context).build()
