"""`hsl-demo convert-weights`: a pickled-only open_clip model made a safetensors model folder.

Loading stays safetensors-only; this is the one place a pickle is read, on the user's explicit
request, with torch's restricted unpickler (`weights_only=True`: tensors and plain containers,
no arbitrary code), once, after which the model loads from the folder it writes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .backbone import Backbone, check_config
from .errors import HslDemoError
from .hub import HUB_PREFIX, TOKENIZER_FILES, is_repo_id

CONFIG = "open_clip_config.json"
PICKLED_WEIGHTS = ("open_clip_pytorch_model.bin", "open_clip_model.pt", "pytorch_model.bin")


def _source_files(source: str, config: str | None) -> tuple[Path, Path]:
    """The pickled weights and the open_clip config of `source` (a file, a folder or a Hub repo)."""
    path = Path(source).expanduser()
    if path.is_file():
        weights = path
    elif path.is_dir():
        found = [path / name for name in PICKLED_WEIGHTS if (path / name).is_file()]
        if not found:
            raise HslDemoError(f"{path}: no pickled open_clip weights ({', '.join(PICKLED_WEIGHTS)})")
        weights = found[0]
    elif is_repo_id(source):
        from huggingface_hub import snapshot_download

        try:
            folder = Path(snapshot_download(repo_id=source.removeprefix(HUB_PREFIX),
                                            allow_patterns=[CONFIG, *PICKLED_WEIGHTS, *TOKENIZER_FILES]))
        except Exception as e:  # not cached offline, no such repo, no network
            raise HslDemoError(f"{source}: could not be fetched ({type(e).__name__})") from None
        return _source_files(str(folder), config)
    else:
        raise HslDemoError(f"{source}: no such file or folder, and not a Hugging Face repo id (org/name)")
    config_path = Path(config).expanduser() if config else weights.parent / CONFIG
    if not config_path.is_file():
        raise HslDemoError(f"{config_path}: no open_clip config (give one with --config)")
    return weights, config_path


def convert_weights(source: str, out: str | Path, config: str | None = None, max_params: int | None = None) -> Path:
    """Write `out`: the open_clip config, the weights as open_clip_model.safetensors and the
    tokenizer files found beside them; checked by loading it before it takes its name."""
    import torch
    from safetensors.torch import save

    from .fileio import atomic_dir, atomic_file

    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise HslDemoError(f"--out {out} exists and is not empty; give a new folder")
    weights, config_path = _source_files(source, config)
    check_config(config_path, max_params)  # a config open_clip can build, of a size within the limit
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as e:  # not a pickle, or one holding more than tensors (refused by the restricted loader)
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
        raise HslDemoError(f"{weights}: not readable as plain tensors ({type(e).__name__}: {first})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):  # a training checkpoint
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise HslDemoError(f"{weights}: not a state dict of tensors")
    tensors = {k.removeprefix("module."): v.contiguous() for k, v in state.items()}
    with atomic_dir(out) as tmp:
        shutil.copyfile(config_path, tmp / CONFIG)
        for name in TOKENIZER_FILES:
            if (config_path.parent / name).is_file():
                shutil.copyfile(config_path.parent / name, tmp / name)
        with atomic_file(tmp / "open_clip_model.safetensors", "wb") as f:
            f.write(save(tensors, metadata={"format": "pt"}))
        Backbone.from_folder(tmp, device="cpu")  # the weights fit the config, or nothing is written
    return out
