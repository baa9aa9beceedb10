"""Where the app's searches run: the device setting (HSL_DEMO_DEVICE / --device) and ZeroGPU.

On a ZeroGPU Space the GPU exists only while a function decorated with the `spaces` package's
`spaces.GPU` runs; the model is moved to `cuda` at load and the package's torch patching puts
it on the GPU lent for each such call (Hugging Face's documented ZeroGPU usage). Elsewhere,
`spaces.GPU` returns the function unchanged (its own off-ZeroGPU fallback, read in spaces
0.51.3's `zero/decorator.py`), and without the package nothing is wrapped at all.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Callable
from typing import TypeVar

from .errors import HslDemoError

DEVICE_ENV = "HSL_DEMO_DEVICE"
ZERO_GPU_ENV = "SPACES_ZERO_GPU"  # what the `spaces` package reads to know it runs on ZeroGPU
_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")

F = TypeVar("F", bound=Callable)


def on_zero_gpu() -> bool:
    """Whether this process runs on ZeroGPU hardware (as the `spaces` package decides it)."""
    return os.environ.get(ZERO_GPU_ENV, "").lower() in ("1", "t", "true")


def device_setting(flag: str | None = None) -> str | None:
    """The device the app loads its model on: `flag` (--device), else $HSL_DEMO_DEVICE, else
    `cuda` on ZeroGPU, else None (the backbone's default: cuda when present)."""
    value = flag or os.environ.get(DEVICE_ENV) or None
    if value is None:
        return "cuda" if on_zero_gpu() else None
    value = value.strip().lower()
    if _DEVICE.match(value) is None:
        source = "--device" if flag else DEVICE_ENV
        raise HslDemoError(f"{source} {value!r}: not a device (cpu, cuda or cuda:N)")
    return value


def gpu_task(fn: F) -> F:
    """`fn` under `spaces.GPU` when the `spaces` package is installed (the decorator returns `fn`
    itself off ZeroGPU), else `fn` unchanged."""
    if importlib.util.find_spec("spaces") is None:
        return fn
    import spaces

    return spaces.GPU(fn)


def mcp_available() -> bool:
    """Whether Gradio's MCP server can run here (the `gradio[mcp]` extra installs `mcp`)."""
    return importlib.util.find_spec("mcp") is not None
