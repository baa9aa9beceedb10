"""`hsl-demo search`: one query in any registered mode, chosen by the mode's own flag."""

from __future__ import annotations

import argparse
import json

from .. import modes
from ..errors import HslDemoError
from .args import notify, positive_int

NAME = "search"


def add_parser(sub) -> None:
    p = sub.add_parser("search", help="search a catalog")
    p.add_argument("--catalog", help="catalog name (products, looks) or folder (default: products)")
    p.add_argument("--model", help="model folder, Hub repo id or open_clip name (default: embedded)")
    added: set[str] = set()
    for mode in modes.MODES.values():  # each mode's flags (a flag two modes read is added once)
        for option in (mode.cli.key, *mode.cli.reads) if mode.cli else ():
            if option.flags[0] not in added and option.options:
                added.add(option.flags[0])
                p.add_argument(*option.flags, **option.options)
    p.add_argument("-k", type=positive_int, default=10, help="number of results (default 10)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def search_mode(args) -> modes.Mode:
    """The mode a `search` command line asks for: the one whose key flag is given (--text alone
    is describe; --reference with or without --text is modify; --region is drill-down). A flag
    another chosen mode also reads (--text for modify) does not choose a mode of its own."""
    from .. import modes

    def given(option) -> bool:
        return getattr(args, option.dest, None) is not None

    chosen = [m for m in modes.MODES.values() if m.cli and given(m.cli.key)]
    read_by_others = {o.flags[0] for m in chosen for o in m.cli.reads}
    chosen = [m for m in chosen if m.cli.key.flags[0] not in read_by_others] or chosen
    if len(chosen) != 1:
        keys = " or ".join(f"{m.cli.key.flags[0]} ({m.name})" for m in (chosen or modes.MODES.values()) if m.cli)
        raise HslDemoError(f"give exactly one of {keys}" if not chosen else f"{keys} go one at a time")
    return chosen[0]
def run(args: argparse.Namespace) -> None:
    from ..search import Retriever

    mode = search_mode(args)
    query = mode.cli.query(args)  # checked before anything is loaded
    retriever = Retriever.from_pretrained(args.model, args.catalog, device=args.device, max_params=args.max_params)
    rankings = retriever.search(mode.name, query, k=args.k)
    for response in rankings:
        notify(response.notices)
    if args.json:
        shown = [r.to_dict() for r in rankings] if mode.in_rounds else [r.to_dict() for r in rankings[-1]]
        print(json.dumps(shown, indent=2))
        return
    mode.cli.show(rankings)
