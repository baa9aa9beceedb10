"""One loader for model folders: a local path or a Hugging Face Hub repo id.

A model folder holds the backbone in open_clip's format (open_clip_config.json +
open_clip_model.safetensors) and, in subfolders, our heads in the Hub mixin format
(config.json + model.safetensors). Only safetensors are ever fetched or loaded.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import HslDemoError

HUB_PREFIX = "hf-hub:"
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# What a model folder may contain; pickled weights (*.bin, *.pt, *.pth) are never downloaded.
ALLOWED_FILES = ["*.json", "*.safetensors", "*.md", "*.txt", "*/*.json", "*/*.safetensors"]


def is_repo_id(spec: str) -> bool:
    return spec.startswith(HUB_PREFIX) or (REPO_ID.match(spec) is not None and not os.path.exists(spec))


def resolve_model_dir(spec: str, revision: str | None = None) -> Path:
    """A local folder for `spec`: the folder itself, or the Hub snapshot of a repo id.

    Honours HF_HUB_OFFLINE (then only the local Hugging Face cache is used) and HF_HUB_CACHE.
    """
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    if not is_repo_id(spec):
        raise HslDemoError(f"model {spec!r}: no such folder, and not a Hugging Face repo id (org/name)")
    repo_id = spec.removeprefix(HUB_PREFIX)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return Path(snapshot_download(repo_id=repo_id, revision=revision, allow_patterns=ALLOWED_FILES))
    except LocalEntryNotFoundError:
        raise HslDemoError(
            f"model {repo_id!r} is not in the Hugging Face cache and the Hub cannot be reached "
            "(HF_HUB_OFFLINE is set or there is no network)"
        ) from None
    except GatedRepoError:
        raise HslDemoError(f"model {repo_id!r} is gated: log in with `hf auth login` first") from None
    except RepositoryNotFoundError:
        raise HslDemoError(f"model {repo_id!r}: no such repository on the Hugging Face Hub") from None
    except RevisionNotFoundError:
        raise HslDemoError(f"model {repo_id!r}: no revision {revision!r}") from None
    except (HfHubHTTPError, OSError) as e:
        raise HslDemoError(f"model {repo_id!r}: download failed ({type(e).__name__}: {e})") from None


# What `push` publishes: configs, safetensors weights and model cards, nothing else.
PUSH_SUFFIXES = (".json", ".safetensors")
HEAD_NAMES = {
    "hsl": "HSL re-ranking head (hierarchical similarity over levels and object/image granularity)",
    "composed": "composed-query head (reference image + modification text, adaptive weights)",
    "hmrn": "HMRN drill-down head (multi-round region queries: local, global, reasoning)",
}


def publishable_files(folder: Path) -> list[Path]:
    """The files of a model folder that `push` uploads, relative to it: *.json, *.safetensors
    and README.md, at any depth (pickled weights, logs and the rest stay home). Symbolic links
    are followed: a model downloaded from the Hub is a cache snapshot made of them."""
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file()
                  and (p.suffix in PUSH_SUFFIXES or p.name == "README.md"))


def model_card(folder: Path, repo_id: str) -> str:
    """A README.md for a model folder that has none: its backbone and the heads found."""
    import json

    cfg = json.loads((folder / "open_clip_config.json").read_text()).get("model_cfg", {})
    vision, text = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
    lines = [
        "---", "library_name: open_clip", "tags: [hsl-demo, image-retrieval, product-search, open_clip]", "---",
        f"# {repo_id.split('/')[-1]}", "",
        "An hsl-demo model folder: an open_clip backbone and the heads hsl-demo uses for "
        "language-based product image retrieval.", "",
        "## Backbone", "",
        f"open_clip model (`open_clip_config.json` + `open_clip_model.safetensors`): embed dim "
        f"{cfg.get('embed_dim', '?')}; vision tower {vision.get('image_size', '?')} px, patch "
        f"{vision.get('patch_size', '?')}, {vision.get('layers', '?')} layers, width {vision.get('width', '?')}; "
        f"text tower context {text.get('context_length', '?')}, {text.get('layers', '?')} layers, width "
        f"{text.get('width', '?')}.", "",
        "## Heads", "",
    ]
    heads = [d for d in sorted(folder.iterdir()) if d.is_dir() and (d / "config.json").is_file()
             and (d / "model.safetensors").is_file()]
    for d in heads:
        head_cfg = json.loads((d / "config.json").read_text())
        settings = ", ".join(f"{k} {v}" for k, v in head_cfg.items() if not isinstance(v, (dict, list)))
        lines.append(f"- `{d.name}/`: {HEAD_NAMES.get(d.name, 'head')} ({settings}).")
    if not heads:
        lines.append("None: the backbone alone (global cosine search).")
    lines += [
        "", "## Use", "",
        "```bash",
        f"HSL_DEMO_MODEL={repo_id} python app.py                  # the web demo",
        f"hsl-demo search --model {repo_id} --text \"green dotted scarf\"",
        "```", "",
        "Only safetensors weights are published and loaded.", "",
    ]
    return "\n".join(lines)


def push_model(folder: str | Path, repo_id: str, private: bool = False, token: str | None = None,
               api=None) -> dict:
    """Publish a model folder to the Hugging Face Hub: create the repo (if needed) and upload
    its *.json, *.safetensors and README.md files, with a generated model card when the
    folder has no README.md. Returns {"url", "files", "card_generated"}."""
    import shutil
    import tempfile

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise HslDemoError(f"model folder {str(folder)!r}: no such folder")
    for name in ("open_clip_config.json", "open_clip_model.safetensors"):
        if not (folder / name).is_file():
            raise HslDemoError(f"model folder {str(folder)!r} has no {name}: not an hsl-demo model folder")
    repo_id = repo_id.removeprefix(HUB_PREFIX)
    if REPO_ID.match(repo_id) is None:
        raise HslDemoError(f"--repo {repo_id!r}: not a Hugging Face repo id (ORG/NAME)")
    files = publishable_files(folder)
    from huggingface_hub import HfApi

    api = api or HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="hsl-demo-push-") as tmp:
        staging = Path(tmp) / "model"
        for rel in files:
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(folder / rel, staging / rel)
        card_generated = not (staging / "README.md").is_file()
        if card_generated:
            (staging / "README.md").write_text(model_card(folder, repo_id))
        try:
            url = api.create_repo(repo_id, token=token, private=private, exist_ok=True)
            api.upload_folder(repo_id=repo_id, folder_path=staging, token=token,
                              commit_message="Upload hsl-demo model",
                              allow_patterns=["*.json", "*.safetensors", "README.md", "*/README.md"])
        except Exception as e:  # the network boundary: HTTP errors, no token, no connection
            raise HslDemoError(f"push to {repo_id!r} failed ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    return {"url": str(url), "files": [str(p) for p in files] + (["README.md"] if card_generated else []),
            "card_generated": card_generated}
