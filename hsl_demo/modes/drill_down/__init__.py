"""Drill down: a look described one product per round, ranked by HMRN.

Each round adds a region query ("a red handbag", then "white sneakers") and re-ranks the
looks with all the queries so far (hsl_demo/models/hmrn.py): FAISS candidates from the
regions that match each query in the head's own space, then the full re-rank
(`pipeline.py`). Without a trained head, its untrained local and global levels rank.
"""

from __future__ import annotations

import argparse
from typing import Any

from ...errors import HslDemoError
from ...query import printable
from ...results import SearchResponse
from ..registry import CliOption, Mode, SearchCli, register
from .types import DrillDownBreakdown, DrillDownRound, RegionQuery

__all__ = ["MODE", "VARIANTS", "DrillDownBreakdown", "DrillDownRound", "RegionQuery"]

# How a round ranks: the full HMRN score, or its scalar levels alone (ablations).
VARIANTS = ("full", "local+global", "local")
HEAD = "hmrn"


def _head_class() -> type:
    from ...models.hmrn import HMRNHead

    return HMRNHead


def _untrained(embed_dim: int) -> Any:
    from ...models.hmrn import HMRNHead

    return HMRNHead(embed_dim=embed_dim)


def _search(retriever: Any, query: RegionQuery, k: int, variant: str) -> list[SearchResponse]:
    from .pipeline import rank

    return rank(retriever, query.regions, k, variant)


def _prepare(retriever: Any) -> Any:
    from .pipeline import image_side

    if len(retriever.catalog) > retriever.cache_items:
        return None  # a large catalog: candidates come from its region index, image side per round
    return image_side(retriever.catalog, retriever.heads[HEAD])


def check_rounds(retriever: Any, queries: list[dict]) -> None:
    longest = max(len(q["regions"]) for q in queries)
    if longest > retriever.heads[HEAD].max_rounds:
        raise HslDemoError(f"a drill-down query has {longest} regions; the model takes at most "
                           f"{retriever.heads[HEAD].max_rounds} rounds")


def _cli_query(args: argparse.Namespace) -> RegionQuery:
    if not any(r.strip() for r in args.region):
        raise HslDemoError("every --region is empty: describe a product, e.g. --region \"a red handbag\"")
    return RegionQuery(tuple(args.region))


def show(rankings: list[SearchResponse]) -> None:
    """Each round's queries, then its ranking with the terms and the earlier ranks."""
    for rd in rankings:
        if not isinstance(rd, DrillDownRound):
            continue
        print(f"round {rd.round}: " + " + ".join(f'"{q}"' for q in rd.queries))
        width = max((len(printable(r.id)) for r in rd.results), default=0)
        for r in rd.results:
            b = r.breakdown
            moves = " ".join("-" if e is None else str(e) for e in b.earlier_ranks)
            print(f"{r.rank:>3}  {printable(r.id):<{width}}  {r.score:7.4f}  local {b.local.similarity:.3f}  "
                  f"global {b.global_.similarity:.3f}  reasoning {b.reasoning.similarity:.3f}"
                  f"{'  earlier ranks ' + moves if moves else ''}  {printable(r.title)}")


def _tab(context: Any) -> Any:
    from .tab import build

    return build(context)


MODE = register(Mode(
    order=30,
    name="drill-down", title="Drill down", head=HEAD, head_class=_head_class,
    head_summary="HMRN drill-down head (multi-round region queries: local, global, reasoning)",
    variants=VARIANTS, breakdown=DrillDownBreakdown, parse=RegionQuery.parse, search=_search,
    untrained=_untrained, prepare=_prepare,
    cli=SearchCli(CliOption(("--region",), {
        "action": "append", "metavar": "TEXT",
        "help": "drill-down search: one region query per round, repeat for more rounds (e.g. --catalog looks "
                "--region \"a red handbag\" --region \"white sneakers\"); prints the ranking after each"}),
        _cli_query, show),
    tab=_tab, catalog_role="looks", warm_up_query=lambda catalog: RegionQuery(("a product",)),
    aliases=("multi",), in_rounds=True, precheck=check_rounds,
    default_for=lambda retriever: "full" if HEAD in retriever.trained else "local+global",
))
