"""The Gradio demo: three tabs over one model, loaded once and shared by every session.

- Describe: text search (HSL head) over the products catalog.
- Modify: a reference product (uploaded, or picked from the catalog) changed by a text.
- Drill down: a look described one product per round (HMRN), over the looks catalog.

Every result list is a gallery of thumbnails captioned "#rank title · score", the regions
that matched marked on them, and explained by charts the browser draws (hsl_demo.charts; the
matplotlib PNGs of hsl_demo.viz with `--charts png`). Every search has a link that runs it
again (?q=..., ?ref=...&mod=..., ?rounds=...|...). Bad input ends in a message (gr.Error /
gr.Warning), never a traceback.
"""

from __future__ import annotations

import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlencode, urlsplit

import gradio as gr
from PIL import Image

from . import charts
from .errors import HslDemoError
from .gpu import gpu_task, mcp_available
from .hub import head_statuses
from .images import open_image
from .query import MAX_QUERY_CHARS, shorten
from .results import SearchResult
from .thumbnails import Thumbnails

if TYPE_CHECKING:  # the page is served before torch and the model are loaded (AppModels)
    from .catalog import Catalog
    from .search import Retriever

# A drill-down session (hsl_demo.modes.drill_down.DrillDownSession) as handlers take it: Gradio
# reads the handlers' type hints at run time (to pass gr.Request and gr.SelectData), before the
# module that defines it, which needs torch, is imported.
Session = object

EXAMPLES = ["green dotted scarf", "red striped t-shirt", "a backpack in blue with checks", "plain white sneaker"]
MODIFY_EXAMPLES = [("p00024", "make it blue and striped"), ("p00216", "with dots instead"),
                   ("p00272", "make it a boot"), ("p00352", "make it red")]
DRILL_EXAMPLES = ["a red handbag", "white sneakers", "a checked scarf", "yellow dotted sandals"]
DRILL_K = 12  # results per drill-down round
PICKS = 12  # catalog products offered as references in the Modify tab
EXAMPLE_SCAN = 5_000  # items read to pick them
CHART_MODES = ("native", "png")  # drawn in the browser, or matplotlib PNGs drawn per request


@dataclass(frozen=True)
class TabSpec:
    """A tab of the app: its id (in links), title, the mode it runs (hsl_demo.modes) and the
    chart that explains its ranking (a function of hsl_demo.charts and hsl_demo.viz)."""

    id: str
    title: str
    mode: str
    chart: str


DESCRIBE = TabSpec("describe", "Describe", "describe", "hsl_chart")
MODIFY = TabSpec("modify", "Modify", "modify", "composed_chart")
DRILL = TabSpec("drill", "Drill down", "drill-down", "drill_chart")
TABS = (DESCRIBE, MODIFY, DRILL)
ROUNDS_SEPARATOR = "|"  # between the drill-down queries of a link's ?rounds=
MAX_LINK_PARAM = 10 * (MAX_QUERY_CHARS + 1)  # characters of one parameter of a link: ten rounds' queries
CACHE_CLEANUP = (300, 900)  # every 5 min, uploads and Gradio's cached files older than 15 min are deleted
# (`hsl-demo serve --cache-ttl`)
_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()#|~])")
# What GitHub-flavoured Markdown turns into a link by itself (a web address, an e-mail address):
# a word joiner (invisible) breaks each, so a visitor's text is never a link either.
_AUTOLINKS = re.compile(r"(?<=:)(?=//)|(?<=www)(?=\.)|(?=@)", re.IGNORECASE)


def markdown_text(text: str) -> str:
    """`text` (a visitor's query, a catalog id) for a gr.Markdown, shown as itself: no Markdown,
    HTML or link of it is rendered (a link that carries markup plants nothing in the page)."""
    return escape(_AUTOLINKS.sub("\u2060", _MARKDOWN_PUNCTUATION.sub(r"\\\1", text)), quote=False)


def message(text: str) -> gr.Error:
    """A one-line message for this visitor (a toast renders HTML: `text` may carry their input)."""
    return gr.Error(escape(text, quote=False), print_exception=False)


@contextmanager
def as_messages():
    """Run retriever code for the UI: an HslDemoError becomes a gr.Error (a message, no
    traceback in the page or the server log)."""
    try:
        yield
    except HslDemoError as e:
        raise message(str(e)) from None


