"""The `hsl-demo` command line (also `python -m hsl_demo`): one module per command, each with
its `add_parser` and `run`.

Every user error ends in one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from ..errors import HslDemoError
from . import convert, convert_weights, evaluate, index, make_demo_catalog, push, search, serve, space, train
from .args import EXIT_USER_ERROR, positive_int

COMMAND_MODULES = (make_demo_catalog, train, index, search, evaluate, convert, convert_weights, serve, push, space)
COMMANDS = {module.NAME: module.run for module in COMMAND_MODULES}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hsl-demo", description="Language-based product image retrieval, explained."
    )
    parser.add_argument("--device", help="cuda or cpu (default: cuda when present)")
    parser.add_argument("--max-params", type=positive_int, default=None, metavar="N",
                        help="the most parameters a model or head config may ask for, checked before anything is "
                        "built (default 4000000000, or $HSL_DEMO_MAX_PARAMS)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.add_parser(sub)
    return parser


class _OneLineWarnings(logging.Handler):
    """The package's log warnings as `hsl-demo: warning: ...` on the stderr of the moment."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"hsl-demo: {record.levelname.lower()}: {record.getMessage()}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    package_log = logging.getLogger("hsl_demo")
    handler = _OneLineWarnings()
    # for this command only (restored below): our one-line form, not also the root logger's
    saved = package_log.level, package_log.propagate
    package_log.setLevel(logging.DEBUG if os.environ.get("HSL_DEMO_DEBUG") else logging.WARNING)
    package_log.propagate = False
    package_log.addHandler(handler)
    try:
        COMMANDS[args.command](args)
    except HslDemoError as e:
        print(f"hsl-demo: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("hsl-demo: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `hsl-demo search ... | head`
        return 0
    finally:
        package_log.removeHandler(handler)
        package_log.setLevel(saved[0])
        package_log.propagate = saved[1]
    return 0
