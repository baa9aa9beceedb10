"""Where the embedded default model and catalogs live, and the environment overrides."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(os.environ.get("HSL_DEMO_HOME", Path(__file__).resolve().parent.parent))
ASSETS_DIR = REPO_ROOT / "assets"
DEMO_DATA_DIR = ASSETS_DIR / "demo"  # rendered source images + metadata
CATALOGS_DIR = ASSETS_DIR / "catalogs"  # indexed catalogs, ready to search
DEFAULT_MODEL_DIR = REPO_ROOT / "checkpoints" / "demo"
MODEL_CONFIGS_DIR = Path(__file__).resolve().parent / "model_configs"

BUILTIN_CATALOGS = ("products", "looks")
# Catalogs up to this many items keep drill-down's region side in memory (search.HMRN_CACHE_ITEMS);
# larger ones get a compressed FAISS index of their regions at indexing time (regions.faiss).
REGION_INDEX_ITEMS = 50_000
DEMO_SEED = 0


def default_model() -> str:
    """The model to load when none is named: $HSL_DEMO_MODEL, else the embedded one."""
    return os.environ.get("HSL_DEMO_MODEL") or str(DEFAULT_MODEL_DIR)


MAX_PARAMS = 4_000_000_000  # 16 GB of float32 weights: ViT-bigG fits, a config that asks for 150 GB does not


def default_max_params() -> int:
    """The most parameters a model or head config may ask for before anything is built:
    $HSL_DEMO_MAX_PARAMS, else MAX_PARAMS (`--max-params` on the command line)."""
    value = os.environ.get("HSL_DEMO_MAX_PARAMS", "")
    return int(value) if value.isdigit() else MAX_PARAMS


def default_catalog() -> str:
    return os.environ.get("HSL_DEMO_CATALOG") or "products"


def default_looks_catalog() -> str:
    """The catalog of Drill down in the app: $HSL_DEMO_LOOKS_CATALOG, else the demo looks."""
    return os.environ.get("HSL_DEMO_LOOKS_CATALOG") or "looks"
