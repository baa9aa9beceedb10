"""Where a model comes from: a local folder, a Hugging Face Hub repo id, or an open_clip name.

A model folder holds the backbone in open_clip's format (open_clip_config.json +
open_clip_model.safetensors) and, in subfolders, our heads in the Hub mixin format
(config.json + model.safetensors). Only safetensors are ever fetched or loaded. What a model
folder lists, its cards and `push` are hsl_demo/model_folder.py's.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from .errors import HslDemoError

log = logging.getLogger(__name__)

HUB_PREFIX = "hf-hub:"
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# The tokenizer files open_clip's HF tokenizer reads (SigLIP's slow tokenizer needs spiece.model).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "spiece.model",
                   "added_tokens.json", "vocab.json", "merges.txt", "vocab.txt")
# What a model folder's snapshot fetches: only what the open_clip loader, the tokenizer and our
# heads read; pickled weights and a transformers-format model.safetensors beside them never.
ALLOWED_FILES = ["open_clip_config.json", "open_clip_model.safetensors", "vocabulary.json", "model_index.json",
                 "*.md", *TOKENIZER_FILES, "*/*.json", "*/*.safetensors"]


def is_repo_id(spec: str) -> bool:
    return spec.startswith(HUB_PREFIX) or (REPO_ID.match(spec) is not None and not os.path.exists(spec))


def check_model_spec(spec: str | None) -> None:
    """A one-line error, before anything loads, for a model given as a path that is no folder
    (and is not a Hub repo id either); an open_clip architecture name passes (checked on load)."""
    name, tagged, _ = spec.partition(":") if spec else ("", "", "")
    if tagged and "/" not in name:  # an open_clip name with a pretrained tag (which may be a file path)
        return
    if spec and ("/" in spec or spec.startswith((".", "~"))) and not Path(spec).expanduser().is_dir() \
            and not is_repo_id(spec):
        raise HslDemoError(f"model {spec!r}: no such folder, and not a Hugging Face repo id (org/name)")


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


def load_backbone(spec: str | None = None, device: str | None = None, max_params: int | None = None):
    """A Backbone from a model folder, a Hub repo id (`org/name` or `hf-hub:org/name`), or an
    open_clip architecture name with an optional pretrained tag (`ViT-B-32:laion2b_s34b_b79k`;
    without a tag the weights are random, which is only useful for tests). Default: the
    embedded model (or $HSL_DEMO_MODEL)."""
    from .backbone import Backbone, is_architecture
    from .defaults import default_model

    spec = spec or default_model()
    name, _, tag = spec.partition(":")
    if not Path(spec).exists() and is_architecture(name):
        return Backbone.from_name(name, tag or None, device=device, model_id=spec)
    return Backbone.from_folder(resolve_model_dir(spec), model_id=spec, device=device, max_params=max_params)
