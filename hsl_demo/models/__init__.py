"""The heads that sit on the backbone, and how they are saved and loaded.

A model folder keeps each trained head in a subfolder named after it (`hsl/`, ...) in the
Hugging Face mixin format: config.json + model.safetensors (+ training.json, our notes).
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import torch
from torch import nn

from ..defaults import default_max_params
from ..errors import HslDemoError
from ..fileio import atomic_dir, write_json


def save_head(head: nn.Module, folder: str | Path, info: dict | None = None, card: dict | None = None) -> None:
    """Write `head` with save_pretrained into `folder`, replacing it in one rename.

    Weights are stored in float16. `info` (how it was trained) goes to training.json; `card`
    fills the head class's model card template (the mixin writes README.md from it).
    """
    with atomic_dir(folder) as tmp:
        # float16 on disk halves the size (the repo ships these); loading casts back to float32,
        # and the head in memory is rounded the same way so its fingerprint matches the file's.
        head.to(torch.float16).save_pretrained(tmp, model_card_kwargs=card or {})
        head.to(torch.float32)
        if info:
            write_json(tmp / "training.json", info)
        if info and "catalog" in info:  # trained on a user's catalog: say on what, and how it scored
            with open(tmp / "README.md", "a", encoding="utf-8") as f:
                f.write(catalog_card_section(info))


def catalog_card_section(info: dict) -> str:
    """The model card's account of a head trained with `--catalog`: the catalog (name, size,
    fingerprint) and the held-out evaluation, untrained against trained."""
    catalog, table = info["catalog"], info.get("evaluation", {})
    lines = ["", "", "## Training data and evaluation", "",
             f"Trained on catalog `{catalog['name']}` ({catalog['items']} items, fingerprint "
             f"`{catalog['fingerprint']}`, indexed with `{catalog.get('model')}`); evaluated on its "
             f"{catalog['heldout_items']} held-out items.", ""]
    untrained, trained = table.get("untrained", {}), table.get("trained", {})
    metrics = [k for k in untrained if k != "score"]
    if metrics:
        lines += ["| head | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|",
                  "| untrained | " + " | ".join(f"{untrained[k]:.3f}" for k in metrics) + " |"]
        if trained:
            lines.append(f"| trained (step {trained.get('step')}) | "
                         + " | ".join(f"{trained[k]:.3f}" for k in metrics) + " |")
    return "\n".join(lines) + "\n"


MAX_SETTING = 4096  # the largest count a head's config may hold (levels, width, heads...), before building it


def check_size(build, what: str, max_params: int | None = None) -> int:
    """Build a model on torch's "meta" device (shapes only: no memory, no init work) and count
    its parameters; more than `max_params` (default: defaults.default_max_params) is an
    HslDemoError, before the real build allocates anything. Returns the count."""
    limit = max_params if max_params is not None else default_max_params()
    with torch.device("meta"):
        count = sum(p.numel() for p in build().parameters())
    if count > limit:
        raise HslDemoError(f"{what} asks for {count:,} parameters (limit {limit:,}; raise it with --max-params "
                           "or $HSL_DEMO_MAX_PARAMS if it is meant)")
    return count


def load_head(cls: type, folder: str | Path, max_params: int | None = None):
    """Load a head of class `cls` from `folder` (safetensors only), in eval mode. Its config is
    checked first: a JSON object of the class's settings, whose size fits `max_params`."""
    folder = Path(folder)
    for name in ("config.json", "model.safetensors"):
        if not (folder / name).is_file():
            raise HslDemoError(f"{folder}: no {name} (a head folder holds config.json and model.safetensors)")
    try:
        config = json.loads((folder / "config.json").read_text())
        if not isinstance(config, dict):
            raise HslDemoError(f"{folder / 'config.json'}: not a JSON object of the head's settings")
        # a count so large that even its shapes would take minutes to build (levels: 1000000)
        huge = {k: v for k, v in config.items() if isinstance(v, int) and not isinstance(v, bool) and v > MAX_SETTING}
        if huge:
            name, value = next(iter(huge.items()))
            raise HslDemoError(f"{folder / 'config.json'}: {name} = {value:,} is beyond any head "
                               f"(at most {MAX_SETTING:,})")
        check_size(lambda: cls(**config), f"{folder / 'config.json'}", max_params)
        with contextlib.redirect_stdout(io.StringIO()):  # the mixin prints "Loading weights..."
            head = cls.from_pretrained(folder)
    except json.JSONDecodeError as e:
        raise HslDemoError(f"{folder / 'config.json'}: not valid JSON ({e.msg})") from None
    except RecursionError:
        raise HslDemoError(f"{folder / 'config.json'}: nested too deeply") from None
    except HslDemoError:
        raise
    except Exception as e:  # a config the class does not take, weights that are not safetensors
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise HslDemoError(f"{folder}: could not load the {cls.__name__} ({reason})") from None
    return head.eval()


def head_fingerprint(head: nn.Module) -> str:
    """A short hash of a head's weights, so a catalog knows which head its features came from."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(head.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().round(5).tobytes())
    return digest.hexdigest()[:16]
