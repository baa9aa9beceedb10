"""The Gradio demo: one tab per retrieval mode, over one model loaded once and shared by every
session. Each mode builds its own tab (hsl_demo/modes/*/tab.py, from hsl_demo/widgets.py);
this page loops over the mode registry, in its order, and adds what is the page's: the
catalogs line, the footer with the model and its heads, the look on phones (PAGE_CSS), and a
search in the page's address, run in its tab (e.g. ?q=..., ?ref=...&mod=..., ?rounds=...|...).
Every result list is a gallery of thumbnails captioned "#rank title · score", explained by
charts the browser draws (hsl_demo.charts; the matplotlib PNGs of hsl_demo.viz with `--charts
png`). Bad input ends in a message (gr.Error / gr.Warning), never a traceback.
"""

from __future__ import annotations

import threading
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr

from . import modes
from .gpu import mcp_available
from .model_folder import head_statuses
from .query import shorten
from .thumbnails import Thumbnails
from .widgets import LOADING, QUIET, ChartRenderer, TabContext, TabParts, check_link, markdown_text, message

if TYPE_CHECKING:  # the page is served before torch and the model are loaded (AppModels)
    from .catalog import Catalog
    from .search import Retriever

CACHE_CLEANUP = (300, 900)  # every 5 min, uploads and Gradio's cached files older than 15 min are deleted
# (`hsl-demo serve --cache-ttl`)


class AppModels:
    """What the app serves: its catalogs by role (`products` for Describe and Modify, `looks`
    for Drill down: each mode names its role), known at once, and their retrievers (the model
    and its heads), which may come later. The page needs only the catalogs, so `hsl-demo
    serve` serves it first and loads torch and the model behind it; a search waits for them."""

    def __init__(self, products: Catalog, looks: Catalog):
        self.catalogs = {"products": products, "looks": looks}
        self._loaded = threading.Event()
        self._retrievers: dict[str, Retriever] = {}

    @property
    def products_catalog(self) -> Catalog:
        return self.catalogs["products"]

    @property
    def looks_catalog(self) -> Catalog:
        return self.catalogs["looks"]

    @classmethod
    def of(cls, products: Retriever, looks: Retriever | None = None) -> AppModels:
        """Retrievers loaded already (`looks`, default `products`, serves Drill down)."""
        looks = looks or products
        models = cls(products.catalog, looks.catalog)
        models.set(products, looks)
        return models

    def set(self, products: Retriever, looks: Retriever) -> None:
        self._retrievers = {"products": products, "looks": looks}
        self._loaded.set()

    @property
    def loaded(self) -> bool:
        return self._loaded.is_set()

    def retriever(self, role: str) -> Retriever:
        """The retriever of a catalog role, once loaded (a search sent while the model loads
        waits for it)."""
        self._loaded.wait()
        return self._retrievers[role]

    @property
    def retrievers(self) -> tuple[Retriever, Retriever]:
        """(products, looks), once loaded."""
        return self.retriever("products"), self.retriever("looks")


def link_search(params: dict[str, str], tabs: dict[str, TabParts]) -> tuple[str, dict[str, str]] | None:
    """The tab a page address asks to search in, and its parameters: the first tab (in the
    page's order) whose link key is set (None: the address asks for no search). A parameter
    longer than widgets.MAX_LINK_PARAM is a gr.Error."""
    check_link(params)
    return next(((name, params) for name, parts in tabs.items() if params.get(parts.link_key, "").strip()), None)