def notice_markdown(notices: list[str]) -> str:
    """A search's notices (a query ignored, words the model never saw, an image-only search) for
    the tab's notice area, right above its results: each search's replace the last's, where
    toasts would pile up. An API caller gets them as before, as warnings (not shown in the page)."""
    for notice in notices:
        gr.Warning(escape(notice, quote=False), visible=False)
    return "\n".join(f"⚠ {markdown_text(n)}  " for n in notices)


LOADING = "⏳ *The model is loading (a few seconds, once after the server starts): a search waits for it.*"


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
            name = Path(str(getattr(payload, "orig_name", None) or getattr(payload, "path", None) or "upload")).name
            reason = ("too many pixels" if isinstance(e, Image.DecompressionBombError)
                      else "not an image (or a format Pillow cannot read)")
            raise message(f"{shorten(name)}: {reason}") from None

    image.preprocess = checked
    return image


class ChartRenderer:
    """The charts of the app: native plots the browser draws from rows (default), or the
    matplotlib PNGs of hsl_demo.viz (`png`, kept to measure what they cost)."""

    def __init__(self, mode: str = "native"):
        if mode not in CHART_MODES:
            raise ValueError(f"unknown chart mode {mode!r} ({', '.join(CHART_MODES)})")
        self.native = mode == "native"

    def component(self, name: str, **kwargs):
        """The (empty) output component of chart `name` (a function of hsl_demo.charts / viz)."""
        return charts.component(name, **kwargs) if self.native else gr.Plot(show_label=False, **kwargs)

    def render(self, name: str, results: list[SearchResult], selected: int | None = None, **extra):
        """Chart `name` of `results` (the top ones, and the `selected` one when it is further down)."""
        shown, highlight = charts.shown(results or [], selected)
        if self.native:
            return charts.as_update(getattr(charts, name)(shown, highlight, **extra))
        from . import viz  # matplotlib, imported only when PNG charts are asked for

        return getattr(viz, name)(shown, highlight)


DEFAULT_K = 12


def results_slider(**kwargs) -> gr.Slider:
    """The "Results" (k) slider, whose API callers get a one-line message, not a traceback in
    the server log, for a missing, non-numeric or out-of-range value."""
    slider = gr.Slider(1, 50, value=DEFAULT_K, step=1, label="Results", **kwargs)
    preprocess = slider.preprocess

    def checked(payload):
        if isinstance(payload, bool) or not isinstance(payload, (int, float)) or payload != payload:
            raise message(f"Results (k) must be a number from 1 to 50, not {shorten(str(payload))!r}")
        if not 1 <= payload <= 50:
            raise message(f"Results (k) must be from 1 to 50, not {payload}")
        if payload != int(payload):
            raise message(f"Results (k) must be a whole number, not {payload}")
        return preprocess(payload)

    slider.preprocess = checked
    return slider


def caption(r: SearchResult) -> str:
    return f"#{r.rank} {r.title} · {r.score:.3f}"


def gallery_items(results: list[SearchResult] | None, thumbnails: Thumbnails) -> list[tuple[str, str]]:
    """A results gallery: (thumbnail file with the matched regions marked, "#rank title · score")
    per result."""
    return [(thumbnails.marked(r.image, r.marks), caption(r)) for r in results or []]


def search_link(request: gr.Request | None, **params: str) -> str:
    """The address of the app with `params` as its query: the page the visitor is on (the
    Referer of their request, as their browser sees it behind any proxy), else this server."""
    pages = [request.headers.get("referer") or "", str(getattr(request, "url", "") or "")] if request else []
    # The Referer is the visitor's to send: only a web address of its own is trusted as the page
    parts = next((p for p in map(urlsplit, pages) if p.scheme in ("http", "https") and p.netloc), urlsplit(""))
    path = parts.path.split("/gradio_api/")[0] or "/"  # a request to the API itself: the app's page
    base = f"{parts.scheme}://{parts.netloc}{path}" if parts.netloc else "/"
    return f"{base}?{urlencode(params)}"


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


def example_products(catalog: Catalog, n: int = PICKS) -> list[str]:
    """Catalog ids to offer as references: the Modify examples' ids, then one product per
    category, spread over colours and patterns (among at most EXAMPLE_SCAN items spread over
    the catalog: a catalog of millions is not read whole to draw the page)."""
    picked = [i for i, _ in MODIFY_EXAMPLES if i in catalog]
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


