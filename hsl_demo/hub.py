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