# The page on any screen. Gradio's gallery has one column count for every width: a phone got
# 6 columns in a sideways scroll that hid half the results, so narrow screens get fewer here.
# Every result shows (no scroll box inside the page: Gradio's "auto" height is 55% of the
# screen), and captions wrap to two lines instead of cutting the title ("#1 Red str...").
PAGE_CSS = """
.results .grid-wrap, #modify-picks .grid-wrap { max-height: none !important; min-height: 0 !important; }
.results .grid-container, #modify-picks .grid-container {
    grid-template-columns: repeat(var(--grid-cols), minmax(0, 1fr)) !important; }
.results .caption-label, #modify-picks .caption-label { white-space: normal; max-width: calc(100% - 8px);
    display: -webkit-box; -webkit-line-clamp: 2; -webkit-box-orient: vertical; line-height: 1.25; }
.notice:empty, .notice:has(.prose:empty) { display: none; }
@media (max-width: 900px) {
    .results .grid-container { grid-template-columns: repeat(4, minmax(0, 1fr)) !important; }
}
@media (max-width: 640px) {
    .results .grid-container { grid-template-columns: repeat(2, minmax(0, 1fr)) !important; }
    #modify-picks .grid-container { grid-template-columns: repeat(3, minmax(0, 1fr)) !important; }
}
"""
def refuse_malformed_payloads(demo: gr.Blocks) -> None:
    """A request whose inputs Gradio cannot even read (a number for a photo, a server path or
    a URL that was never uploaded, too few values: what only a hand-made API call sends) is
    answered with one message, not a traceback in the server log. (This app's instance only.)"""
    preprocess_data = demo.preprocess_data

    async def checked(block_fn, inputs, state, explicit_call=False):
        try:
            return await preprocess_data(block_fn, inputs, state, explicit_call)
        except gr.Error:
            raise
        except Exception as e:  # the request's inputs, refused before any handler ran
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise message(f"this request's inputs cannot be read: {shorten(reason, 120)}") from None

    demo.preprocess_data = checked


def serve(models: AppModels | Retriever, looks: Retriever | None = None, concurrency: int = 4,
          charts: str = "native", block: bool = True, cache_cleanup: tuple[int, int] | None = CACHE_CLEANUP,
          thumbnails: Thumbnails | None = None, **launch) -> gr.Blocks:
    """Build the app and serve it over HTTP (Gradio's `launch` arguments pass through).
    `models`: an AppModels (its retrievers may be set later), or the products Retriever with
    `looks`. `concurrency`: searches run at once, in every tab. `block=False` returns at once
    (then `demo.block_thread()`), as `prevent_thread_lock` does. `cache_cleanup`: (every N
    seconds, delete uploads and cached files older than M seconds), so that a public server's
    disk stays bounded; None keeps them until the server stops.

    Gradio may serve uploads, its own cache and one folder more: the thumbnails of catalog
    photos (`thumbnails`, default a new folder), which the app writes itself (never a catalog's
    image folders or a parent of them). Gradio copies each into its cache before serving it,
    unless the process entry point made the folder a static path (`hsl-demo serve` does:
    gr.set_static_paths is one list per process, so only an entry point may set it).
    """
    if not isinstance(models, AppModels):
        models = AppModels.of(models, looks)
    thumbnails = thumbnails or Thumbnails()
    demo = build_demo(models, thumbnails, charts, cache_cleanup=cache_cleanup)
    launch.setdefault("prevent_thread_lock", not block)
    launch.setdefault("css", PAGE_CSS)
    # Describe / Modify / Drill down as MCP tools, where gradio[mcp] is installed (else GRADIO_MCP_SERVER decides)
    launch.setdefault("mcp_server", True if mcp_available() else None)
    demo.queue(default_concurrency_limit=max(1, concurrency)).launch(
        allowed_paths=[str(thumbnails.folder)], max_file_size="20mb", **launch)
    return demo


def model_name(backbone) -> str:
    """The model as its card names it: a Hub id or open_clip name as given, a local folder by its
    name alone (even a repository-relative path is a path on this server)."""
    if backbone.folder is not None and Path(backbone.model_id).expanduser().exists():
        return backbone.folder.name
    return backbone.portable_id


def head_line(status) -> str:
    """A head's state in words a visitor reads: trained or not, and on what."""
    if not status.trained:
        return f"{status.name}: untrained"
    catalog = status.catalog.get("name") if isinstance(status.catalog, dict) else None
    return f"{status.name}: trained on {f'catalog {catalog}' if catalog else 'the demo world'}"


