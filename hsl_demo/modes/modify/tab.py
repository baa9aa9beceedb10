"""Modify's tab: a reference (uploaded, or picked from the catalog) and a modification text in,
results with the query's image and text weights charted, and a link (?ref=ID&mod=...&k=N).
Clicking a result makes it the next reference."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr
from PIL import Image

from ...errors import HslDemoError
from ...images import open_image
from ...query import shorten
from ...results import SearchResult
from ...widgets import (
    EXAMPLE_SCAN,
    PRIVATE,
    TabContext,
    TabParts,
    as_messages,
    gallery_items,
    image_upload,
    link_box,
    link_k,
    message,
    notice_markdown,
    results_gallery,
    results_slider,
    search_link,
    selected_index,
    show_notices,
)
from .charts import CHART

if TYPE_CHECKING:
    from ...catalog import Catalog

EXAMPLES = [("p00024", "make it blue and striped"), ("p00216", "with dots instead"),
            ("p00272", "make it a boot"), ("p00352", "make it red")]
PICKS = 12  # catalog products offered as references
LINK_KEY = "ref"
# After a click on a result: the new reference scrolled into view when it is off the screen (on
# a phone it is far above the results).
SHOW_REFERENCE_JS = """() => {
    const ref = document.getElementById('modify-reference');
    const box = ref && ref.getBoundingClientRect();
    if (box && (box.bottom < 0 || box.top > window.innerHeight)) ref.scrollIntoView({behavior: 'smooth'});
}"""


def example_products(catalog: Catalog, n: int = PICKS) -> list[str]:
    """Catalog ids to offer as references: the examples' ids, then one product per category,
    spread over colours and patterns (among at most EXAMPLE_SCAN items spread over the catalog:
    a catalog of millions is not read whole to draw the page)."""
    picked = [i for i, _ in EXAMPLES if i in catalog]
    scanned = catalog.items[:: max(1, len(catalog) // EXAMPLE_SCAN)]
    groups: dict[str, list[str]] = {}
    for item in scanned:
        groups.setdefault(item.get("category", ""), []).append(item["id"])
    if len(groups) > 1:
        pool = [ids[(7 * g) % len(ids)] for g, ids in enumerate(groups.values())]
    else:
        pool = [item["id"] for item in scanned[:: max(1, len(scanned) // n)]]
    for item_id in pool:
        if item_id not in picked:
            picked.append(item_id)
    return picked[:n]


class ModifyTab:
    """The tab's handlers: small functions from component values to component values. (Named as
    the API and MCP tools are: Gradio names a tool after its function.)"""

    def __init__(self, context: TabContext):
        self.context, self.catalog = context, context.catalog
        self.picks = example_products(self.catalog)
        self.modify = context.gpu(self.modify)  # runs the model

    def modify(self, image: str | None, ref_id: str | None, text: str | None, k: float, request: gr.Request = None):
        """Search for a product like a reference one, changed as a text says (a composed query
        whose image and text weights adapt to the query).

        Args:
            image: a photo of the reference product (used when ref_id is empty)
            ref_id: the catalog id of the reference product, e.g. "p00024" (wins over image)
            text: how the wanted product differs from the reference, e.g. "make it blue and striped"
            k: how many results to return, from 1 to 50
        Returns:
            The results, their chart (similarity to the reference and to the text) and a link.
        """
        reference = self.reference(image, ref_id)
        with as_messages():
            response = self.context.retriever().search_composed(reference, text, k=int(k))
        results = response.results
        link = (search_link(request, **{LINK_KEY: reference, "mod": " ".join((text or "").split()), "k": str(int(k))})
                if isinstance(reference, str) else "(an uploaded photo has no link: pick a catalog product)")
        return (gallery_items(results, self.context.thumbnails), self.context.charts.render(CHART, results),
                results, notice_markdown(response.notices), link)

    def reference(self, image: str | None, ref_id: str | None) -> str | Image.Image:
        """The catalog id when one is set (picked or clicked), else the uploaded photo."""
        ref_id = (ref_id or "").strip()
        if ref_id:
            if ref_id not in self.catalog:
                raise message(f"no product {shorten(ref_id)!r} in catalog {self.catalog.name!r}")
            return ref_id
        if not image:
            raise message("no reference: upload a photo or pick a product")
        if not isinstance(image, str):  # a hand-made API call
            raise message(f"the reference photo must be an uploaded file, not {type(image).__name__}")
        try:
            return open_image(image)
        except HslDemoError as e:  # name the file as the user knows it, not by its server path
            raise message(str(e).replace(str(image), Path(image).name)) from None

    def as_reference(self, item_id: str):
        """The inputs that make a catalog product the reference: its id and photo."""
        return item_id, self.context.thumbnails.of(self.catalog.image_path(self.catalog.row(item_id)))

    def pick_item(self, item_id: str) -> tuple[str, str]:
        """A gallery item for a catalog product: (photo, title); its id shows once it is picked."""
        item = self.catalog.items[self.catalog.row(item_id)]
        return self.as_reference(item_id)[1], str(item.get("title", item_id))

    def pick(self, evt: gr.SelectData):
        selected = selected_index(evt, len(self.picks))
        return (gr.skip(), gr.skip()) if selected is None else self.as_reference(self.picks[selected])

    def use_result(self, results: list[SearchResult] | None, evt: gr.SelectData):
        """A clicked result made the reference: its id and photo, the chart with it highlighted,
        and the picker showing it picked (when it is one of the picks; else nothing picked)."""
        selected = selected_index(evt, len(results or []))
        if selected is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        item_id = results[selected].id
        picked = self.picks.index(item_id) if item_id in self.picks else None
        return (*self.as_reference(item_id), self.context.charts.render(CHART, results, selected),
                gr.Gallery(selected_index=picked))

    def build(self) -> TabParts:
        gr.Markdown("Start from a product (upload a photo, or pick one), say what to change. Click a "
                    "result to make it the next reference and walk through the catalog step by step.")
        with gr.Row():
            with gr.Column(scale=1, min_width=260):
                reference = image_upload(label="Reference", type="filepath", image_mode=None,
                                         sources=["upload", "clipboard"], height=220, elem_id="modify-reference")
                ref_id = gr.Textbox(label="Reference product id", placeholder="e.g. p00024 (pick one below)",
                                    elem_id="modify-ref-id")
                picks = gr.Gallery([self.pick_item(i) for i in self.picks], label="…or pick a product",
                                   columns=3, height="auto", allow_preview=False, object_fit="contain",
                                   elem_id="modify-picks")
            with gr.Column(scale=3):
                with gr.Row(equal_height=True):
                    change = gr.Textbox(label="Modification", placeholder="e.g. make it blue and striped",
                                        scale=4, min_width=240, elem_id="modify-text")
                    k = results_slider(scale=1, min_width=160)
                search = gr.Button("Search", variant="primary", elem_id="modify-search")
                with gr.Accordion("Examples: a reference and a change (click one to search)", open=False,
                                  elem_id="modify-examples"):
                    examples = gr.Examples(
                        [[*self.as_reference(i)[::-1], t] for i, t in EXAMPLES if i in self.catalog],
                        inputs=[reference, ref_id, change], api_visibility="private",
                        elem_id="modify-examples-table")
                notice = gr.Markdown("", elem_id="modify-notice", elem_classes="notice")
                # No preview: a click makes the result the reference (shown large on the left).
                gallery = results_gallery("modify-gallery", columns=4, allow_preview=False)
                gr.Markdown("<small>Click a result to make it the reference.</small>")
                chart = self.context.charts.component(CHART, elem_id="modify-chart")
                link = link_box("modify-link")
        found, notes = gr.State(), gr.State()
        outputs = [gallery, chart, found, notes, link]
        inputs = [reference, ref_id, change, k]
        show_notices(search.click(self.modify, inputs, outputs, api_name="modify"), notes, notice, gallery)
        show_notices(change.submit(self.modify, inputs, outputs, **PRIVATE), notes, notice, gallery)
        show_notices(examples.load_input_event.then(self.modify, inputs, outputs, **PRIVATE), notes, notice, gallery)
        picks.select(self.pick, None, [ref_id, reference], **PRIVATE)
        # the new reference where the visitor looks (on a phone it is above, off the screen)
        gallery.select(self.use_result, [found], [ref_id, reference, chart, picks], **PRIVATE).then(
            None, js=SHOW_REFERENCE_JS, **PRIVATE)
        no_pick = {**PRIVATE, "fn": lambda: ("", gr.Gallery(selected_index=None)), "inputs": None,
                   "outputs": [ref_id, picks]}
        reference.upload(**no_pick)
        reference.clear(**no_pick)

        def opened(params: dict[str, str] | None, request: gr.Request | None) -> dict:
            if params is None:
                return {}
            updates = dict(zip(outputs, self.modify(None, params[LINK_KEY].strip(), params.get("mod", ""),
                                                    link_k(params), request)))
            updates[notice] = updates[notes]
            return updates

        def link_inputs(params: dict[str, str]) -> dict:
            ref = params[LINK_KEY].strip()
            shown = self.as_reference(ref) if ref in self.catalog else (ref, None)
            return {ref_id: shown[0], reference: shown[1], change: params.get("mod", ""), k: link_k(params)}

        return TabParts(notice, LINK_KEY, opened, link_inputs, outputs=[ref_id, reference, change, k, *outputs])


def build(context: TabContext) -> TabParts:
    """The tab, built inside the page's current gr.Tab."""
    return ModifyTab(context).build()
