"""`hsl-demo space`: a Hugging Face Space of the app over a model and two catalogs.

`build_space` writes the folder a Space needs: the entry point (app.py), this package itself
(a Space has only its own files), the project's pinned requirements, a README whose front
matter follows the Spaces configuration reference, the catalogs with the photos their items
name (at the same relative paths, so no catalog file is rewritten) and the model folder unless
it is one the Space can load by name (a Hub repo id or an open_clip name). `publish_space`
creates the Space (or reuses it) and uploads the folder through the Hub's API, which stores
binary and large files as the Hub needs (a plain `git push` of this repository is refused:
its history holds binaries as plain blobs).
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .errors import HslDemoError
from .fileio import atomic_dir
from .hub import HUB_PREFIX, REPO_ID, is_repo_id
from .model_folder import publishable_files

# The keys of a Space README's front matter the Hub documents: the Spaces configuration
# reference (huggingface.co/docs/hub/spaces-config-reference), plus `license` and
# `duplicated_from` (huggingface_hub's SpaceCardData) and `short_description` (the Hub's Space
# card, at most 60 characters).
SPACE_KEYS = frozenset({
    "title", "emoji", "colorFrom", "colorTo", "sdk", "python_version", "sdk_version", "suggested_hardware",
    "suggested_storage", "app_file", "app_port", "base_path", "fullWidth", "models", "datasets", "tags", "pinned",
    "hf_oauth", "hf_oauth_redirect_path", "disable_embedding", "custom_headers", "license", "duplicated_from",
    "short_description",
})
COLORS = ("red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray")
SDKS = ("gradio", "streamlit", "docker", "static")
SHORT_DESCRIPTION_MAX = 60
# What the pins need: numpy 2.4 and pandas 3.1 require Python >= 3.11 (the Hub's default is 3.10).
SPACE_PYTHON = "3.11"
SHORT_DESCRIPTION = "Product image search: describe, modify, drill down"
VARIABLES = ("HSL_DEMO_MODEL", "HSL_DEMO_CATALOG", "HSL_DEMO_LOOKS_CATALOG")
_GRADIO_PIN = re.compile(r"^gradio(\[[^\]]*\])?==([0-9][0-9A-Za-z.]*)\s*(#.*)?$")


def front_matter(text: str) -> dict:
    """The YAML front matter of a README (between the first two `---` lines)."""
    import yaml

    lines = text.splitlines()
    if not lines or lines[0].strip() != "---" or "---" not in (ln.strip() for ln in lines[1:]):
        raise HslDemoError("README has no YAML front matter (a block between two --- lines at the top)")
    end = next(i for i, ln in enumerate(lines[1:], 1) if ln.strip() == "---")
    try:
        meta = yaml.safe_load("\n".join(lines[1:end]))
    except yaml.YAMLError as e:
        raise HslDemoError(f"README front matter is not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(meta, dict):
        raise HslDemoError("README front matter is not a YAML mapping")
    return meta


def front_matter_problems(meta: dict, gradio_version: str | None = None) -> list[str]:
    """What the Hub would refuse or misread in a Space's front matter (empty: none): unknown keys,
    values outside the documented ones, a short_description over 60 characters, an sdk_version
    other than the pinned gradio's."""
    problems = [f"unknown key {key!r}" for key in meta if key not in SPACE_KEYS]
    for key in ("colorFrom", "colorTo"):
        if key in meta and meta[key] not in COLORS:
            problems.append(f"{key} {meta[key]!r} is not one of {', '.join(COLORS)}")
    if meta.get("sdk") not in SDKS:
        problems.append(f"sdk {meta.get('sdk')!r} is not one of {', '.join(SDKS)}")
    for key in ("title", "emoji", "app_file", "sdk_version", "python_version", "short_description", "license"):
        if key in meta and not isinstance(meta[key], str):
            problems.append(f"{key} must be a string (quote it), not {meta[key]!r}")
    if not re.fullmatch(r"3\.\d+(\.\d+)?", str(meta.get("python_version", ""))):
        problems.append(f"python_version {meta.get('python_version')!r} is not 3.x or 3.x.x")
    if len(str(meta.get("short_description", ""))) > SHORT_DESCRIPTION_MAX:
        problems.append(f"short_description is {len(meta['short_description'])} characters (at most "
                        f"{SHORT_DESCRIPTION_MAX})")
    if gradio_version is not None and meta.get("sdk_version") != gradio_version:
        problems.append(f"sdk_version {meta.get('sdk_version')!r} is not the pinned gradio {gradio_version}")
    for key in ("models", "datasets", "tags"):
        if key in meta and (not isinstance(meta[key], list) or not all(isinstance(v, str) for v in meta[key])):
            problems.append(f"{key} must be a list of strings")
    if "models" in meta and not all(REPO_ID.match(m) for m in meta["models"] if isinstance(m, str)):
        problems.append("models must name Hub repos (ORG/NAME)")
    return problems


