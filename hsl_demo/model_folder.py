"""A model folder, as a whole: what it lists (`model_index.json`, as diffusers' describes a
pipeline), a folder started for a head trained on a catalog, each head's status, the model
cards, and `push` to the Hugging Face Hub.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from .errors import HslDemoError
from .hub import HUB_PREFIX, REPO_ID, TOKENIZER_FILES

log = logging.getLogger(__name__)

# What `push` publishes: configs, safetensors weights and model cards, nothing else.
PUSH_SUFFIXES = (".json", ".safetensors")
MODEL_INDEX = "model_index.json"
MODEL_INDEX_FORMAT = 1


@dataclass
class ModelIndex:
    """What a model folder holds (its `model_index.json`, as diffusers' describes a pipeline):
    the open_clip backbone's files and the trained heads, by head name, with their mode."""

    heads: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        from . import modes

        return {
            "_class_name": "hsl-demo", "format": MODEL_INDEX_FORMAT,
            "backbone": {"library": "open_clip", "config": "open_clip_config.json",
                         "weights": "open_clip_model.safetensors"},
            "heads": {name: {"mode": modes.by_head(name).name, "class": modes.by_head(name).head_class().__name__,
                             "folder": name} for name in self.heads},
        }


def read_model_index(folder: Path) -> ModelIndex:
    """The folder's model_index.json; for a folder without one (older, or written by hand), the
    registered heads found in its subfolders."""
    from . import modes

    path = folder / MODEL_INDEX
    if not path.is_file():
        return ModelIndex(_heads_in_subfolders(folder))
    known = {m.head for m in modes.MODES.values()}
    try:
        heads = json.loads(path.read_text(encoding="utf-8")).get("heads", {})
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, OSError, RecursionError):
        raise HslDemoError(f"{path}: not a valid model index (a JSON object with \"heads\")") from None
    if not isinstance(heads, dict) or not set(heads) <= known:
        raise HslDemoError(f"{path}: \"heads\" must map head names ({', '.join(sorted(known))}) to their entries")
    missing = sorted(name for name in heads if not (folder / name).is_dir())
    if missing:  # e.g. a copied folder with a head removed before its retraining rewrites the index
        log.warning("%s lists %s, not in the folder: loading without %s", path, ", ".join(missing),
                    "it" if len(missing) == 1 else "them")
    return ModelIndex(sorted(set(heads) - set(missing)))


def save_model_head(head, folder: str | Path, info: dict | None = None, card: dict | None = None) -> None:
    """models.save_head, and the model folder it is a head of (if it is one) lists it."""
    from .models import save_head

    save_head(head, folder, info, card)
    parent = Path(folder).parent
    if (parent / "open_clip_config.json").is_file():
        write_model_index(parent)


def write_model_index(folder: Path) -> ModelIndex:
    """Write `folder`'s model_index.json from the heads its subfolders hold now."""
    from .fileio import write_json

    index = ModelIndex(_heads_in_subfolders(folder))
    write_json(folder / MODEL_INDEX, index.to_dict())
    return index


BACKBONE_FILES = ("open_clip_config.json", "open_clip_model.safetensors", "vocabulary.json", *TOKENIZER_FILES)


def start_model_folder(backbone, out: str | Path, keep_out: str) -> Path:
    """Make `out` a complete model folder for a head trained on `backbone`: its backbone files and
    every head its source folder has (but `keep_out`, which the trainer writes next).

    A folder that already holds this backbone is used as it is (its heads are kept); one that
    holds another backbone, or files of its own, is refused. A backbone given by open_clip name
    is written in open_clip's format, so `--model OUT` loads the same weights.
    """
    import shutil

    from .backbone import model_config, save_backbone
    from .fileio import atomic_dir

    out = Path(out).expanduser()
    if (out / "open_clip_config.json").is_file():
        from .backbone import Backbone

        if backbone.folder is None or out.resolve() != backbone.folder.resolve():
            from .catalog import same_probe

            if not same_probe(Backbone.from_folder(out).probe(), backbone.probe()):
                raise HslDemoError(f"--out {out} holds another backbone than {backbone.portable_id!r}; give a new "
                                   "folder (it becomes a complete model folder)")
        return out
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise HslDemoError(f"--out {out} exists and is not a model folder (no open_clip_config.json); give a new "
                           "or empty folder")
    with atomic_dir(out) as tmp:  # all or nothing: a half-copied folder would pass for a model folder
        if backbone.folder is None:  # an open_clip name (and tag): write its weights in the folder format
            name = backbone.model_id.partition(":")[0]
            save_backbone(backbone.model, model_config(name), tmp, {"source": backbone.portable_id})
            if hasattr(backbone.tokenizer, "save_pretrained"):  # an HF tokenizer: local-dir loading reads its files
                backbone.tokenizer.save_pretrained(tmp)
            return out
        for name in BACKBONE_FILES:
            if (backbone.folder / name).is_file():
                shutil.copyfile(backbone.folder / name, tmp / name)
        for head in read_model_index(backbone.folder).heads:
            if head != keep_out:
                shutil.copytree(backbone.folder / head, tmp / head, ignore=shutil.ignore_patterns(".*"))
        write_model_index(tmp)
    return out