class AppModels:
    """What the app serves: two catalogs, known at once, and their retrievers (the model and its
    heads), which may come later. The page needs only the catalogs, so `hsl-demo serve` serves
    it first and loads torch and the model behind it; a search waits for them."""

    def __init__(self, products: Catalog, looks: Catalog):
        self.products_catalog, self.looks_catalog = products, looks
        self._loaded = threading.Event()
        self._retrievers: tuple[Retriever, Retriever] | None = None

    @classmethod
    def of(cls, products: Retriever, looks: Retriever | None = None) -> AppModels:
        """Retrievers loaded already (`looks`, default `products`, serves Drill down)."""
        looks = looks or products
        models = cls(products.catalog, looks.catalog)
        models.set(products, looks)
        return models

    def set(self, products: Retriever, looks: Retriever) -> None:
        self._retrievers = (products, looks)
        self._loaded.set()

    @property
    def loaded(self) -> bool:
        return self._loaded.is_set()

    @property
    def retrievers(self) -> tuple[Retriever, Retriever]:
        """(products, looks), once loaded (a search sent while the model loads waits for it)."""
        self._loaded.wait()
        return self._retrievers


GPU_HANDLERS = ("describe", "modify", "drill_add", "drill_undo", "run_link_rounds")  # the ones that run the model


