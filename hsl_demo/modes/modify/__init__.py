"""Modify: a reference product changed by a text (composed query), with adaptive weights.

The composed head (hsl_demo/models/composed.py) mixes the reference's and the text's
embeddings with a weight per query; the mix is searched in the catalog's global index
(`pipeline.py`). Without a trained head, the equal-weight sum (the zero-shot baseline).
"""

from __future__ import annotations

import argparse
from typing import Any

from ...query import clean_text
from ...results import SearchResponse, result_lines
from ..registry import CliOption, Mode, SearchCli, register
from .types import ComposedBreakdown, ComposedQuery

__all__ = ["MODE", "VARIANTS", "ComposedBreakdown", "ComposedQuery"]

# How a composed query (reference image + text) is formed: the head's adaptive weights, the
# equal-weight sum, or one modality alone.
VARIANTS = ("adaptive", "sum", "image", "text")


def _head_class() -> type:
    from ...models.composed import ComposedHead

    return ComposedHead


def _untrained(embed_dim: int) -> Any:
    from ...models.composed import ComposedHead

    return ComposedHead(embed_dim=embed_dim)


def _search(retriever: Any, query: ComposedQuery, k: int, variant: str) -> list[SearchResponse]:
    from .pipeline import search

    text = clean_text(query.text, what="the modification text", empty_ok=True)
    return [search(retriever, query.reference, text, k, variant)]


def mean_text_weight(queries: list[dict], rankings: list[list[SearchResponse]]) -> dict:
    """How much the text counted, on average, per kind of modification."""
    by_kind: dict[str, list[float]] = {}
    for query, rounds in zip(queries, rankings):
        if rounds and rounds[-1].results:
            by_kind.setdefault(query.get("kind", "all"), []).append(rounds[-1].results[0].breakdown.w_text)
    return {"mean_w_text": {kind: round(sum(v) / len(v), 3) for kind, v in by_kind.items()}} if by_kind else {}


def _cli_query(args: argparse.Namespace) -> ComposedQuery:
    return ComposedQuery(args.reference, clean_text(args.text, what="the modification text", empty_ok=True))


def show(rankings: list[SearchResponse]) -> None:
    """The query's weights, then one line per result."""
    if rankings and rankings[-1].results:
        first = rankings[-1].results[0].breakdown
        print(f"query weights: image {first.w_image:.2f}, text {first.w_text:.2f}")
    for line in result_lines(rankings[-1].results if rankings else []):
        print(line)


def _tab(context: Any) -> Any:
    from .tab import build

    return build(context)


def _warm_up(catalog: Any) -> ComposedQuery | None:
    return ComposedQuery(catalog.items[0]["id"], "in another colour") if len(catalog) else None


MODE = register(Mode(
    order=20,
    name="modify", title="Modify", head="composed", head_class=_head_class,
    head_summary="composed-query head (reference image + modification text, adaptive weights)",
    variants=VARIANTS, breakdown=ComposedBreakdown, parse=ComposedQuery.parse, search=_search,
    untrained=_untrained,
    cli=SearchCli(CliOption(("--reference",), {"help": "composed search: a catalog item id or an image file to "
                                                        "start from (with --text: how the wanted product differs)"}),
                  _cli_query, show, reads=(CliOption(("--text",)),)),
    tab=_tab, warm_up_query=_warm_up, aliases=("composed",), metrics=mean_text_weight,
))
