"""The heads that sit on the backbone, and how they are saved and loaded.

A model folder keeps each trained head in a subfolder named after it (`hsl/`, ...) in the
Hugging Face mixin format: config.json + model.safetensors (+ training.json, our notes).
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from torch import nn

from ..errors import HslDemoError
from ..fileio import atomic_dir, write_json


def save_head(head: nn.Module, folder: str | Path, info: dict | None = None) -> None:
    """Write `head` with save_pretrained into `folder`, replacing it in one rename."""
    with atomic_dir(folder) as tmp:
        head.save_pretrained(tmp)
        if info:
            write_json(tmp / "training.json", info)


def load_head(cls: type, folder: str | Path):
    """Load a head of class `cls` from `folder` (safetensors only), in eval mode."""
    folder = Path(folder)
    for name in ("config.json", "model.safetensors"):
        if not (folder / name).is_file():
            raise HslDemoError(f"{folder}: no {name} (a head folder holds config.json and model.safetensors)")
    try:
        json.loads((folder / "config.json").read_text())
        with contextlib.redirect_stdout(io.StringIO()):  # the mixin prints "Loading weights..."
            head = cls.from_pretrained(folder)
    except json.JSONDecodeError as e:
        raise HslDemoError(f"{folder / 'config.json'}: not valid JSON ({e.msg})") from None
    except (TypeError, ValueError, RuntimeError, OSError) as e:
        raise HslDemoError(f"{folder}: could not load the {cls.__name__} ({e})") from None
    return head.eval()


def head_fingerprint(head: nn.Module) -> str:
    """A short hash of a head's weights, so a catalog knows which head its features came from."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(head.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().round(5).tobytes())
    return digest.hexdigest()[:16]