class Handlers:
    """The event handlers: small functions from component values to component values."""

    def __init__(self, models: AppModels, thumbnails: Thumbnails, charts: ChartRenderer):
        self.models, self.catalog = models, models.products_catalog
        self.thumbnails, self.charts = thumbnails, charts
        self.picks = example_products(self.catalog)
        for name in GPU_HANDLERS:  # on ZeroGPU, the GPU exists only inside spaces.GPU functions
            setattr(self, name, gpu_task(getattr(self, name)))

    @property
    def products(self) -> Retriever:
        return self.models.retrievers[0]

    @property
    def looks(self) -> Retriever:
        return self.models.retrievers[1]

    # Describe ---------------------------------------------------------------------------
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
            response = self.products.search_text(text, k=int(k))
        results = response.results
        link = search_link(request, q=" ".join(text.split()), k=str(int(k)))
        return (gallery_items(results, self.thumbnails), self.charts.render(DESCRIBE.chart, results),
                breakdown_table(results), results, notice_markdown(response.notices), link)

    def describe_select(self, results: list[SearchResult] | None, evt: gr.SelectData):
        selected = selected_index(evt, len(results or []))
        return gr.skip() if selected is None else self.charts.render(DESCRIBE.chart, results, selected)

    # Modify -----------------------------------------------------------------------------
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
        reference = self._reference(image, ref_id)
        with as_messages():
            response = self.products.search_composed(reference, text, k=int(k))
        results = response.results
        link = (search_link(request, ref=reference, mod=" ".join((text or "").split()), k=str(int(k)))
                if isinstance(reference, str) else "(an uploaded photo has no link: pick a catalog product)")
        return (gallery_items(results, self.thumbnails), self.charts.render(MODIFY.chart, results),
                results, notice_markdown(response.notices), link)

    def _reference(self, image: str | None, ref_id: str | None) -> str | Image.Image:
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

    def _as_reference(self, item_id: str):
        """The Modify inputs that make a catalog product the reference: its id and photo."""
        return item_id, self.thumbnails.of(self.catalog.image_path(self.catalog.row(item_id)))

    def pick_item(self, item_id: str) -> tuple[str, str]:
        """A gallery item for a catalog product: (photo, title); its id shows once it is picked."""
        item = self.catalog.items[self.catalog.row(item_id)]
        return self._as_reference(item_id)[1], str(item.get("title", item_id))

    def pick(self, evt: gr.SelectData):
        selected = selected_index(evt, len(self.picks))
        return (gr.skip(), gr.skip()) if selected is None else self._as_reference(self.picks[selected])

    def use_result(self, results: list[SearchResult] | None, evt: gr.SelectData):
        """A clicked result made the reference: its id and photo, the chart with it highlighted,
        and the picker showing it picked (when it is one of the picks; else nothing picked)."""
        selected = selected_index(evt, len(results or []))
        if selected is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        item_id = results[selected].id
        picked = self.picks.index(item_id) if item_id in self.picks else None
        return (*self._as_reference(item_id), self.charts.render(MODIFY.chart, results, selected),
                gr.Gallery(selected_index=picked))

    # Drill down -------------------------------------------------------------------------
    # Each returns (gallery, rounds, scores chart, rank chart, link, session, notices): the last
    # two are gr.State, not in the API.
    def drill_add(self, text: str | None, session: Session | None, request: gr.Request = None):
        """Drill down in the looks catalog: add one product of the look as a new round and re-rank
        the looks by all the rounds so far (HMRN). A call without the app's session starts a new one.

        Args:
            text: one product of the look, e.g. "a red handbag" (then "white sneakers" in the next round)
        Returns:
            The looks found, the rounds so far, their score and rank charts and a link.
        """
        session = session or self.looks.session(DRILL_K)
        with as_messages():
            notices = session.add(text).notices
        return *self.drill_view(session, request), session, notice_markdown(notices)

    def drill_undo(self, session: Session | None, request: gr.Request = None):
        session = session or self.looks.session(DRILL_K)
        notices = session.undo().notices
        return *self.drill_view(session, request), session, notice_markdown(notices)

    def drill_reset(self, session: Session | None, request: gr.Request = None):
        if session is not None:
            session.reset()
        return *self.drill_view(session, request), session, ""

    def drill_select(self, session: Session | None, evt: gr.SelectData):
        shown = len(session.current.results) if session is not None and session.current is not None else 0
        selected = selected_index(evt, shown)
        return (gr.skip(), gr.skip()) if selected is None else self.drill_charts(session, selected)

    def drill_view(self, session: Session | None, request: gr.Request | None = None) -> tuple:
        results = session.current.results if session is not None and session.current else []
        link = search_link(request, rounds=ROUNDS_SEPARATOR.join(session.queries)) if results else ""
        return (gallery_items(results, self.thumbnails), rounds_markdown(session), *self.drill_charts(session),
                link)

    def drill_charts(self, session: Session | None, selected: int | None = None) -> tuple:
        if session is None or session.current is None:  # empty native plots: None leaves Gradio's
            # plot drawing into a removed element (a page error on Reset)
            if not self.charts.native:
                return None, None
            return self.charts.render(DRILL.chart, []), self.charts.render("rank_chart", [])
        results = session.current.results
        extra = {"queries": session.queries} if self.charts.native else {}
        return (self.charts.render(DRILL.chart, results, selected),
                self.charts.render("rank_chart", results, selected, **extra))

    # Links ------------------------------------------------------------------------------
    def run_link_rounds(self, rounds: list[str], request: gr.Request | None = None):
        """Drill down through a link's rounds, one per round, in a fresh session."""
        session = self.looks.session(DRILL_K)
        notices: list[str] = []
        with as_messages():
            for text in rounds[: session.max_rounds]:
                notices += session.add(text).notices
        return *self.drill_view(session, request), session, notice_markdown(notices)


def selected_index(evt: gr.SelectData | None, shown: int) -> int | None:
    """The index a select event names, when it is one of the `shown` items (a hand-made event
    may carry anything)."""
    index = getattr(evt, "index", None)
    return index if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < shown else None


@dataclass(frozen=True)
class LinkSearch:
    """The search a page address asks for: ?q=...[&k=N] (Describe), ?ref=ID&mod=...
    (Modify), ?rounds=a|b|c (Drill down)."""

    tab: str  # the id of the tab it runs in
    k: int
    text: str = ""
    reference: str = ""
    rounds: tuple[str, ...] = ()

    @classmethod
    def of(cls, params: dict[str, str]) -> LinkSearch | None:
        """The search in a page's query parameters (None when it asks for none); a parameter
        longer than MAX_LINK_PARAM is a gr.Error, and a `k` that is not 1 to 50 the default."""
        for name, value in params.items():
            if len(value) > MAX_LINK_PARAM:
                raise message(f"its {shorten(name)!r} is too long ({len(value):,} characters; at most "
                              f"{MAX_LINK_PARAM:,})")
        k = params.get("k", "").strip()
        k = int(k) if k.isascii() and k.isdigit() and len(k) <= 2 and 1 <= int(k) <= 50 else DEFAULT_K
        if params.get("rounds", "").strip():
            return cls("drill", k, rounds=tuple(t for t in params["rounds"].split(ROUNDS_SEPARATOR) if t.strip()))
        if params.get("ref", "").strip():
            return cls("modify", k, text=params.get("mod", ""), reference=params["ref"].strip())
        if params.get("q", "").strip():
            return cls("describe", k, text=params["q"])
        return None


