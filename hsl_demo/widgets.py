"""The parts every tab of the app is made of: result galleries, the Results slider, notices,
links, charts, messages instead of tracebacks, and what a mode's tab is given (`TabContext`)
and gives back (`TabParts`). A mode builds its tab from these (hsl_demo/modes/*/tab.py);
hsl_demo/ui.py puts the tabs on one page.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

import gradio as gr
from PIL import Image

from . import charts
from .errors import HslDemoError
from .gpu import gpu_task
from .query import MAX_QUERY_CHARS, shorten, tokens
from .results import SearchResult
from .thumbnails import Thumbnails

if TYPE_CHECKING:  # the page is served before torch and the model are loaded
    from .catalog import Catalog

EXAMPLE_SCAN = 5_000  # items read to pick them


CHART_MODES = ("native", "png")  # drawn in the browser, or matplotlib PNGs drawn per request


MAX_LINK_PARAM = 10 * (MAX_QUERY_CHARS + 1)  # characters of one parameter of a link: ten rounds' queries


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
    matplotlib PNGs of each chart's twin (`png`, kept to measure what they cost)."""

    def __init__(self, mode: str = "native"):
        if mode not in CHART_MODES:
            raise ValueError(f"unknown chart mode {mode!r} ({', '.join(CHART_MODES)})")
        self.native = mode == "native"

    def component(self, chart: charts.Chart, **kwargs):
        """The (empty) output component of `chart`."""
        return charts.component(chart.spec, **kwargs) if self.native else gr.Plot(show_label=False, **kwargs)

    def render(self, chart: charts.Chart, results: list[SearchResult], selected: int | None = None, **extra):
        """`chart` of `results` (the top ones, and the `selected` one when it is further down)."""
        shown, highlight = charts.shown(results or [], selected)
        if self.native:
            return charts.as_update(chart.rows(shown, highlight, **extra))
        return chart.figure(shown, highlight)


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


def selected_index(evt: gr.SelectData | None, shown: int) -> int | None:
    """The index a select event names, when it is one of the `shown` items (a hand-made event
    may carry anything)."""
    index = getattr(evt, "index", None)
    return index if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < shown else None


def results_gallery(elem_id: str, columns: int = 6, **kwargs) -> gr.Gallery:
    """A results gallery: `columns` wide on a wide screen, fewer on narrow ones (PAGE_CSS)."""
    return gr.Gallery(label="Results", columns=columns, height="auto", object_fit="contain", elem_id=elem_id,
                      elem_classes="results", **kwargs)


# After a search: its results scrolled into view when they start below the screen's bottom
# (on a phone, under the search box, examples and the words the model knows).
SHOW_RESULTS_JS = """() => {
    const tab = [...document.querySelectorAll('.results')].find(g => g.offsetParent !== null);
    if (tab && tab.getBoundingClientRect().top > window.innerHeight - 160) tab.scrollIntoView({behavior: 'smooth'});
}"""


def link_box(elem_id: str) -> gr.Textbox:
    return gr.Textbox(label="Link to this search", interactive=False, buttons=["copy"], elem_id=elem_id,
                      placeholder="search first: the link runs the same search for whoever opens it")


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

    terms = {field: [n for n in names if tokens(n) and all(w in vocabulary for w in tokens(n))]
             for field, names in known_terms(catalog).items()}
    listed = {field: ", ".join(markdown_text(n) for n in names) for field, names in terms.items()}
    parts = [f"**{title}**: {listed[field]}" for field, title in (("color", "colours"), ("pattern", "patterns"))
             if terms[field]]
    products = (f"<details><summary><b>{len(terms['category'])} kinds of product</b> (show)</summary>"
                f"{listed['category']}</details>" if terms["category"] else "")  # the longest list, folded:
    # the results stay near the search box
    return f"<small>The words it knows: {' · '.join(parts)}{products}</small>" if parts or products else ""


PRIVATE = {"api_visibility": "private"}  # an event the page uses, not the API
QUIET = {**PRIVATE, "show_progress": "hidden"}


def show_notices(event, notes: gr.State, notice: gr.Markdown, results: gr.Gallery):
    """After a search: its notices in the tab's notice area, nothing selected in its results
    (a new search never opens zoomed on the result clicked in the last one), and its
    results in view. (A second event: what it sets stays out of the API's outputs. A
    gr.Gallery: in Gradio 6 a gr.update(selected_index=None) leaves the preview open.)"""
    return event.success(lambda n: (n, gr.Gallery(selected_index=None)), notes, [notice, results],
                         **QUIET).success(None, js=SHOW_RESULTS_JS, **PRIVATE)


def link_k(params: dict[str, str]) -> int:
    """A link's `k`: 1 to 50, else the default."""
    k = params.get("k", "").strip()
    return int(k) if k.isascii() and k.isdigit() and len(k) <= 2 and 1 <= int(k) <= 50 else DEFAULT_K


def check_link(params: dict[str, str]) -> None:
    """A parameter longer than MAX_LINK_PARAM is a gr.Error (what the page shows as a warning)."""
    for name, value in params.items():
        if len(value) > MAX_LINK_PARAM:
            raise message(f"its {shorten(name)!r} is too long ({len(value):,} characters; at most "
                          f"{MAX_LINK_PARAM:,})")


@dataclass
class TabContext:
    """What a mode's tab is built with: the catalog it searches (known before the model loads),
    its retriever (`retriever()` waits for the model), the thumbnails and the chart renderer."""

    catalog: Catalog
    retriever: Callable[[], Any]
    thumbnails: Thumbnails
    charts: ChartRenderer

    @staticmethod
    def gpu(fn: Callable) -> Callable:
        """`fn` as a GPU function on ZeroGPU (for the handlers that run the model)."""
        return gpu_task(fn)


@dataclass
class TabParts:
    """What a built tab gives the page: its notice area (where the page says "loading" first),
    the query parameter that makes a link to it (e.g. `q`), `opened(params, request)`: the
    updates to make when the page opens, the model loaded (the words it knows; with `params`,
    the link's search run), and `link_inputs(params)`: the inputs a link fills in, kept when its
    search cannot run. `outputs` lists every component either may set."""

    notice: gr.Markdown
    link_key: str
    opened: Callable[[dict[str, str] | None, gr.Request | None], dict]
    link_inputs: Callable[[dict[str, str]], dict] = lambda params: {}
    outputs: list = dataclass_field(default_factory=list)