def pinned_gradio(requirements: str) -> str:
    """The gradio version a requirements file pins (gradio==X or gradio[extra]==X)."""
    for line in requirements.splitlines():
        m = _GRADIO_PIN.match(line.strip())
        if m:
            return m.group(2)
    raise HslDemoError("requirements.txt pins no gradio version (gradio==X.Y.Z): the Space's sdk_version needs one")


@dataclass
class SpaceFolder:
    """A Space's folder as `build_space` wrote it."""

    path: Path
    repo_id: str
    front_matter: dict
    variables: dict[str, str]  # HSL_DEMO_* as the Space reads them (paths relative to the folder)
    files: list[str] = field(default_factory=list)  # relative, sorted
    size: int = 0  # bytes

    def summary(self) -> str:
        return f"{len(self.files)} files, {self.size / 1e6:.1f} MB"


def _requirements() -> str:
    from .defaults import REPO_ROOT

    path = REPO_ROOT / "requirements.txt"
    if not path.is_file():
        raise HslDemoError(f"{path}: no such file (the Space's requirements are this project's: run from a "
                           "checkout of hsl-demo)")
    return path.read_text(encoding="utf-8")


def _copy(src: Path, dst: Path) -> None:
    """A copy (not a link: a Space's files are its own, and edits to them stay there)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def _catalog_files(spec: str) -> tuple[Path, list[Path]]:
    """A catalog's folder and every file the app reads of it: its own files (hidden ones, e.g.
    an unfinished indexing run's, left out) and the photo of each item."""
    from .catalog import Catalog

    catalog = Catalog.open(spec)
    root = catalog.root.resolve()
    files = [p.resolve() for p in sorted(root.iterdir()) if p.is_file() and not p.name.startswith(".")]
    missing = []
    for row in range(len(catalog)):
        photo = catalog.image_path(row)
        (files if photo.is_file() else missing).append(photo.resolve() if photo.is_file() else photo)
    if missing:
        raise HslDemoError(f"catalog {str(spec)!r}: {len(missing)} item photos are missing (e.g. {missing[0]}); "
                           "the Space would show broken results")
    return root, files


def _package_files() -> list[tuple[Path, str]]:
    """This package's source and data files, as (file, path in the Space)."""
    package = Path(__file__).resolve().parent
    return [(p, f"hsl_demo/{p.relative_to(package).as_posix()}") for p in sorted(package.rglob("*"))
            if p.is_file() and p.suffix in (".py", ".json") and "__pycache__" not in p.parts]


APP = '''"""The Space's entry point, written by `hsl-demo space`: `hsl-demo serve` over this folder's model
and catalogs. The Space's variables (HSL_DEMO_MODEL, HSL_DEMO_CATALOG, HSL_DEMO_LOOKS_CATALOG,
HSL_DEMO_DEVICE) override the defaults below; relative paths are relative to this folder."""

import importlib.util
import os
import sys
from pathlib import Path

if importlib.util.find_spec("spaces") is not None:
    import spaces  # noqa: F401  (first, before torch, as ZeroGPU asks)

HERE = Path(__file__).resolve().parent
os.chdir(HERE)
sys.path.insert(0, str(HERE))  # this folder's copy of hsl_demo, whatever else is installed
DEFAULTS = {defaults}
for key, value in DEFAULTS.items():
    os.environ.setdefault(key, value)

from hsl_demo.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
'''