def _results_gallery(elem_id: str, columns: int = 6, **kwargs) -> gr.Gallery:
    """A results gallery: `columns` wide on a wide screen, fewer on narrow ones (PAGE_CSS)."""
    return gr.Gallery(label="Results", columns=columns, height="auto", object_fit="contain", elem_id=elem_id,
                      elem_classes="results", **kwargs)


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
# After a search: its results scrolled into view when they start below the screen's bottom
# (on a phone, under the search box, examples and the words the model knows).
SHOW_RESULTS_JS = """() => {
    const tab = [...document.querySelectorAll('.results')].find(g => g.offsetParent !== null);
    if (tab && tab.getBoundingClientRect().top > window.innerHeight - 160) tab.scrollIntoView({behavior: 'smooth'});
}"""
# After a click on a Modify result: the new reference scrolled into view when it is off the
# screen (on a phone it is far above the results).
SHOW_REFERENCE_JS = """() => {
    const ref = document.getElementById('modify-reference');
    const box = ref && ref.getBoundingClientRect();
    if (box && (box.bottom < 0 || box.top > window.innerHeight)) ref.scrollIntoView({behavior: 'smooth'});
}"""


def check_description(text: str | None) -> None:
    """Before a search from the page: an empty description is one message, and the search does
    not run (the last results stay, no output shows an error). The search itself refuses it
    too, for API callers."""
    if not (text or "").strip():
        raise message("empty query: type a description of the product")


def _link_box(elem_id: str) -> gr.Textbox:
    return gr.Textbox(label="Link to this search", interactive=False, buttons=["copy"], elem_id=elem_id,
                      placeholder="search first: the link runs the same search for whoever opens it")


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
          **launch) -> gr.Blocks:
    """Build the app and serve it over HTTP (Gradio's `launch` arguments pass through).
    `models`: an AppModels (its retrievers may be set later), or the products Retriever with
    `looks`. `concurrency`: searches run at once, in every tab. `block=False` returns at once
    (then `demo.block_thread()`), as `prevent_thread_lock` does. `cache_cleanup`: (every N
    seconds, delete uploads and cached files older than M seconds), so that a public server's
    disk stays bounded; None keeps them until the server stops.

    Gradio may serve uploads, its own cache and one folder more: the thumbnails of catalog
    photos, which the app writes itself (never a catalog's image folders or a parent of them).
    """
    if not isinstance(models, AppModels):
        models = AppModels.of(models, looks)
    thumbnails = Thumbnails()
    # Served as they are, not copied into Gradio's cache per request: every file in the folder
    # is one the app wrote. (Gradio keeps one such list per process: the last app served wins;
    # an earlier one's thumbnails are then copied, as any allowed file is.)
    gr.set_static_paths([thumbnails.folder])
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
    return (f"<small>Model: <b>{escape(model_name(backbone))}</b> ({heads}) · running on "
            f"{backbone.device.type}, {str(backbone.dtype).removeprefix('torch.')}</small>")


