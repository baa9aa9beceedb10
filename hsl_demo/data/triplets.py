"""Composed-query triplets for the demo catalog: (reference, modification text, target).

Six kinds, so that the adaptive weights have something to adapt to:
- color, pattern: change one attribute ("make it blue", "with dots instead");
- category: keep colour and pattern, change the product ("the boot version of this");
- color+pattern: two changes at once ("make it blue and striped");
- redescribe: a full description of the target (the text should dominate);
- this-one: "this one but ..." with nothing really asked (the image should dominate; the
  targets are the other photos of the reference's combination).
A triplet belongs to the test split when its target combination is held out, so test
targets are combinations never seen in training.
"""

from __future__ import annotations

import random

from .attributes import (
    CATEGORIES,
    CATEGORY_BY_NAME,
    COLOR_BY_NAME,
    COLORS,
    PATTERN_BY_NAME,
    PATTERNS,
    Attributes,
    describe,
)

KINDS = ("color", "pattern", "category", "color+pattern", "redescribe", "this-one")


def _color_phrase(color: str, rng: random.Random) -> str:
    word = rng.choice(COLOR_BY_NAME[color].words)
    return rng.choice([f"make it {word}", f"in {word} instead", f"same but {word}", f"I want it in {word}"])


def _pattern_phrase(pattern: str, rng: random.Random) -> str:
    p = PATTERN_BY_NAME[pattern]
    return rng.choice([f"make it {rng.choice(p.adjectives)}", f"with {rng.choice(p.with_phrases)} instead",
                       f"same but {rng.choice(p.adjectives)}"])


def _other(values: list[str], current: str, rng: random.Random) -> str:
    return rng.choice([v for v in values if v != current])


def modify(ref: Attributes, kind: str, rng: random.Random, grammar: bool = False) -> tuple[Attributes, str]:
    """The target attributes and the modification text of one triplet of `kind` (with
    `grammar`, the text comes from the phrasing grammar instead of these templates)."""
    target, text = _modify(ref, kind, rng)
    if grammar:
        from .phrasing import modification_text

        text = modification_text(ref, target, kind, rng)
    return target, text


def _modify(ref: Attributes, kind: str, rng: random.Random) -> tuple[Attributes, str]:
    colors, patterns = [c.name for c in COLORS], [p.name for p in PATTERNS]
    if kind == "color":
        target = Attributes(ref.category, _other(colors, ref.color, rng), ref.pattern)
        return target, _color_phrase(target.color, rng)
    if kind == "pattern":
        target = Attributes(ref.category, ref.color, _other(patterns, ref.pattern, rng))
        return target, _pattern_phrase(target.pattern, rng)
    if kind == "category":
        target = Attributes(_other([c.name for c in CATEGORIES], ref.category, rng), ref.color, ref.pattern)
        word = rng.choice(CATEGORY_BY_NAME[target.category].words)
        return target, rng.choice([f"the {word} version of this", f"same colours but as a {word}",
                                   f"a {word} like this one", f"make it a {word}"])
    if kind == "color+pattern":
        target = Attributes(ref.category, _other(colors, ref.color, rng), _other(patterns, ref.pattern, rng))
        p = PATTERN_BY_NAME[target.pattern]
        color = rng.choice(COLOR_BY_NAME[target.color].words)
        return target, rng.choice([f"make it {color} and {rng.choice(p.adjectives)}",
                                   f"in {color} with {rng.choice(p.with_phrases)}"])
    if kind == "redescribe":
        target = Attributes(_other([c.name for c in CATEGORIES], ref.category, rng),
                            _other(colors, ref.color, rng), rng.choice(patterns))
        return target, describe(target, rng)
    if kind == "this-one":
        return ref, rng.choice(["this one but from another shop", "this one but another photo",
                                "exactly this one, please", "this one but any listing"])
    raise ValueError(f"unknown triplet kind {kind!r} (one of {', '.join(KINDS)})")


def plan_triplets(records: list[dict], held: set[Attributes], seed: int, split: str = "test",
                  per_kind: int = 40) -> list[dict]:
    """Composed query lines for `hsl-demo evaluate`: per kind, up to `per_kind` triplets whose
    target combination is in (test) or out of (train) the held-out set. `records` are the
    products catalog's metadata records (id, category, color, pattern)."""
    rng = random.Random(seed * 31 + 5)
    by_combo: dict[Attributes, list[str]] = {}
    for r in records:
        by_combo.setdefault(Attributes(r["category"], r["color"], r["pattern"]), []).append(r["id"])
    refs = sorted(records, key=lambda r: r["id"])
    out = []
    for kind in KINDS:
        made, tries = 0, 0
        while made < per_kind and tries < 200 * per_kind:
            tries += 1
            ref = rng.choice(refs)
            attrs = Attributes(ref["category"], ref["color"], ref["pattern"])
            target, text = modify(attrs, kind, rng)
            if (target in held) != (split == "test") or target not in by_combo:
                continue
            targets = [i for i in by_combo[target] if i != ref["id"]]
            if not targets:
                continue
            out.append({"mode": "composed", "reference": ref["id"], "text": text, "targets": targets,
                        "kind": kind})
            made += 1
    return out