def build_space(out: str | Path, repo_id: str, model: str | None = None, catalog: str | None = None,
                looks_catalog: str | None = None, hardware: str | None = None) -> SpaceFolder:
    """Write the Space's folder `out` (new or empty; all or nothing) for Space `repo_id`."""
    from .defaults import default_catalog, default_looks_catalog, default_model
    from .hub import check_model_spec

    repo_id = _check_repo_id(repo_id)
    check_hardware(hardware)
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise HslDemoError(f"--dry-run {out}: exists and is not empty (give a new or empty folder)")
    model = model or default_model()
    check_model_spec(model)
    requirements = _requirements()
    gradio_version = pinned_gradio(requirements)
    local_model = Path(model).expanduser()
    copies: list[tuple[Path, str]] = _package_files()
    models: list[str] = []
    if local_model.is_dir():
        if not (local_model / "open_clip_config.json").is_file():
            raise HslDemoError(f"--model {model}: no open_clip_config.json, so not a model folder")
        copies += [(local_model / rel, f"model/{rel.as_posix()}") for rel in publishable_files(local_model)]
        model_value = "model"
    else:  # a Hub repo id (or an open_clip name) the Space loads itself
        model_value = model
        if is_repo_id(model):
            models.append(model.removeprefix(HUB_PREFIX))
    specs = {"HSL_DEMO_CATALOG": catalog or default_catalog(), "HSL_DEMO_LOOKS_CATALOG": looks_catalog
             or default_looks_catalog()}
    catalogs = {key: _catalog_files(spec) for key, spec in specs.items()}
    # One tree under data/ rooted where every catalog and photo meet: the items' relative photo
    # paths (e.g. ../../demo/products/images/p00000.jpg) resolve in the Space as they do here.
    every = [root for root, _ in catalogs.values()] + [p for _, files in catalogs.values() for p in files]
    base = Path(os.path.commonpath([str(p) for p in every]))
    variables = {"HSL_DEMO_MODEL": model_value}
    seen = set()
    for key, (root, files) in catalogs.items():
        rel = root.relative_to(base).as_posix()
        variables[key] = "data" if rel == "." else f"data/{rel}"
        for p in files:
            if p not in seen:
                seen.add(p)
                copies.append((p, f"data/{p.relative_to(base).as_posix()}"))
    meta = {
        "title": repo_id.split("/")[1], "emoji": "🛍️", "colorFrom": "indigo", "colorTo": "pink", "sdk": "gradio",
        "sdk_version": gradio_version, "python_version": SPACE_PYTHON, "app_file": "app.py", "license": "apache-2.0",
        "short_description": SHORT_DESCRIPTION, "tags": ["hsl-demo", "image-retrieval", "product-search", "mcp-server"],
    }
    if models:
        meta["models"] = models
    problems = front_matter_problems(meta, gradio_version)
    if problems:  # a bug here, not the user's: never write a README the Hub refuses
        raise HslDemoError("the Space README would be refused: " + "; ".join(problems))
    with atomic_dir(out) as tmp:
        for src, rel in copies:
            _copy(src, tmp / rel)
        (tmp / "requirements.txt").write_text(requirements, encoding="utf-8")
        (tmp / "app.py").write_text(APP.replace("{defaults}", _dict_literal(variables)), encoding="utf-8")
        (tmp / "README.md").write_text(_readme(meta, repo_id, variables, hardware), encoding="utf-8")
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    size = sum((out / f).stat().st_size for f in files)
    return SpaceFolder(out, repo_id, meta, variables, files, size)


