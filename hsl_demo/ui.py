"""The Gradio demo: three tabs over one model, loaded once and shared by every session.

- Describe: text search (HSL head) over the products catalog.
- Modify: a reference product (uploaded, or picked from the catalog) changed by a text.
- Drill down: a look described one product per round (HMRN), over the looks catalog.

Every result list is a gallery captioned "#rank title · score", explained by a chart
(hsl_demo.viz). Bad input ends in a message (gr.Error / gr.Warning), never a traceback.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import gradio as gr
from PIL import Image

from . import modes, viz
from .errors import HslDemoError
from .hub import head_statuses
from .images import open_image
from .search import DrillDownSession, Retriever, SearchResult
from .thumbnails import Thumbnails

EXAMPLES = ["green dotted scarf", "red striped t-shirt", "a backpack in blue with checks", "plain white sneaker"]
MODIFY_EXAMPLES = [("p00024", "make it blue and striped"), ("p00216", "with dots instead"),
                   ("p00272", "make it a boot"), ("p00352", "make it red")]
DRILL_EXAMPLES = ["a red handbag", "white sneakers", "a checked scarf", "yellow dotted sandals"]
DRILL_K = 12  # results per drill-down round
PICKS = 12  # catalog products offered as references in the Modify tab


@contextmanager
def as_messages():
    """Run retriever code for the UI: an HslDemoError becomes a gr.Error (a message, no
    traceback in the page or the server log)."""
    try:
        yield
    except HslDemoError as e:
        raise gr.Error(str(e), print_exception=False) from None


def notify(notices: list[str]) -> None:
    """A search's notices (a query ignored, an image-only search) as this visitor's toasts."""
    for message in notices:
        gr.Warning(message)


def image_upload(**kwargs) -> gr.Image:
    """A gr.Image input whose refused uploads (not an image, a decompression bomb) are
    one-line messages instead of tracebacks. The photo is only opened for real by
    hsl_demo.images.open_image. (The instance's preprocess is wrapped: a gr.Image subclass
    would make gradio write a .pyi stub next to this file.)"""
    image = gr.Image(**kwargs)
    preprocess = image.preprocess

    def checked(payload):
        try:
            return preprocess(payload)
        except gr.Error:
            raise
        except Exception as e:
            name = Path(payload.orig_name or payload.path or "upload").name
            reason = ("too many pixels" if isinstance(e, Image.DecompressionBombError)
                      else "not an image (or a format Pillow cannot read)")
            raise gr.Error(f"{name}: {reason}", print_exception=False) from None

    image.preprocess = checked
    return image


def mode_chart(mode: modes.Mode, results: list[SearchResult], highlight: int | None = None):
    """The chart the mode registers for its breakdown (hsl_demo.viz)."""
    return getattr(viz, mode.chart)(results, highlight)


def results_slider(**kwargs) -> gr.Slider:
    """The "Results" (k) slider, whose API callers get a one-line message, not a traceback in
    the server log, for a missing, non-numeric or out-of-range value."""
    slider = gr.Slider(1, 50, value=12, step=1, label="Results", **kwargs)
    preprocess = slider.preprocess

    def checked(payload):
        if isinstance(payload, bool) or not isinstance(payload, (int, float)) or payload != payload:
            raise gr.Error(f"Results (k) must be a number from 1 to 50, not {str(payload)[:40]!r}",
                           print_exception=False)
        if not 1 <= payload <= 50:
            raise gr.Error(f"Results (k) must be from 1 to 50, not {payload}", print_exception=False)
        return preprocess(payload)

    slider.preprocess = checked
    return slider


def caption(r: SearchResult) -> str:
    return f"#{r.rank} {r.title} · {r.score:.3f}"


def gallery_items(results: list[SearchResult] | None, thumbnails: Thumbnails) -> list[tuple[str, str]]:
    """A results gallery: (thumbnail file, "#rank title · score") per result."""
    return [(thumbnails.of(r.image), caption(r)) for r in results or []]


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


def rounds_markdown(session: DrillDownSession | None) -> str:
    if session is None or not session.rounds:
        return "*No rounds yet: describe one product of the look, e.g. “a red handbag”.*"
    lines = [f"**Rounds** ({len(session.rounds)} of at most {session.max_rounds}):", ""]
    for rd in session.rounds:
        best = rd.results[0] if rd.results else None
        lines.append(f"{rd.round}. {rd.queries[-1]}" + (f" — best: {best.id} ({best.score:.3f})" if best else ""))
    return "\n".join(lines)


def example_products(retriever: Retriever, n: int = PICKS) -> list[str]:
    """Catalog ids to offer as references: the Modify examples' ids, then one product per
    category, spread over colours and patterns."""
    catalog = retriever.catalog
    picked = [i for i, _ in MODIFY_EXAMPLES if i in catalog]
    groups: dict[str, list[str]] = {}
    for item in catalog.items:
        groups.setdefault(item.get("category", ""), []).append(item["id"])
    if len(groups) > 1:
        pool = [ids[(7 * g) % len(ids)] for g, ids in enumerate(groups.values())]
    else:
        pool = [item["id"] for item in catalog.items[:: max(1, len(catalog) // n)]]
    for item_id in pool:
        if item_id not in picked:
            picked.append(item_id)
    return picked[:n]


class Handlers:
    """The event handlers: small functions from component values to component values."""

    def __init__(self, products: Retriever, looks: Retriever, thumbnails: Thumbnails):
        self.products, self.looks = products, looks
        self.thumbnails = thumbnails
        self.picks = example_products(products)

    # Describe ---------------------------------------------------------------------------
    def describe(self, text: str, k: float):
        with as_messages():
            response = self.products.search_text(text, k=int(k))
        notify(response.notices)
        results = response.results
        chart = mode_chart(modes.describe.MODE, *viz.shown(results))
        return gallery_items(results, self.thumbnails), chart, breakdown_table(results), results

    def describe_select(self, results: list[SearchResult] | None, evt: gr.SelectData):
        return mode_chart(modes.describe.MODE, *viz.shown(results, evt.index)) if results else gr.skip()

    # Modify -----------------------------------------------------------------------------
    def modify(self, image: str | None, ref_id: str | None, text: str | None, k: float):
        reference = self._reference(image, ref_id)
        with as_messages():
            response = self.products.search_composed(reference, text, k=int(k))
        notify(response.notices)
        results = response.results
        return gallery_items(results, self.thumbnails), mode_chart(modes.modify.MODE, *viz.shown(results)), results

    def _reference(self, image: str | None, ref_id: str | None) -> str | Image.Image:
        """The catalog id when one is set (picked or clicked), else the uploaded photo."""
        ref_id = (ref_id or "").strip()
        if ref_id:
            if ref_id not in self.products.catalog:
                raise gr.Error(f"no product {ref_id!r} in catalog {self.products.catalog.name!r}",
                               print_exception=False)
            return ref_id
        if not image:
            raise gr.Error("no reference: upload a photo or pick a product", print_exception=False)
        try:
            return open_image(image)
        except HslDemoError as e:  # name the file as the user knows it, not by its server path
            raise gr.Error(str(e).replace(str(image), Path(image).name), print_exception=False) from None

    def _as_reference(self, item_id: str):
        """The Modify inputs that make a catalog product the reference: its id and photo."""
        return item_id, self.thumbnails.of(self.products.catalog.image_path(self.products.catalog.row(item_id)))

    def pick_item(self, item_id: str) -> tuple[str, str]:
        """A gallery item for a catalog product: (photo, "id · title")."""
        item = self.products.catalog.items[self.products.catalog.row(item_id)]
        return self._as_reference(item_id)[1], f"{item_id} · {item.get('title', item_id)}"

    def pick(self, evt: gr.SelectData):
        return self._as_reference(self.picks[evt.index])

    def use_result(self, results: list[SearchResult] | None, evt: gr.SelectData):
        if not results or not 0 <= evt.index < len(results):
            return gr.skip(), gr.skip(), gr.skip()
        return *self._as_reference(results[evt.index].id), mode_chart(modes.modify.MODE, *viz.shown(results, evt.index))

    # Drill down -------------------------------------------------------------------------
    def drill_add(self, text: str | None, session: DrillDownSession | None):
        session = session or self.looks.session(DRILL_K)
        with as_messages():
            notify(session.add(text).notices)
        return *self.drill_view(session), session

    def drill_undo(self, session: DrillDownSession | None):
        session = session or self.looks.session(DRILL_K)
        notify(session.undo().notices)
        return *self.drill_view(session), session

    def drill_reset(self, session: DrillDownSession | None):
        if session is not None:
            session.reset()
        return *self.drill_view(session), session

    def drill_select(self, session: DrillDownSession | None, evt: gr.SelectData):
        if session is None or session.current is None:
            return gr.skip(), gr.skip()
        return self.drill_charts(session.current.results, evt.index)

    def drill_view(self, session: DrillDownSession | None) -> tuple:
        results = session.current.results if session is not None and session.current else []
        return gallery_items(results, self.thumbnails), rounds_markdown(session), *self.drill_charts(results)

    @staticmethod
    def drill_charts(results: list[SearchResult], selected: int | None = None) -> tuple:
        if not results:
            return None, None
        shown = viz.shown(results, selected)
        return mode_chart(modes.drill_down.MODE, *shown), viz.rank_chart(*shown)


def _results_gallery(elem_id: str) -> gr.Gallery:
    return gr.Gallery(label="Results", columns=6, height="auto", object_fit="contain", elem_id=elem_id)


def serve(products: Retriever, looks: Retriever | None = None, concurrency: int = 4, **launch) -> gr.Blocks:
    """Build the app and serve it over HTTP (Gradio's `launch` arguments pass through).

    Gradio may serve uploads, its own cache and one folder more: the thumbnails of catalog
    photos, which the app writes itself (never a catalog's image folders or a parent of them).
    """
    thumbnails = Thumbnails()
    demo = build_demo(products, looks, thumbnails)
    demo.queue(default_concurrency_limit=max(1, concurrency)).launch(
        allowed_paths=[str(thumbnails.folder)], max_file_size="20mb", **launch)
    return demo


def build_demo(products: Retriever, looks: Retriever | None = None, thumbnails: Thumbnails | None = None) -> gr.Blocks:
    """The app. `products` serves Describe and Modify, `looks` (default: `products`) Drill
    down; both are loaded once and shared by every session. Gallery images are `thumbnails`."""
    looks = looks or products
    h = Handlers(products, looks, thumbnails or Thumbnails())
    private = {"api_visibility": "private"}
    backbone = products.backbone

    with gr.Blocks(title="hsl-demo: product search") as demo:
        gr.Markdown(
            "# Language-based product search\n"
            f"Catalogs: **{products.catalog.name}** ({len(products.catalog)} products) for Describe and Modify, "
            f"**{looks.catalog.name}** ({len(looks.catalog)} looks) for Drill down."
        )
        with gr.Tab(modes.describe.MODE.title):
            with gr.Row():
                text = gr.Textbox(label="Description", placeholder="e.g. green dotted scarf", scale=4,
                                  elem_id="describe-text")
                k = results_slider(scale=1)
            search = gr.Button("Search", variant="primary", elem_id="describe-search")
            gr.Examples(EXAMPLES, inputs=[text])
            gr.Markdown("<small>Click a result to highlight it in the chart.</small>")
            gallery = _results_gallery("describe-gallery")
            chart = gr.Plot(label="Why they ranked", show_label=False, elem_id="describe-chart")
            with gr.Accordion("Scores as a table: similarity × weight per level and granularity", open=False):
                table = gr.Dataframe(label="Breakdown", interactive=False, wrap=True)
            found = gr.State()
            outputs = [gallery, chart, table, found]
            search.click(h.describe, [text, k], outputs, api_name="describe")
            text.submit(h.describe, [text, k], outputs, **private)
            gallery.select(h.describe_select, [found], [chart], **private)

        with gr.Tab(modes.modify.MODE.title):
            gr.Markdown("Start from a product (upload a photo, or pick one), say what to change. Click a result "
                        "to make it the next reference and walk through the catalog step by step.")
            with gr.Row():
                with gr.Column(scale=1):
                    reference = image_upload(label="Reference", type="filepath", image_mode=None,
                                             sources=["upload", "clipboard"], height=260,
                                             elem_id="modify-reference")
                    ref_id = gr.Textbox(label="Reference product id (set by picking; an upload clears it)",
                                        placeholder="e.g. p00024")
                with gr.Column(scale=2):
                    picks = gr.Gallery([h.pick_item(i) for i in h.picks], label="…or pick a product",
                                       columns=6, height="auto", allow_preview=False, object_fit="contain")
            with gr.Row():
                change = gr.Textbox(label="Modification", placeholder="e.g. make it blue and striped", scale=4,
                                    elem_id="modify-text")
                mk = results_slider(scale=1)
            modify = gr.Button("Search", variant="primary", elem_id="modify-search")
            gr.Examples([[*h._as_reference(i)[::-1], t] for i, t in MODIFY_EXAMPLES if i in products.catalog],
                        inputs=[reference, ref_id, change])
            gr.Markdown("<small>Click a result to make it the reference.</small>")
            mgallery = _results_gallery("modify-gallery")
            mchart = gr.Plot(label="Image side vs text side", show_label=False, elem_id="modify-chart")
            mfound = gr.State()
            outputs = [mgallery, mchart, mfound]
            modify.click(h.modify, [reference, ref_id, change, mk], outputs, api_name="modify")
            change.submit(h.modify, [reference, ref_id, change, mk], outputs, **private)
            picks.select(h.pick, None, [ref_id, reference], **private)
            mgallery.select(h.use_result, [mfound], [ref_id, reference, mchart], **private)
            reference.upload(lambda: "", None, ref_id, **private)
            reference.clear(lambda: "", None, ref_id, **private)

        with gr.Tab(modes.drill_down.MODE.title):
            gr.Markdown("Describe a look one product at a time: each round adds a region query and re-ranks "
                        f"the looks with all the queries so far (at most {looks.hmrn.max_rounds} rounds).")
            with gr.Row():
                query = gr.Textbox(label="Add a product of the look", placeholder="e.g. a red handbag", scale=4,
                                   elem_id="drill-query")
                add = gr.Button("Add", variant="primary", scale=0, elem_id="drill-add")
                undo = gr.Button("Undo", scale=0)
                reset = gr.Button("Reset", scale=0)
            gr.Examples(DRILL_EXAMPLES, inputs=[query])
            rounds = gr.Markdown(rounds_markdown(None), label="Rounds", elem_id="drill-rounds")
            gr.Markdown("<small>Click a result to highlight it in the charts.</small>")
            dgallery = _results_gallery("drill-gallery")
            with gr.Row():
                scores = gr.Plot(label="Scores of this round", show_label=False, elem_id="drill-scores")
                moves = gr.Plot(label="Rank across rounds", show_label=False, elem_id="drill-moves")
            session = gr.State()
            outputs = [dgallery, rounds, scores, moves, session]
            add.click(h.drill_add, [query, session], outputs, api_name="drill_add").success(
                lambda: "", None, query, **private)
            query.submit(h.drill_add, [query, session], outputs, **private).success(
                lambda: "", None, query, **private)
            undo.click(h.drill_undo, [session], outputs, api_name="drill_undo")
            reset.click(h.drill_reset, [session], outputs, api_name="drill_reset")
            dgallery.select(h.drill_select, [session], [scores, moves], **private)

        gr.Markdown(
            f"<small>Device: {backbone.device.type} · dtype: {str(backbone.dtype).removeprefix('torch.')} · "
            f"model: `{backbone.model_id}` · drill-down ranking: {looks.hmrn_variant}<br>"
            f"Heads: {' · '.join(status.summary() for status in head_statuses(backbone.folder))}</small>",
            elem_id="heads-status",
        )
    return demo
