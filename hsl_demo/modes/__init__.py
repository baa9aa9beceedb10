"""The retrieval modes, one folder each, and the registry the rest of the pipeline loops over.

Each folder (describe/, modify/, drill_down/) declares its `Mode` in its `__init__.py` (see
registry.py for what a mode provides) and keeps its search in `pipeline.py` and its UI tab in
`tab.py`. A mode from elsewhere registers itself when imported: name its module in the
`hsl_demo.modes` entry point group of a package and it is imported with these.

Adding a mode: a head in hsl_demo/models/, a folder here (or a plugin module) that calls
`register`, and, to train it, a trainer in hsl_demo/training/ (docs/architecture.md).
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

from . import describe, drill_down, modify  # noqa: F401  (each registers itself)
from .registry import MODES, CliOption, Mode, SearchCli, Store, all_variants, by_head, get, register, unregister

__all__ = ["MODES", "CliOption", "Mode", "SearchCli", "Store", "all_variants", "by_head", "get", "register",
           "unregister"]

log = logging.getLogger(__name__)

for _plugin in entry_points(group="hsl_demo.modes"):
    try:
        _plugin.load()
    except Exception as e:  # a broken plugin must not take the built-in modes down
        log.warning("mode plugin %r could not be loaded: %s", _plugin.name, e)
