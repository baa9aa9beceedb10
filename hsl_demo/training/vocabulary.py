"""The words the demo model was trained on, written beside it as `vocabulary.json`, so that a
search can say which words of a query the model has never seen (a notice, not an error)."""

from __future__ import annotations

import random
from pathlib import Path

from ..backbone import VOCABULARY_FILE
from ..data.attributes import Attributes, describe
from ..data.demo import all_combinations
from ..data.phrasing import tokens
from ..data.triplets import KINDS, modify
from ..fileio import write_json
from .common import MENTIONS


def demo_vocabulary(draws: int = 40, seed: int = 0) -> set[str]:
    """Every word the demo trainers' text generators produce: descriptions of every combination
    under every mention, singular and plural (backbone, HSL, HMRN), and modification texts of
    every kind (composed). Sampled `draws` times each, which covers their finite templates."""
    rng = random.Random(seed)
    words: set[str] = set()
    combos: list[Attributes] = all_combinations()
    for attrs in combos:
        for _ in range(draws):
            for mention in MENTIONS:
                for plural in (False, True):
                    words.update(tokens(describe(attrs, rng, mention, plural)))
            for kind in KINDS:
                words.update(tokens(modify(attrs, kind, rng)[1]))
    return words


def write_vocabulary(model_folder: str | Path, words: set[str], source: str) -> None:
    write_json(Path(model_folder) / VOCABULARY_FILE, {"source": source, "words": sorted(words)})