def footer(models: AppModels) -> str:
    """The model the app runs and the status of its heads (once it is loaded)."""
    backbone = models.retrievers[0].backbone
    heads = " · ".join(escape(head_line(status)) for status in head_statuses(backbone.folder))
    regions = f" · ⚠ {escape(backbone.regions_note)}" if backbone.regions_note else ""
    return (f"<small>Model: <b>{escape(model_name(backbone))}</b> ({heads}) · running on "
            f"{backbone.device.type}, {str(backbone.dtype).removeprefix('torch.')}{regions}</small>")


def build_demo(models: AppModels | Retriever, thumbnails: Thumbnails | None = None, charts: str = "native",
               looks: Retriever | None = None, cache_cleanup: tuple[int, int] | None = CACHE_CLEANUP) -> gr.Blocks:
    """The app over `models` (or a products Retriever and `looks`, default: the same): a tab per
    registered mode, each over its catalog role (products: Describe and Modify; looks: Drill
    down); loaded once and shared by every session. Gallery images are `thumbnails`; `charts`:
    native (drawn in the browser) or png (matplotlib, drawn by the server). Its look on phones
    is PAGE_CSS, which `serve` passes to launch."""
    if not isinstance(models, AppModels):
        models = AppModels.of(models, looks)
    renderer, thumbnails = ChartRenderer(charts), thumbnails or Thumbnails()
    products, looks_catalog = models.products_catalog, models.looks_catalog
    with gr.Blocks(title="hsl-demo: product search", delete_cache=cache_cleanup) as demo:
        gr.Markdown(
            "# Language-based product search\n"
            f"Catalogs: **{markdown_text(products.name)}** ({len(products)} products) for "
            + ", ".join(m.title for m in modes.MODES.values() if m.tab and m.catalog_role == "products")
            + f"; **{markdown_text(looks_catalog.name)}** ({len(looks_catalog)} looks) for "
            + ", ".join(m.title for m in modes.MODES.values() if m.tab and m.catalog_role == "looks") + "."
        )
        tabs: dict[str, TabParts] = {}
        with gr.Tabs() as tab_row:
            for mode in modes.MODES.values():
                if mode.tab is None:
                    continue
                with gr.Tab(mode.title, id=mode.name):
                    context = TabContext(models.catalogs[mode.catalog_role],
                                         lambda role=mode.catalog_role: models.retriever(role), thumbnails, renderer)
                    tabs[mode.name] = mode.tab(context)
        about = gr.Markdown("<small>Loading the model…</small>", elem_id="heads-status")
        notices = [parts.notice for parts in tabs.values()]

        def open_page(request: gr.Request) -> dict:
            """The footer and what each tab shows once the model is loaded; and for a page opened
            with a search in its address (a tab's link key set), that search, run in its tab."""
            updates: dict = {about: footer(models), **dict.fromkeys(notices, "")}
            for parts in tabs.values():
                updates |= parts.opened(None, request)
            try:
                found = link_search(dict(request.query_params), tabs) if request is not None else None
            except gr.Error as e:
                gr.Warning(f"this link's search did not run: {e.message}")
                return updates
            if found is None:
                return updates
            name, params = found
            updates[tab_row] = gr.Tabs(selected=name)
            updates |= tabs[name].link_inputs(params)
            try:
                updates |= tabs[name].opened(params, request)
            except gr.Error as e:  # a link to a search that cannot run: say why, and show the page anyway
                gr.Warning(f"this link's search did not run: {e.message}")
            return updates

        refuse_malformed_payloads(demo)
        # First, at once: say the model is loading where the results will be (the search waits);
        # then, without spinners over the page, whatever needs the model.
        outputs = list(dict.fromkeys([about, tab_row, *notices, *(c for p in tabs.values() for c in p.outputs)]))
        demo.load(lambda: [LOADING if not models.loaded else ""] * len(notices), None, notices, **QUIET).then(
            open_page, None, outputs, **QUIET)
    return demo