def _dict_literal(values: dict[str, str]) -> str:
    return "{\n" + "".join(f"    {k!r}: {v!r},\n" for k, v in values.items()) + "}"


def _readme(meta: dict, repo_id: str, variables: dict[str, str], hardware: str | None) -> str:
    import yaml

    head = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000)
    rows = "\n".join(f"| `{k}` | `{v}` |" for k, v in variables.items())
    return (f"---\n{head}---\n\n# {meta['title']}\n\n"
            "Language-based product image search, three ways: **Describe** a product, **Modify** a reference "
            "product with a text, **Drill down** a look one product per round. Every result says why it ranked.\n\n"
            f"Published with `hsl-demo space {repo_id}`"
            + (f" for `{hardware}` hardware" if hardware else "") + ". The Space reads these variables "
            "(Settings → Variables; paths are relative to the Space's files):\n\n"
            f"| variable | value |\n|---|---|\n{rows}\n| `HSL_DEMO_DEVICE` | `cpu` or `cuda` (default: cuda when "
            "present) |\n\nThe app is also an MCP server: its Describe, Modify and Drill down searches are tools "
            "(see the \"Use via API or MCP\" link at the foot of the page).\n")


def check_hardware(hardware: str | None) -> None:
    """A one-line error for a hardware flavor the Hub does not have (huggingface_hub.SpaceHardware)."""
    from huggingface_hub import SpaceHardware

    if hardware is not None and hardware not in {h.value for h in SpaceHardware}:
        raise HslDemoError(f"--hardware {hardware!r}: not a Space hardware ("
                           + ", ".join(h.value for h in SpaceHardware) + ")")


def _check_repo_id(repo_id: str) -> str:
    repo_id = repo_id.removeprefix(HUB_PREFIX)
    if REPO_ID.match(repo_id) is None:
        raise HslDemoError(f"{repo_id!r}: not a Space id (ORG/NAME)")
    return repo_id


def _one_line(e: BaseException, token: str | None) -> str:
    """An exception as one line without any token in it (the given one, or any hf_... string)."""
    text = (str(e).strip().splitlines() or [""])[0]
    if token:
        text = text.replace(token, "***")
    return re.sub(r"hf_[A-Za-z0-9]{8,}", "hf_***", f"{type(e).__name__}: {text}")[:300]


def hub_token(token: str | None = None) -> str:
    """`token`, else $HF_TOKEN or the `hf auth login` one; a one-line error when there is none."""
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise HslDemoError("no Hugging Face token: set HF_TOKEN, run `hf auth login` or pass --token")
    return token


def publish_space(folder: SpaceFolder, private: bool = False, hardware: str | None = None,
                  token: str | None = None, api=None) -> str:
    """Create Space `folder.repo_id` (or reuse it), make it hold exactly the folder's files, set
    its variables and (given one) request `hardware`. Returns the Space's URL."""
    from huggingface_hub import HfApi

    check_hardware(hardware)
    token = hub_token(token)
    api = api or HfApi(token=token)
    repo_id = folder.repo_id
    try:
        url = api.create_repo(repo_id, token=token, repo_type="space", space_sdk="gradio", private=private,
                              exist_ok=True)
        # delete_patterns: files an earlier run uploaded and this one has not are removed (the Hub
        # never deletes .gitattributes), so a re-run leaves the Space as the folder is
        api.upload_folder(repo_id=repo_id, folder_path=folder.path, repo_type="space", token=token,
                          commit_message="Upload hsl-demo Space", delete_patterns="*")
        for key, value in folder.variables.items():
            api.add_space_variable(repo_id, key, value, token=token)
        if hardware is not None:
            api.request_space_hardware(repo_id, hardware, token=token)
    except Exception as e:  # the network boundary: HTTP errors (no permission, name taken), no connection
        raise HslDemoError(f"publishing Space {repo_id!r} failed ({_one_line(e, token)})") from None
    return str(url)
