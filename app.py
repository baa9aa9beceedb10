"""The Space entry point: `python app.py [FLAGS]` is `hsl-demo serve [FLAGS]`.

Host and port come from GRADIO_SERVER_NAME / GRADIO_SERVER_PORT; the model and catalogs from
the flags or the environment (HSL_DEMO_MODEL, HSL_DEMO_CATALOG, HSL_DEMO_LOOKS_CATALOG), else
the embedded defaults. See `hsl-demo serve --help`.
"""

import sys

from hsl_demo.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
