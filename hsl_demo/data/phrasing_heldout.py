"""HELD-OUT phrasing families: sentence shapes the training grammar (phrasing.py) never produces.

They use only words of the training vocabulary (phrasing.vocabulary()), so what an evaluation on
them measures is generalisation to new sentence SHAPES, not to unknown words. Nothing in training
may import this module; phrasing.py's functions refuse these family names.

`heldout_query_files` rewrites the demo's test query files with these shapes (same targets,
references, kinds and modes; only the texts and regions change).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from ..errors import HslDemoError
from ..fileio import load_jsonl, write_jsonl
from .attributes import Attributes
from .phrasing import MODIFY_KINDS, Family, content_words, misspell, slots, tokens


def _family(name: str, kind: str, templates: dict) -> Family:
    return Family(name, kind, {k: tuple(v) for k, v in templates.items() if v})


TT, T_, _P, __ = (True, True), (True, False), (False, True), (False, False)

_DESCRIBE = (
    # pattern adjective before the noun, colour after it: "i am looking for a striped dress in red"
    _family("adj_noun_in_color", "describe", {
        TT: ["i am looking for [a] {adj} {cat} in {color}", "[a] {adj} {cat} in {color}"]}),
    _family("do_you_have_any", "describe", {
        TT: ["do you have any {color} {cats} with {with}?", "do you have any {adj} {cats} in {color}?"],
        T_: ["do you have any {color} {cats}?"],
        _P: ["do you have any {cats} with {with}?"],
        __: ["do you have any {cats}?"]}),
    # the noun first, then a list of attributes: "dress: red, striped"
    _family("noun_first_list", "describe", {
        TT: ["{cat}: {color}, {adj}", "{cat}: {color}, {with}", "{cat} {color} {adj}"]}),
    _family("relative_clause", "describe", {
        TT: ["[a] {cat} that {is} {color} and {adj}", "[a] {cat} that {is} {color} with {with}"],
        T_: ["[a] {cat} that {is} {color}"],
        _P: ["[a] {cat} that {is} {adj}"]}),
    _family("of_any_kind", "describe", {
        TT: ["{color} {adj} {cats} of any kind"],
        T_: ["{color} {cats} of any kind"],
        _P: ["{adj} {cats} of any kind"],
        __: ["{cats} of any kind", "[a] {cat} of any kind"]}),
)

_MODIFY = (
    _family("same_thing_but", "modify", {
        "color": ["same thing but in {color}"],
        "pattern": ["same thing but with {with}"],
        "category": ["same thing but as [a] {cat}"],
        "color+pattern": ["same thing but in {color} with {with}"],
        "this-one": ["same thing, from another shop"]}),
    _family("could_it_be", "modify", {
        "color": ["could it be {color} instead?"],
        "pattern": ["could it be {adj} instead?", "could it be with {with} instead?"],
        "category": ["could it be [a] {cat} instead?"],
        "color+pattern": ["could it be {color} with {with} instead?"]}),
    _family("is_there", "modify", {
        "color": ["is there [a] {color} one?"],
        "pattern": ["is there [a] {adj} one?"],
        "category": ["is there [a] {cat} like this?"],
        "color+pattern": ["is there [a] {color} {adj} one?"],
        "this-one": ["is there another photo of this one?"]}),
    # the target against the reference: "navy, not red"
    _family("not_contrast", "modify", {
        "color": ["{color}, not {ref_color}"],
        "pattern": ["{adj}, not {ref_adj}"],
        "category": ["[a] {cat}, not [a] {ref_cat}"],
        "color+pattern": ["{color} and {adj}, not {ref_color}"],
        "this-one": ["this one, not another one"]}),
    _family("redescribe_heldout", "modify", {"redescribe": ["{description}"]}),
)

_REGION = (
    _family("region_the_color_one", "region", {
        TT: ["the {color} one, [a] {adj} {cat}"],
        T_: ["the {color} one, [a] {cat}"],
        _P: ["the {adj} one, [a] {cat}"],
        __: ["the one, [a] {cat}"]}),
    _family("region_relative", "region", {
        TT: ["the {cat} that {is} {color} and {adj}"],
        T_: ["the {cat} that {is} {color}"],
        _P: ["the {cat} that {is} {adj}"],
        __: ["the {cat} in there"]}),
    _family("region_coloured", "region", {
        TT: ["[a] {adj}, {color} coloured {cat}"],
        T_: ["[a] {color} coloured {cat}", "{color} coloured {cat}"]}),
)

_REGISTRY: dict[str, dict[str, Family]] = {
    kind: {f.name: f for f in fams} for kind, fams in (("describe", _DESCRIBE), ("modify", _MODIFY),
                                                        ("region", _REGION))
}
HELD_OUT_FAMILIES: dict[str, list[str]] = {kind: list(fams) for kind, fams in _REGISTRY.items()}


def _pick(kind: str, case: object, rng: random.Random, families: Sequence[str] | None) -> Family:
    names = HELD_OUT_FAMILIES[kind] if families is None else list(families)
    unknown = [n for n in names if n not in _REGISTRY[kind]]
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not a held-out {kind} family")
    pool = [_REGISTRY[kind][n] for n in names if _REGISTRY[kind][n].applies(case)]
    if not pool:
        raise ValueError(f"none of the held-out {kind} families {names} covers {case!r}")
    return rng.choice(pool)


def _typos(text: str, rng: random.Random, rate: float) -> str:
    return misspell(text, set(tokens(text)) & content_words(), rng, rate)


def heldout_describe_query(attrs: Attributes, rng: random.Random, mention: tuple[bool, bool] = (True, True),
                           plural_form: bool = False, families: Sequence[str] | None = None,
                           typo_rate: float = 0.0) -> str:
    """A text query for `attrs` in a held-out shape (no typos by default: the shape is what is tested)."""
    mention = (bool(mention[0]), bool(mention[1]))
    text = _pick("describe", mention, rng, families)(slots(attrs, rng, plural_form), mention, rng)
    return _typos(text, rng, typo_rate)


def heldout_modification_text(reference: Attributes, target: Attributes, kind: str, rng: random.Random,
                              families: Sequence[str] | None = None, typo_rate: float = 0.0) -> str:
    """A composed-query modification text in a held-out shape (see phrasing.modification_text)."""
    if kind not in MODIFY_KINDS:
        raise ValueError(f"unknown modification kind {kind!r} (one of {', '.join(MODIFY_KINDS)})")
    fam = _pick("modify", kind, rng, families)
    s = {**slots(target, rng), **slots(reference, rng, prefix="ref_")}
    if kind == "redescribe":
        s["description"] = heldout_describe_query(target, rng)
    return _typos(fam(s, kind, rng), rng, typo_rate)


def heldout_region_phrase(attrs: Attributes, rng: random.Random, mention: tuple[bool, bool] = (True, False),
                          plural_form: bool = False, families: Sequence[str] | None = None,
                          typo_rate: float = 0.0) -> str:
    """A drill-down round phrase in a held-out shape ("the red one, a handbag")."""
    mention = (bool(mention[0]), bool(mention[1]))
    text = _pick("region", mention, rng, families)(slots(attrs, rng, plural_form), mention, rng)
    return _typos(text, rng, typo_rate)


# --- held-out versions of the demo's test query files ---------------------------------------------

HELDOUT_FILES = {
    "text": ("products/queries.test.jsonl", "products/queries.test.heldout.jsonl"),
    "composed": ("products/queries.composed.test.jsonl", "products/queries.composed.test.heldout.jsonl"),
    "multi": ("looks/queries.multi.test.jsonl", "looks/queries.multi.test.heldout.jsonl"),
}


def _attrs(record: dict) -> Attributes:
    return Attributes(record["category"], record["color"], record["pattern"])


def _combination(ids: list[str], products: dict[str, Attributes], where: str) -> Attributes:
    """The one attribute combination all `ids` share (test targets are one combination)."""
    combos = {products[i] for i in ids}
    if len(combos) != 1:
        raise HslDemoError(f"{where}: targets {ids[:3]} are not one product combination")
    return combos.pop()


def heldout_query_files(demo_dir: Path, seed: int = 0) -> dict[str, Path]:
    """Write a held-out-phrasing copy of each demo test query file next to it (same lines, targets,
    references, kinds and modes; texts and regions rephrased; "phrasing": "held-out" added).
    Deterministic for `seed`. Returns the written paths by mode."""
    demo_dir = Path(demo_dir)
    products = {r["id"]: _attrs(r) for r in load_jsonl(demo_dir / "products" / "metadata.jsonl")}
    looks = load_jsonl(demo_dir / "looks" / "metadata.jsonl")
    out: dict[str, Path] = {}

    # Text queries: colour, pattern and category all mentioned, as in the originals.
    src, dst = HELDOUT_FILES["text"]
    rng = random.Random(seed * 1009 + 1)
    lines = []
    for n, line in enumerate(load_jsonl(demo_dir / src), 1):
        attrs = _combination(line["targets"], products, f"{src} line {n}")
        lines.append({**line, "text": heldout_describe_query(attrs, rng), "phrasing": "held-out"})
    write_jsonl(demo_dir / dst, lines)
    out["text"] = demo_dir / dst

    src, dst = HELDOUT_FILES["composed"]
    rng = random.Random(seed * 1009 + 2)
    lines = []
    for n, line in enumerate(load_jsonl(demo_dir / src), 1):
        target = _combination(line["targets"], products, f"{src} line {n}")
        text = heldout_modification_text(products[line["reference"]], target, line["kind"], rng)
        lines.append({**line, "text": text, "phrasing": "held-out"})
    write_jsonl(demo_dir / dst, lines)
    out["composed"] = demo_dir / dst

    # Drill-down lines were written one per test look, in metadata order, one region per item
    # in item order (demo.multi_queries), naming colour and category only.
    src, dst = HELDOUT_FILES["multi"]
    rng = random.Random(seed * 1009 + 3)
    test_looks = [look for look in looks if look["split"] == "test"]
    originals = load_jsonl(demo_dir / src)
    if len(originals) != len(test_looks):
        raise HslDemoError(f"{src}: {len(originals)} lines for {len(test_looks)} test looks")
    lines = []
    for n, (line, look) in enumerate(zip(originals, test_looks), 1):
        if look["id"] not in line["targets"] or len(line["regions"]) != len(look["items"]):
            raise HslDemoError(f"{src} line {n} does not describe look {look['id']}")
        regions = [heldout_region_phrase(_attrs(it), rng, (True, False)) for it in look["items"]]
        lines.append({**line, "regions": regions, "phrasing": "held-out"})
    write_jsonl(demo_dir / dst, lines)
    out["multi"] = demo_dir / dst
    return out
