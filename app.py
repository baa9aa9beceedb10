"""Run the demo: `python app.py` (host/port from GRADIO_SERVER_NAME / GRADIO_SERVER_PORT).

The model and catalog come from --model/--catalog, or HSL_DEMO_MODEL/HSL_DEMO_CATALOG, or the
embedded defaults (checkpoints/demo and the demo products catalog).
"""

from __future__ import annotations

import argparse
import sys

from hsl_demo.defaults import default_catalog, default_model
from hsl_demo.errors import HslDemoError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="hsl-demo web app")
    parser.add_argument("--model", default=default_model(), help="model folder or Hub repo id")
    parser.add_argument("--catalog", default=default_catalog(), help="catalog name or folder")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when present)")
    args = parser.parse_args(argv)

    from hsl_demo.search import Retriever
    from hsl_demo.ui import build_demo

    try:
        retriever = Retriever.from_pretrained(args.model, args.catalog, device=args.device)
    except HslDemoError as e:
        print(f"hsl-demo: error: {e}", file=sys.stderr)
        return 2
    demo = build_demo(retriever)
    demo.queue(default_concurrency_limit=4).launch(
        allowed_paths=[str(retriever.catalog.image_dir())]
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
