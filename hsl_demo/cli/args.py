"""What every command shares: argument types, and notices printed as warnings."""

from __future__ import annotations

import argparse
import sys

EXIT_USER_ERROR = 2


def positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {n}")
    return n


def notify(notices: list[str]) -> None:
    for message in notices:
        print(f"hsl-demo: warning: {message}", file=sys.stderr)


def warn_token_on_command_line(token: str | None) -> None:
    if token:
        notify(["a token given with --token shows in the process list (`ps`) of this machine: prefer $HF_TOKEN "
                 "or the login of `hf auth login`, which are used when --token is not given"])
