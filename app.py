"""The Space entry point: `python app.py [FLAGS]` is `hsl-demo serve [FLAGS]`.

Host and port come from GRADIO_SERVER_NAME / GRADIO_SERVER_PORT; the model and catalogs from
the flags or the environment (HSL_DEMO_MODEL, HSL_DEMO_CATALOG, HSL_DEMO_LOOKS_CATALOG), else
the embedded defaults; the device from --device or HSL_DEMO_DEVICE. See `hsl-demo serve --help`;
`hsl-demo space` writes a Space of its own with an app.py like this one (docs/space.md).
"""

import importlib.util
import sys

if importlib.util.find_spec("spaces") is not None:
    import spaces  # noqa: F401  (first, before torch, as ZeroGPU asks)

from hsl_demo.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
