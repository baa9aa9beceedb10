"""What a retrieval mode provides, and the table the rest of the pipeline loops over.

A mode is one folder, `hsl_demo/modes/<name>/` (or any module that calls `register`, e.g. a
plugin named by the `hsl_demo.modes` entry point group). Its `Mode` says:
- its query: `parse` turns a query-file line into the mode's typed query (a one-line error
  naming the line otherwise), `cli` the `hsl-demo search` flags that ask for one;
- its head: the subfolder of a model folder it is saved in (`head`), its class, and what stands
  in for it untrained;
- its search: `search(retriever, query, k, variant)`, the ranking after each round (one round
  for most modes), built from the retriever's components;
- its index-time store: `store` computes per-item arrays from a catalog's features with the head,
  which `hsl-demo index` writes into the catalog and a search reads back;
- its presentation: the breakdown type of its results, the CLI's table, its UI tab.

The CLI, the app, `evaluate`, indexing and model cards loop over `MODES`; none of them names a
mode. This module imports nothing heavy (no torch): the CLI reads it to build its parser.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import HslDemoError

if TYPE_CHECKING:
    import numpy as np

    from ..catalog import Catalog
    from ..results import SearchResponse


@dataclass(frozen=True)
class CliOption:
    """One flag of `hsl-demo search`: argparse's arguments for it. A flag two modes share (e.g.
    --text) is added once, by the first mode registered."""

    flags: tuple[str, ...]
    options: dict = field(default_factory=dict)

    @property
    def dest(self) -> str:
        return self.options.get("dest") or self.flags[0].lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class SearchCli:
    """How `hsl-demo search` asks for this mode and prints its answer. The mode is chosen by its
    `key` flag (e.g. --reference for modify); `reads` are further flags it uses (e.g. --text),
    so that a flag one mode reads does not also choose another mode keyed on it."""

    key: CliOption
    query: Callable[[argparse.Namespace], Any]  # the typed query the flags ask for (checks them)
    show: Callable[[list[SearchResponse]], None]  # prints the rankings as a table on stdout
    reads: tuple[CliOption, ...] = ()


@dataclass(frozen=True)
class Store:
    """What a mode keeps in a catalog, computed at index time by its head: arrays of one row per
    item, saved as `<head>_<name>.npy` (so a catalog reads them back without knowing the mode)."""

    names: tuple[str, ...]  # the arrays, without the head's prefix
    # (head, embeds (n, D), regions (n, R, D), region mask (n, R)) -> {name: (n, ...) array}: one batch
    compute: Callable[[Any, Any, Any, Any], dict[str, np.ndarray]]
    # whether an untrained head (the mode's stand-in) is stored too: only where its scores mean something
    untrained: bool = False

    def files(self, head: str) -> dict[str, str]:
        return {name: f"{head}_{name}" for name in self.names}


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: one object per mode
class Mode:
    name: str  # "describe", "modify", "drill-down": query files' "mode", registry key, CLI and UI
    title: str  # the UI's tab
    head: str  # the head's subfolder in a model folder and its key in Retriever.heads
    head_class: Callable[[], type]  # a function: the class is looked up (torch imported) on use
    head_summary: str  # a line for model cards
    variants: tuple[str, ...]  # ways to rank, for ablations; the first is the default
    breakdown: type  # the dataclass of a result's `breakdown`
    parse: Callable[[dict, str], Any]  # a query-file line -> the typed query; HslDemoError naming `where`
    search: Callable[[Any, Any, int, str], list[SearchResponse]]  # (retriever, query, k, variant): per round
    # the head used when the model folder has none (None: the mode ranks by the backbone alone then)
    untrained: Callable[[int], Any] | None = None
    store: Store | None = None
    # what the mode's search needs of a retriever beyond its components, built once per retriever
    # on first use (e.g. a head's image side of the whole catalog, read from its store)
    prepare: Callable[[Any], Any] | None = None
    cli: SearchCli | None = None
    tab: Callable[..., Any] | None = None  # builds the mode's UI tab (see hsl_demo/ui.py: TabContext)
    catalog_role: str = "products"  # which of the app's catalogs its tab searches: products or looks
    warm_up_query: Callable[[Catalog], Any] | None = None  # a query to run before serving
    order: int = 100  # its place among the app's tabs and in every listing (lowest first)
    aliases: tuple[str, ...] = ()  # older names of the mode in query files
    in_rounds: bool = False  # a query is answered round by round (recall is reported per round)
    # extra evaluation figures from the queries and their rankings (e.g. mean weights)
    metrics: Callable[[list[dict], list[list[SearchResponse]]], dict] | None = None
    # checks a query file against a retriever before any query runs (e.g. the round limit)
    precheck: Callable[[Any, list[dict]], None] | None = None
    # the default variant for a retriever (e.g. without a trained head); else variants[0]
    default_for: Callable[[Any], str] | None = None

    @property
    def default_variant(self) -> str:
        return self.variants[0]

    def check_variant(self, variant: str | None, retriever: Any = None) -> str:
        """`variant`, or the default for None; an unknown name is a one-line error."""
        if variant is None:
            return self.default_for(retriever) if self.default_for and retriever else self.default_variant
        if variant not in self.variants:
            raise HslDemoError(f"unknown variant {variant!r} for {self.name} (one of {', '.join(self.variants)})")
        return variant


MODES: dict[str, Mode] = {}


def register(mode: Mode) -> Mode:
    """Add `mode` to the table (a later mode of the same name replaces it)."""
    taken = {h.head: h.name for h in MODES.values() if h.name != mode.name}
    if mode.head in taken:
        raise HslDemoError(f"mode {mode.name!r}: head {mode.head!r} belongs to mode {taken[mode.head]!r}")
    MODES[mode.name] = mode
    ordered = sorted(MODES.values(), key=lambda m: m.order)  # stable: equal orders keep registration order
    MODES.clear()
    MODES.update((m.name, m) for m in ordered)
    return mode


def unregister(name: str) -> None:
    MODES.pop(name, None)


def get(name: str) -> Mode:
    """The mode called `name` (or one of its aliases in query files)."""
    for mode in MODES.values():
        if name == mode.name or name in mode.aliases:
            return mode
    names = ", ".join(n for m in MODES.values() for n in (m.name, *m.aliases))
    raise HslDemoError(f"unknown mode {name!r} (supported: {names})")


def by_head(head: str) -> Mode | None:
    """The mode whose head is saved in subfolder `head` of a model folder (None: no such mode)."""
    return next((m for m in MODES.values() if m.head == head), None)


def all_variants() -> list[str]:
    return sorted({v for mode in MODES.values() for v in mode.variants})
