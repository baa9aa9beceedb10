"""Describe: a text query, re-ranked by Hierarchical Similarity Learning (HSL).

Stage 1 takes the top `candidates` by the backbone's global cosine from FAISS; stage 2
re-ranks them with the HSL head (hsl_demo/models/hsl.py). The head's image side does not
depend on the query, so `hsl-demo index` stores it (int8, `hsl_*.npy`) and a search only
encodes the text. The pipeline is in `pipeline.py` (torch), the query and breakdown types in
`types.py`, the UI tab in `tab.py`; this file declares the mode without importing torch.
"""

from __future__ import annotations

import argparse
from typing import Any

from ...query import clean_text
from ...results import SearchResponse, result_lines
from ..registry import CliOption, Mode, SearchCli, Store, register
from .types import HslBreakdown, TextQuery

__all__ = ["MODE", "VARIANTS", "HslBreakdown", "TextQuery"]

# Which HSL terms rank a search: all (full), one granularity at every level, or the
# backbone's global cosine alone.
VARIANTS = ("full", "image", "object", "global")
STORE_NAMES = ("objects", "object_scale", "pooled", "pooled_scale", "mask")


def _head_class() -> type:
    from ...models.hsl import HSLHead

    return HSLHead


def _search(retriever: Any, query: TextQuery, k: int, variant: str) -> list[SearchResponse]:
    from .pipeline import search

    return [search(retriever, clean_text(query.text), k, variant)]


def _compute(head: Any, embeds: Any, regions: Any, mask: Any) -> dict:
    from .pipeline import encode_hsl_store

    return encode_hsl_store(head, embeds, regions, mask).arrays()


def _prepare(retriever: Any) -> Any:
    from .pipeline import image_side

    head = retriever.heads.get(MODE.head)
    return image_side(retriever.catalog, head) if head is not None else None


def _cli_query(args: argparse.Namespace) -> TextQuery:
    return TextQuery(clean_text(args.text))


def show(rankings: list[SearchResponse]) -> None:
    """One line per result: rank, id, score, title."""
    for response in rankings:
        for line in result_lines(response.results):
            print(line)


def _tab(context: Any) -> Any:
    from .tab import build

    return build(context)


MODE = register(Mode(
    order=10,
    name="describe", title="Describe", head="hsl", head_class=_head_class,
    head_summary="HSL re-ranking head (hierarchical similarity over levels and object/image granularity)",
    variants=VARIANTS, breakdown=HslBreakdown, parse=TextQuery.parse, search=_search,
    store=Store(STORE_NAMES, _compute), prepare=_prepare,
    cli=SearchCli(CliOption(("--text",), {"help": "a description, e.g. \"red striped t-shirt\"; with --reference, "
                                                   "how the wanted product differs, e.g. \"make it blue\""}),
                  _cli_query, show),
    tab=_tab, warm_up_query=lambda catalog: TextQuery("a product"), aliases=("text",),
))
