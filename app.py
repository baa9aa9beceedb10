"""Run the demo: `python app.py` (host/port from GRADIO_SERVER_NAME / GRADIO_SERVER_PORT).

The model and catalogs come from the flags, or the environment, or the embedded defaults:

    --model          HSL_DEMO_MODEL          model folder or Hub repo id (default: checkpoints/demo)
    --catalog        HSL_DEMO_CATALOG        products catalog, Describe and Modify (default: products)
    --looks-catalog  HSL_DEMO_LOOKS_CATALOG  looks catalog, Drill down (default: looks)

The model and both catalogs are loaded once at start-up and shared by every session. On a
Hugging Face Space, set HSL_DEMO_MODEL to the model's repo id.
"""

from __future__ import annotations

import argparse
import os
import sys

from hsl_demo.defaults import default_catalog, default_model
from hsl_demo.errors import HslDemoError


def default_looks_catalog() -> str:
    return os.environ.get("HSL_DEMO_LOOKS_CATALOG") or "looks"


def load(model: str, catalog: str, looks_catalog: str, device: str | None = None):
    """One backbone and its heads, and a Retriever for each catalog sharing them."""
    from hsl_demo.backbone import Backbone
    from hsl_demo.catalog import Catalog
    from hsl_demo.search import Retriever, load_heads

    products, looks = Catalog.open(catalog), Catalog.open(looks_catalog)  # cheap checks first
    backbone = Backbone.load(model, device=device)
    heads = load_heads(backbone)
    products, looks = Retriever(backbone, products, **heads), Retriever(backbone, looks, **heads)
    looks.hmrn_store()  # the drill-down index, built now rather than in the first visitor's round
    return products, looks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="hsl-demo web app")
    parser.add_argument("--model", default=default_model(), help="model folder or Hub repo id ($HSL_DEMO_MODEL)")
    parser.add_argument("--catalog", default=default_catalog(),
                        help="products catalog: name or folder ($HSL_DEMO_CATALOG, default products)")
    parser.add_argument("--looks-catalog", default=default_looks_catalog(),
                        help="looks catalog for Drill down: name or folder ($HSL_DEMO_LOOKS_CATALOG, default looks)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when present)")
    parser.add_argument("--concurrency", type=int, default=4, help="searches run at once (default 4)")
    args = parser.parse_args(argv)

    try:
        products, looks = load(args.model, args.catalog, args.looks_catalog, args.device)
    except HslDemoError as e:
        print(f"hsl-demo: error: {e}", file=sys.stderr)
        return 2
    from hsl_demo.ui import serve

    serve(products, looks, concurrency=args.concurrency)
    return 0


if __name__ == "__main__":
    sys.exit(main())
