"""Query texts as every entry point takes them (web, links, CLI, Python API): checked, collapsed
and bounded before anything reads them.

The bounds keep a query's cost at a normal query's: a tokenizer's byte-pair merges are
quadratic in a word's length (a 20,000-letter word took open_clip's tokenizer 5 s), so a text
longer than MAX_QUERY_CHARS is refused before it is tokenized, echoed or drawn.
"""

from __future__ import annotations

import re

from .errors import HslDemoError

MAX_QUERY_CHARS = 300  # a product description; a backbone reads 64-77 tokens of it at most
MAX_QUERY_WORDS = 60
ECHO_CHARS = 40  # how much of a visitor's word a message repeats back


def clean_text(text: object, what: str = "the query", empty_ok: bool = False,
               max_chars: int = MAX_QUERY_CHARS, max_words: int = MAX_QUERY_WORDS) -> str:
    """`text` with its whitespace collapsed. Not a string, empty (unless `empty_ok`), longer
    than `max_chars` characters or `max_words` words: an HslDemoError saying so."""
    if text is not None and not isinstance(text, str):
        raise HslDemoError(f"{what} must be a string, not {type(text).__name__} ({shorten(str(text))!r})")
    text = text or ""
    if len(text) > 4 * max_chars:  # refused before it is even split
        raise HslDemoError(too_long(what, f"{len(text):,} characters", f"{max_chars} characters"))
    text = " ".join(text.split())
    if not text and not empty_ok:
        raise HslDemoError("empty query: type a description of the product")
    if len(text) > max_chars:
        raise HslDemoError(too_long(what, f"{len(text):,} characters", f"{max_chars} characters"))
    words = text.count(" ") + 1
    if words > max_words:
        raise HslDemoError(too_long(what, f"{words:,} words", f"{max_words} words"))
    return text


def too_long(what: str, size: str, limit: str) -> str:
    return f"{what} is too long ({size}; at most {limit}): describe the product in a few words"


def printable(text: str) -> str:
    """`text` with control characters escaped: a name from an input file or a catalog may carry
    any, and it is printed (a newline could forge a line of output, an ANSI escape restyle the
    terminal)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def shorten(text: str, limit: int = ECHO_CHARS) -> str:
    """`text` cut to `limit` characters (an ellipsis marks the cut): what a message repeats of a
    visitor's input."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def tokens(text: str) -> list[str]:
    """Lower-case word tokens of `text`, punctuation removed ('t-shirt' -> 't', 'shirt'): the
    words as the training grammar and a model folder's vocabulary.json count them."""
    return _TOKEN.findall(text.lower())