def _heads_in_subfolders(folder: Path) -> list[str]:
    """Registered head names whose subfolder holds a head (config.json + model.safetensors)."""
    from . import modes

    return sorted(m.head for m in modes.MODES.values()
                  if (folder / m.head / "config.json").is_file() and (folder / m.head / "model.safetensors").is_file())


@dataclass
class HeadStatus:
    """What a model folder says about one of its heads (its training.json): how it was trained,
    on which catalog, and how it scored on that catalog's held-out items."""

    name: str
    trained: bool  # False: absent, so the mode runs the untrained head (the backbone's cosine)
    trained_by: str = ""
    catalog: dict | None = None  # name, items, heldout_items, fingerprint, model
    untrained_score: dict | None = None  # held-out R@1 / R@10 of the untrained head
    trained_score: dict | None = None  # ... of the kept trained head (with its "step")

    def summary(self) -> str:
        """One line for the app footer and the model card."""
        if not self.trained:
            return f"{self.name}: untrained (the backbone's similarity alone)"
        if self.catalog is None:
            return f"{self.name}: trained by `{self.trained_by or 'an unknown command'}` on the demo world"
        line = (f"{self.name}: trained on catalog `{self.catalog.get('name')}` ({self.catalog.get('items')} items, "
                f"fingerprint {self.catalog.get('fingerprint')})")
        if self.untrained_score and self.trained_score:
            figures = [k for k in self.untrained_score if k.startswith("R@") and k in self.trained_score]
            line += "; held-out " + ", ".join(f"{k} {self.untrained_score[k]:.3f} \u2192 {self.trained_score[k]:.3f}"
                                              for k in figures) + " (untrained \u2192 trained)"
        return line


def head_statuses(folder: Path | None) -> list[HeadStatus]:
    """Every registered head's status in a model folder (all untrained for a bare open_clip model)."""
    from . import modes

    present = set(read_model_index(folder).heads) if folder is not None else set()
    statuses = []
    for mode in modes.MODES.values():
        if mode.head not in present:
            statuses.append(HeadStatus(mode.head, False))
            continue
        statuses.append(_trained_status(mode.head, folder / mode.head / "training.json"))
    return statuses


def _trained_status(head: str, path: Path) -> HeadStatus:
    """A trained head's status from its training.json, whatever the file holds: fields of the
    wrong type (a Hub folder may bring any) are left out, never trusted."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        info = None
    info = info if isinstance(info, dict) else {}
    table = info.get("evaluation") if isinstance(info.get("evaluation"), dict) else {}

    def scores(value: object) -> dict | None:  # R@k figures: numbers only
        if not isinstance(value, dict):
            return None
        kept = {k: v for k, v in value.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        return kept or None

    trained_by, catalog = info.get("trained_by"), info.get("catalog")
    return HeadStatus(head, True, trained_by if isinstance(trained_by, str) else "",
                      catalog if isinstance(catalog, dict) else None,
                      scores(table.get("untrained")), scores(table.get("trained")))


def publishable_files(folder: Path) -> list[Path]:
    """The files of a model folder that `push` uploads, relative to it: *.json, *.safetensors
    and README.md, at any depth (pickled weights, logs and the rest stay home). Symbolic links
    are followed: a model downloaded from the Hub is a cache snapshot made of them."""
    inside = folder.resolve()
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file()
                  and (p.suffix in PUSH_SUFFIXES or p.name == "README.md")
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts)  # .checkpoint/
                  and _stays_inside(p, inside))


def _stays_inside(path: Path, folder: Path) -> bool:
    """A link is followed only to a file inside the folder, or to a Hub cache blob (a snapshot
    is made of links into its repo's blobs/): a link out to anything else is never uploaded."""
    if not path.is_symlink():
        return True
    target = path.resolve()
    return target.is_relative_to(folder) or (target.parent.name == "blobs"
                                             and folder.is_relative_to(target.parent.parent))


def model_card(folder: Path, repo_id: str) -> str:
    """A README.md for a model folder that has none: its backbone and the heads found."""
    try:
        config = json.loads((folder / "open_clip_config.json").read_text())
    except (ValueError, RecursionError):
        raise HslDemoError(f"{folder / 'open_clip_config.json'}: not valid JSON") from None
    cfg = config.get("model_cfg") if isinstance(config, dict) else None
    if not isinstance(cfg, dict):
        raise HslDemoError(f"{folder / 'open_clip_config.json'}: no \"model_cfg\" object: not an open_clip "
                           "model folder")
    vision, text = (cfg.get(k) if isinstance(cfg.get(k), dict) else {} for k in ("vision_cfg", "text_cfg"))
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
    from . import modes

    heads = read_model_index(folder).heads
    for name in heads:
        head_cfg = json.loads((folder / name / "config.json").read_text())
        settings = ", ".join(f"{k} {v}" for k, v in head_cfg.items() if not isinstance(v, (dict, list)))
        mode = modes.by_head(name)
        lines.append(f"- `{name}/`: {mode.head_summary}; the {mode.title} mode ({settings}).")
    trained = [status for status in head_statuses(folder) if status.trained]
    if trained:
        lines += ["", "## Training and evaluation", ""] + [f"- {status.summary()}" for status in trained]
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