def known_terms(catalog: Catalog) -> dict[str, list[str]]:
    """The categories, colours and patterns of a catalog's items (among at most EXAMPLE_SCAN of
    them; a look's from its products), by name: what a visitor can ask this catalog for."""
    found: dict[str, dict[str, None]] = {"category": {}, "color": {}, "pattern": {}}
    for item in catalog.items[:: max(1, len(catalog) // EXAMPLE_SCAN)]:
        for part in item.get("items") or [item]:
            for field, names in found.items():
                if isinstance(part, dict) and isinstance(part.get(field), str):
                    names.setdefault(part[field], None)
    return {field: sorted(names) for field, names in found.items()}


def vocabulary_line(catalog: Catalog, vocabulary: frozenset[str] | None) -> str:
    """Under a search box: the catalog's categories, colours and patterns that the model was
    trained on (its folder's vocabulary.json), so a visitor knows what to type; nothing for a
    model whose folder lists no vocabulary."""
    if vocabulary is None:
        return ""
    from .data.phrasing import tokens  # words as the training grammar counts them ("t-shirt": t, shirt)

    terms = {field: [n for n in names if tokens(n) and all(w in vocabulary for w in tokens(n))]
             for field, names in known_terms(catalog).items()}
    listed = {field: ", ".join(markdown_text(n) for n in names) for field, names in terms.items()}
    parts = [f"**{title}**: {listed[field]}" for field, title in (("color", "colours"), ("pattern", "patterns"))
             if terms[field]]
    products = (f"<details><summary><b>{len(terms['category'])} kinds of product</b> (show)</summary>"
                f"{listed['category']}</details>" if terms["category"] else "")  # the longest list, folded:
    # the results stay near the search box
    return f"<small>The words it knows: {' · '.join(parts)}{products}</small>" if parts or products else ""


def build_demo(models: AppModels | Retriever, thumbnails: Thumbnails | None = None, charts: str = "native",
               looks: Retriever | None = None, cache_cleanup: tuple[int, int] | None = CACHE_CLEANUP) -> gr.Blocks:
    """The app over `models` (or a products Retriever and `looks`, default: the same): its
    products catalog serves Describe and Modify, its looks catalog Drill down; loaded once and
    shared by every session. Gallery images are `thumbnails`; `charts`: native (drawn in the
    browser) or png (matplotlib, drawn by the server). Its look on phones is PAGE_CSS, which
    `serve` passes to launch."""
    if not isinstance(models, AppModels):
        models = AppModels.of(models, looks)
    products, looks = models.products_catalog, models.looks_catalog
    renderer = ChartRenderer(charts)
    h = Handlers(models, thumbnails or Thumbnails(), renderer)
    private = {"api_visibility": "private"}
    quiet = {**private, "show_progress": "hidden"}

    def show_notices(event, notes: gr.State, notice: gr.Markdown, results: gr.Gallery):
        """After a search: its notices in the tab's notice area, nothing selected in its results
        (a new search never opens zoomed on the result clicked in the last one), and its
        results in view. (A second event: what it sets stays out of the API's outputs. A
        gr.Gallery: in Gradio 6 a gr.update(selected_index=None) leaves the preview open.)"""
        return event.success(lambda n: (n, gr.Gallery(selected_index=None)), notes, [notice, results],
                             **quiet).success(None, js=SHOW_RESULTS_JS, **private)

    with gr.Blocks(title="hsl-demo: product search", delete_cache=cache_cleanup) as demo:
        gr.Markdown(
            "# Language-based product search\n"
            f"Catalogs: **{markdown_text(products.name)}** ({len(products)} products) for Describe and Modify, "
            f"**{markdown_text(looks.name)}** ({len(looks)} looks) for Drill down."
        )
        with gr.Tabs() as tabs:
            with gr.Tab(DESCRIBE.title, id=DESCRIBE.id):
                with gr.Row(equal_height=True):
                    text = gr.Textbox(label="Description", placeholder="e.g. green dotted scarf", scale=4,
                                      min_width=240, elem_id="describe-text")
                    k = results_slider(scale=1, min_width=160)
                search = gr.Button("Search", variant="primary", elem_id="describe-search")
                knows = gr.Markdown("", elem_id="describe-knows")
                examples = gr.Examples(EXAMPLES, inputs=[text], label="Examples (click one to search)",
                                       api_visibility="private", elem_id="describe-examples")
                notice = gr.Markdown("", elem_id="describe-notice", elem_classes="notice")
                gallery = _results_gallery("describe-gallery")
                gr.Markdown("<small>The box on each photo: the region the HSL object term matched best (what that "
                            "term looks at; the chart shows how much it counts). Click a result to see it larger "
                            "and highlight it in the chart.</small>")
                chart = renderer.component(DESCRIBE.chart, elem_id="describe-chart")
                with gr.Accordion("Scores as a table: similarity × weight per level and granularity", open=False):
                    table = gr.Dataframe(label="Breakdown", interactive=False, wrap=True)
                link = _link_box("describe-link")
                found, notes = gr.State(), gr.State()
                describe_out = [gallery, chart, table, found, notes, link]
                # An empty description is refused before the search (check_description): the last
                # results stay. (Not a Gradio validator: it answers a malformed API call's join
                # with an HTTP error instead of a message.)
                checked = {"fn": check_description, "inputs": [text], "outputs": None, **quiet}
                show_notices(search.click(**checked).success(h.describe, [text, k], describe_out, api_name="describe"),
                             notes, notice, gallery)
                show_notices(text.submit(**checked).success(h.describe, [text, k], describe_out, **private),
                             notes, notice, gallery)
                show_notices(examples.load_input_event.then(h.describe, [text, k], describe_out, **private),
                             notes, notice, gallery)
                gallery.select(h.describe_select, [found], [chart], **private)

            with gr.Tab(MODIFY.title, id=MODIFY.id):
                gr.Markdown("Start from a product (upload a photo, or pick one), say what to change. Click a "
                            "result to make it the next reference and walk through the catalog step by step.")
                with gr.Row():
                    with gr.Column(scale=1, min_width=260):
                        reference = image_upload(label="Reference", type="filepath", image_mode=None,
                                                 sources=["upload", "clipboard"], height=220,
                                                 elem_id="modify-reference")
                        ref_id = gr.Textbox(label="Reference product id", placeholder="e.g. p00024 (pick one below)",
                                            elem_id="modify-ref-id")
                        picks = gr.Gallery([h.pick_item(i) for i in h.picks], label="…or pick a product",
                                           columns=3, height="auto", allow_preview=False, object_fit="contain",
                                           elem_id="modify-picks")
                    with gr.Column(scale=3):
                        with gr.Row(equal_height=True):
                            change = gr.Textbox(label="Modification", placeholder="e.g. make it blue and striped",
                                                scale=4, min_width=240, elem_id="modify-text")
                            mk = results_slider(scale=1, min_width=160)
                        modify = gr.Button("Search", variant="primary", elem_id="modify-search")
                        with gr.Accordion("Examples: a reference and a change (click one to search)", open=False,
                                          elem_id="modify-examples"):
                            mexamples = gr.Examples(
                                [[*h._as_reference(i)[::-1], t] for i, t in MODIFY_EXAMPLES if i in products],
                                inputs=[reference, ref_id, change], api_visibility="private",
                                elem_id="modify-examples-table")
                        mnotice = gr.Markdown("", elem_id="modify-notice", elem_classes="notice")
                        # No preview: a click makes the result the reference (shown large on the left).
                        mgallery = _results_gallery("modify-gallery", columns=4, allow_preview=False)
                        gr.Markdown("<small>Click a result to make it the reference.</small>")
                        mchart = renderer.component(MODIFY.chart, elem_id="modify-chart")
                        mlink = _link_box("modify-link")
                mfound, mnotes = gr.State(), gr.State()
                modify_out = [mgallery, mchart, mfound, mnotes, mlink]
                show_notices(modify.click(h.modify, [reference, ref_id, change, mk], modify_out, api_name="modify"),
                             mnotes, mnotice, mgallery)
                show_notices(change.submit(h.modify, [reference, ref_id, change, mk], modify_out, **private),
                             mnotes, mnotice, mgallery)
                show_notices(mexamples.load_input_event.then(h.modify, [reference, ref_id, change, mk],
                                                             modify_out, **private), mnotes, mnotice, mgallery)
                picks.select(h.pick, None, [ref_id, reference], **private)
                # the new reference where the visitor looks (on a phone it is above, off the screen)
                mgallery.select(h.use_result, [mfound], [ref_id, reference, mchart, picks], **private).then(
                    None, js=SHOW_REFERENCE_JS, **private)
                no_pick = {**private, "fn": lambda: ("", gr.Gallery(selected_index=None)), "inputs": None,
                           "outputs": [ref_id, picks]}
                reference.upload(**no_pick)
                reference.clear(**no_pick)

            with gr.Tab(DRILL.title, id=DRILL.id):
                gr.Markdown("Describe a look one product at a time: each round adds a region query and re-ranks "
                            "the looks with all the queries so far.")
                with gr.Row(equal_height=True):
                    query = gr.Textbox(label="Add a product of the look", placeholder="e.g. a red handbag", scale=4,
                                       min_width=240, elem_id="drill-query")
                    with gr.Row(scale=1):
                        add = gr.Button("Add", variant="primary", min_width=60, elem_id="drill-add")
                        undo = gr.Button("Undo", min_width=60, elem_id="drill-undo")
                        reset = gr.Button("Reset", min_width=60, elem_id="drill-reset")
                dknows = gr.Markdown("", elem_id="drill-knows")
                dexamples = gr.Examples(DRILL_EXAMPLES, inputs=[query], label="Examples (click one to add it)",
                                        api_visibility="private", elem_id="drill-examples")
                rounds = gr.Markdown(rounds_markdown(None), label="Rounds", elem_id="drill-rounds")
                dnotice = gr.Markdown("", elem_id="drill-notice", elem_classes="notice")
                dgallery = _results_gallery("drill-gallery")
                gr.Markdown("<small>The boxes on each look: the region each query matched, labelled with the "
                            "query. Click a result to see it larger and highlight it in the charts.</small>")
                with gr.Row():
                    scores = renderer.component(DRILL.chart, elem_id="drill-scores", min_width=300)
                    moves = renderer.component("rank_chart", elem_id="drill-moves", min_width=300)
                dlink = _link_box("drill-link")
                session, dnotes = gr.State(), gr.State()
                drill_out = [dgallery, rounds, scores, moves, dlink, session, dnotes]
                for event in (add.click(h.drill_add, [query, session], drill_out, api_name="drill_add"),
                              query.submit(h.drill_add, [query, session], drill_out, **private),
                              dexamples.load_input_event.then(h.drill_add, [query, session], drill_out, **private)):
                    show_notices(event, dnotes, dnotice, dgallery).success(lambda: "", None, query, **quiet)
                show_notices(undo.click(h.drill_undo, [session], drill_out, api_name="drill_undo"), dnotes, dnotice,
                             dgallery)
                show_notices(reset.click(h.drill_reset, [session], drill_out, api_name="drill_reset"), dnotes,
                             dnotice, dgallery)
                dgallery.select(h.drill_select, [session], [scores, moves], **private)

        about = gr.Markdown("<small>Loading the model…</small>", elem_id="heads-status")
        notices = [notice, mnotice, dnotice]

        def open_page(request: gr.Request) -> dict:
            """The footer and the words the model knows, once the model is loaded; and for a page
            opened with a search in its address (see LinkSearch), that search, run."""
            products_model, looks_model = models.retrievers
            updates: dict = {about: footer(models), **dict.fromkeys(notices, ""),
                             knows: vocabulary_line(products, products_model.backbone.vocabulary),
                             dknows: vocabulary_line(looks, looks_model.backbone.vocabulary)}
            try:
                search = LinkSearch.of(dict(request.query_params)) if request is not None else None
            except gr.Error as e:
                gr.Warning(f"this link's search did not run: {e.message}")
                return updates
            if search is None:
                return updates
            updates[tabs] = gr.Tabs(selected=search.tab)
            try:
                if search.tab == "describe":
                    updates |= {text: search.text, k: search.k}
                    updates |= dict(zip(describe_out, h.describe(search.text, search.k, request)))
                    updates[notice] = updates[notes]
                elif search.tab == "modify":
                    updates |= dict(zip([ref_id, reference], h._as_reference(search.reference)
                                        if search.reference in products else (search.reference, None)))
                    updates |= {change: search.text, mk: search.k}
                    updates |= dict(zip(modify_out, h.modify(None, search.reference, search.text, search.k,
                                                             request)))
                    updates[mnotice] = updates[mnotes]
                else:
                    updates |= dict(zip(drill_out, h.run_link_rounds(list(search.rounds), request)))
                    updates[dnotice] = updates[dnotes]
            except gr.Error as e:  # a link to a search that cannot run: say why, and show the page anyway
                gr.Warning(f"this link's search did not run: {e.message}")
                kept = (about, tabs, text, k, ref_id, change, mk, knows, dknows, *notices)
                updates = {c: v for c, v in updates.items() if c in kept}
            return updates

        refuse_malformed_payloads(demo)
        # First, at once: say the model is loading where the results will be (the search waits);
        # then, without spinners over the page, whatever needs the model.
        demo.load(lambda: [LOADING if not models.loaded else ""] * len(notices), None, notices, **quiet).then(
            open_page, None, [about, tabs, text, k, *describe_out, ref_id, reference, change, mk, *modify_out,
                              *drill_out, knows, dknows, *notices], **quiet)
    return demo
