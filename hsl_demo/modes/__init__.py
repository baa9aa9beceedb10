"""The retrieval modes, one module each, and the registry the rest of the pipeline iterates.

A mode registers one `Mode`: its name (the same in query files, the CLI, the registry and
the UI's tab), its head (class and subfolder in a model folder), its variants (ablations; the
first is the default), its query schema, how it ranks a query, its breakdown type and its
chart. `Retriever`, `evaluate`, the CLI, model loading and model cards read this registry
instead of naming modes; variant names are checked here, in `Mode.check_variant`.

Adding a mode: a head in hsl_demo/models/, a module here that calls `register`, a trainer in
hsl_demo/training/, a tab in hsl_demo/ui.py (see docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import HslDemoError

if TYPE_CHECKING:
    from ..results import SearchResponse
    from ..search import Retriever


@dataclass(frozen=True)
class Mode:
    name: str  # "describe", "modify", "drill-down": query files' "mode", registry key
    title: str  # the UI tab
    head: str  # the head's subfolder in a model folder and its keyword in Retriever(...)
    head_class: Callable[[], type]  # a function: the class is looked up when a head is loaded
    head_summary: str  # a line for model cards
    variants: tuple[str, ...]  # ways to rank, for ablations; the first is the default
    breakdown: Callable[[], type]  # the dataclass of a result's `breakdown`
    validate: Callable[[dict, str], None]  # the query schema: raises HslDemoError naming `where`
    rank: Callable[[Retriever, dict, int, str], list[SearchResponse]]  # rankings after each round
    aliases: tuple[str, ...] = ()  # older names of the mode in query files
    in_rounds: bool = False  # a query is answered round by round (recall is reported per round)
    # extra evaluation figures from the queries and their rankings (e.g. mean weights)
    metrics: Callable[[list[dict], list[list[SearchResponse]]], dict] | None = field(default=None)
    # checks a query file against a retriever before any query runs (e.g. the round limit)
    precheck: Callable[[Retriever, list[dict]], None] | None = field(default=None)
    # the default variant for a retriever (e.g. without a trained head); else variants[0]
    default_for: Callable[[Retriever], str] | None = field(default=None)

    @property
    def default_variant(self) -> str:
        return self.variants[0]

    def check_variant(self, variant: str | None, retriever: Retriever | None = None) -> str:
        """`variant`, or the default for None; an unknown name is a one-line error."""
        if variant is None:
            return self.default_for(retriever) if self.default_for and retriever else self.default_variant
        if variant not in self.variants:
            raise HslDemoError(f"unknown variant {variant!r} for {self.name} (one of {', '.join(self.variants)})")
        return variant


MODES: dict[str, Mode] = {}


def register(mode: Mode) -> Mode:
    MODES[mode.name] = mode
    return mode


def get(name: str) -> Mode:
    """The mode called `name` (or one of its aliases in query files)."""
    for mode in MODES.values():
        if name == mode.name or name in mode.aliases:
            return mode
    names = ", ".join(n for m in MODES.values() for n in (m.name, *m.aliases))
    raise HslDemoError(f"unknown mode {name!r} (supported: {names})")


def by_head(head: str) -> Mode:
    return next(m for m in MODES.values() if m.head == head)


from . import describe, drill_down, modify  # noqa: E402,F401  (each registers itself)
