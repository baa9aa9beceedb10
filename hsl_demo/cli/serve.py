"""`hsl-demo serve` (what `python app.py` runs): the page first, then the model behind it."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import threading

from .args import positive_int

NAME = "serve"


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve the web demo (what `python app.py` runs)",
                       description="The web demo: one model and two catalogs, loaded once and shared by every "
                       "visitor. Host and port: GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (default 127.0.0.1:7860).")
    p.add_argument("--model", default=None, help="model folder or Hub repo id ($HSL_DEMO_MODEL; default: embedded)")
    p.add_argument("--catalog", default=None, help="products catalog for Describe and Modify: name or folder "
                   "($HSL_DEMO_CATALOG; default products)")
    p.add_argument("--looks-catalog", default=None, help="looks catalog for Drill down: name or folder "
                   "($HSL_DEMO_LOOKS_CATALOG; default looks)")
    p.add_argument("--max-params", type=positive_int, default=argparse.SUPPRESS, metavar="N",
                   help="the most parameters a model or head config may ask for (default 4000000000)")
    p.add_argument("--device", default=argparse.SUPPRESS, help="cuda or cpu ($HSL_DEMO_DEVICE; default: cuda when "
                   "present, and on ZeroGPU)")
    p.add_argument("--concurrency", type=positive_int, default=4, help="searches run at once, in every tab "
                   "(default 4)")
    p.add_argument("--charts", choices=("native", "png"), default="native",
                   help="native: charts drawn in the browser (default); png: matplotlib images drawn per request "
                   "(what the app did before; kept for bench/bench_load.py's comparison)")
    p.add_argument("--cache-ttl", type=int, default=900, metavar="SECONDS",
                   help="uploads and Gradio's cached files are deleted this long after they were written, checked "
                   "every third of it, so a public server's disk stays bounded (default 900; 0: kept until it stops)")


def run(args: argparse.Namespace) -> None:
    import gradio as gr

    from ..catalog import Catalog
    from ..defaults import default_catalog, default_looks_catalog
    from ..gpu import device_setting
    from ..hub import check_model_spec
    from ..thumbnails import Thumbnails
    from ..ui import AppModels, serve

    _limit_malloc_arenas()
    check_model_spec(args.model)  # a model path that is no folder fails before the page is served
    device = device_setting(args.device)  # --device, else $HSL_DEMO_DEVICE (else cuda on ZeroGPU)

    # The catalogs first (a wrong one fails at once), then the page, served before torch,
    # open_clip and the model load behind it (a search sent meanwhile waits for them).
    models = AppModels(Catalog.open(args.catalog or default_catalog()),
                       Catalog.open(args.looks_catalog or default_looks_catalog()))
    for catalog in (models.products_catalog, models.looks_catalog):
        catalog.start_prefetch()  # while the model loads (warm_up waits for it)
    with _stopped_by_sigterm():
        cleanup = (max(1, args.cache_ttl // 3), args.cache_ttl) if args.cache_ttl > 0 else None
        thumbnails = Thumbnails()
        # Served as they are, not copied into Gradio's cache per request: every file in the folder
        # is one the app wrote. (One list per process: this process serves one app.)
        gr.set_static_paths([thumbnails.folder])
        demo = serve(models, concurrency=args.concurrency, charts=args.charts, block=False, cache_cleanup=cleanup,
                     thumbnails=thumbnails)
        try:
            models.set(*_load_retrievers(models, args.model, device, args.max_params))
        except BaseException:
            demo.close()
            raise
        demo.block_thread()  # until Ctrl-C (it closes the server) or SIGTERM (exits, cleaning up)
@contextlib.contextmanager
def _stopped_by_sigterm():
    """SIGTERM (a Space or a container stopping the server) ends the server as Ctrl-C does, so
    that what it wrote (the thumbnails folder) is removed on the way out, not left behind."""
    def stop(signum, frame):
        raise SystemExit(128 + signum)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
def _limit_malloc_arenas(arenas: int = 2) -> None:
    """At most `arenas` glibc malloc arenas. The server's worker threads each get an arena of
    their own otherwise, and its resident memory grew about 25 MB a minute under a steady
    load (bench/bench_load.py --soak: +94 MB in 9 minutes; with 2 arenas, +1 MB). Only
    for this process, and only on glibc (elsewhere, nothing)."""
    import ctypes
    import ctypes.util

    if os.environ.get("MALLOC_ARENA_MAX"):  # glibc read it at start-up: the operator's choice
        return
    m_arena_max = -8  # glibc's malloc.h
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt(m_arena_max, arenas)
    except (OSError, AttributeError):
        pass
def _load_retrievers(models, model: str | None, device: str | None, max_params: int | None = None) -> tuple:
    """The products and looks retrievers of `models`' catalogs, for the model (default: embedded)."""
    import torch

    from ..hub import load_backbone
    from ..search import Retriever, load_heads

    # One thread per search: the server runs --concurrency searches at once, and small
    # per-query work split over threads that compete for 2 cores is 4x slower, not faster.
    torch.set_num_threads(1)
    backbone = load_backbone(model, device=device, max_params=max_params)
    heads = load_heads(backbone, max_params)
    products, looks = Retriever(backbone, models.products_catalog, **heads), Retriever(backbone, models.looks_catalog,
                                                                                         **heads)
    for retriever in (products, looks):
        retriever.warm_up()  # now, rather than in the first visitor's queries
    return products, looks
