"""A query/caption grammar for TRAINING phrasings: synonyms, sentence shapes, fillers, typos.

The demo's first templates (attributes.describe, triplets.modify) had a handful of shapes, so a
model trained on them learns those shapes rather than language. Here every text comes from a
named *family* (a sentence shape over slots: colour word, pattern adjective or "with" phrase,
category word, plural or not), with fillers people type ("looking for", "please") and rare
misspellings. Other sentence shapes live in phrasing_heldout.py and are never sampled here, so an
evaluation on them measures whether the model generalises to phrasings it was not trained on.

This module must never import phrasing_heldout: the training side cannot reach held-out shapes.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache

from ..query import tokens
from .attributes import CATEGORIES, COLORS, PATTERNS, Attributes, plural

# --- vocabulary ---------------------------------------------------------------------------------

# Colour words people use; the canonical name comes first.
COLOR_WORDS: dict[str, tuple[str, ...]] = {
    "black": ("black", "jet black", "pitch black", "ebony"),
    "white": ("white", "ivory", "cream", "off-white", "snow white"),
    "grey": ("grey", "gray", "silver", "charcoal", "slate grey"),
    "red": ("red", "crimson", "scarlet", "cherry red", "ruby"),
    "orange": ("orange", "tangerine", "burnt orange", "pumpkin"),
    "yellow": ("yellow", "mustard", "lemon", "golden yellow"),
    "green": ("green", "emerald", "olive", "forest green", "lime green"),
    "blue": ("blue", "navy", "cobalt", "royal blue", "navy blue", "sky blue"),
    "purple": ("purple", "violet", "lilac", "plum", "lavender"),
    "pink": ("pink", "rose", "hot pink", "blush pink", "fuchsia"),
    "brown": ("brown", "tan", "chocolate", "camel", "chocolate brown"),
}

# Pattern words in the two positions they take: before the noun, or after "with".
PATTERN_ADJECTIVES: dict[str, tuple[str, ...]] = {
    "plain": ("plain", "solid", "solid coloured", "plain coloured", "unpatterned"),
    "striped": ("striped", "stripy", "pinstripe", "pinstriped"),
    "dotted": ("dotted", "polka-dot", "polka dot", "spotted", "spotty", "dotty"),
    "checked": ("checked", "checkered", "chequered", "plaid", "gingham", "tartan"),
}
PATTERN_WITH_PHRASES: dict[str, tuple[str, ...]] = {
    "plain": ("no pattern", "a solid colour", "no print", "a plain finish"),
    "striped": ("stripes", "a striped pattern", "pinstripes", "thin stripes", "wide stripes"),
    "dotted": ("dots", "polka dots", "spots", "a dot pattern", "little dots"),
    "checked": ("checks", "a check pattern", "a plaid pattern", "a gingham pattern", "a tartan print"),
}
PATTERN_WORDS: dict[str, tuple[str, ...]] = {
    p: PATTERN_ADJECTIVES[p] + PATTERN_WITH_PHRASES[p] for p in PATTERN_ADJECTIVES
}

# Category words: attributes.CATEGORIES' names and synonyms, plus common ones people type.
_EXTRA_CATEGORY_WORDS: dict[str, tuple[str, ...]] = {
    "t-shirt": ("t shirt", "tee shirt"),
    "jeans": ("denim jeans",),
    "dress": ("day dress",),
    "sneaker": ("sports shoe", "running trainer"),
    "handbag": ("hand bag", "ladies bag"),
    "boot": ("knee boot",),
    "cap": ("ball cap",),
    "scarf": ("shawl",),
    "shirt and tie": ("shirt with tie", "shirt and necktie"),
    "blouse": ("shirt blouse",),
    "bikini": ("two piece",),
    "kimono": ("japanese robe",),
    "swimsuit": ("swimming costume",),
    "briefs": ("pair of briefs",),
    "shorts": ("short trousers",),
    "coat": ("winter coat",),
    "safety vest": ("reflective vest", "high vis vest"),
    "socks": ("ankle socks",),
    "gloves": ("winter gloves",),
    "purse": ("change purse",),
    "clutch": ("evening bag",),
    "backpack": ("back pack", "daypack"),
    "suitcase": ("suit case", "trolley case"),
    "oxford shoe": ("brogue",),
    "high heel": ("high-heeled shoe",),
    "sandal": ("summer sandal",),
    "ballet shoes": ("ballet slippers",),
    "flat shoe": ("ballerina flat",),
    "hiking boot": ("mountain boot",),
    "flip-flop": ("flip flop",),
    "sun hat": ("sunhat", "beach hat"),
    "top hat": ("topper",),
    "umbrella": ("rain umbrella",),
    "briefcase": ("brief case", "document case"),
}
CATEGORY_WORDS: dict[str, tuple[str, ...]] = {
    c.name: tuple(dict.fromkeys(c.words + _EXTRA_CATEGORY_WORDS.get(c.name, ()))) for c in CATEGORIES
}
assert set(COLOR_WORDS) == {c.name for c in COLORS} and set(PATTERN_WORDS) == {p.name for p in PATTERNS}

# Fillers wrapped around a description: how people start and end a search box query.
PREFIX_FILLERS: tuple[str, ...] = (
    "i want", "i'd like", "i would like", "i am looking for", "looking for", "i'm looking for", "show me",
    "could you show me", "find me", "i need", "do you sell", "have you got", "search for", "please find",
    "hi, i want", "something like",
)
SUFFIX_FILLERS: tuple[str, ...] = (
    "please", "thanks", "or something like that", "that kind of thing", "if there is one", "for me",
)

TYPO_RATE = 0.03  # share of texts with one misspelt content word



# --- families -----------------------------------------------------------------------------------

# Template syntax: {color} {adj} {with} {cat} {cats} (always plural) {is} (is/are), ref_* versions
# of the same for the reference of a composed query, {description} (a full description of the
# target), and "[a] " for an indefinite article that becomes "a"/"an" or disappears before a
# plural noun.
_SLOT = re.compile(r"\{(\w+)\}")

MENTIONS: tuple[tuple[bool, bool], ...] = ((True, True), (True, False), (False, True), (False, False))
MODIFY_KINDS = ("color", "pattern", "category", "color+pattern", "redescribe", "this-one")


@dataclass(frozen=True)
class Family:
    """One sentence shape: templates per case (a mention pair for describe/region, a triplet kind
    for modify). A family that has no template for a case does not apply to it."""

    name: str
    kind: str  # "describe", "modify" or "region"
    templates: Mapping[object, tuple[str, ...]]
    fillers: bool = False  # may get a prefix/suffix filler (shapes that read as a bare description)

    def applies(self, case: object) -> bool:
        return bool(self.templates.get(case))

    def __call__(self, slots: Mapping[str, str], case: object, rng: random.Random) -> str:
        return fill(rng.choice(self.templates[case]), slots)


def fill(template: str, slots: Mapping[str, str]) -> str:
    # No singular article before a plural noun: each "[a] " looks at the next category slot.
    def article(m: re.Match) -> str:
        noun = re.search(r"\{(\w*)cat\}", template[m.end():])
        plural_noun = noun is not None and slots.get(noun.group(1) + "is") == "are"
        return "" if plural_noun else "[a] "

    text = _SLOT.sub(lambda m: slots[m.group(1)], re.sub(r"\[a\] ", article, template))
    text = re.sub(r"\[a\] (\w+)", lambda m: f"{_article(m.group(1))} {m.group(1)}", text)
    return re.sub(r"\s+", " ", text).strip()


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" and not word.startswith(("one", "uni", "eu")) else "a"


def template_words(templates: Mapping[object, Sequence[str]]) -> set[str]:
    """The literal words of templates (slots and article markers removed)."""
    words: set[str] = set()
    for group in templates.values():
        for t in group:
            words.update(tokens(_SLOT.sub(" ", t).replace("[a]", " a an ")))
    return words


def _describe(name: str, tt: Sequence[str], t_: Sequence[str], _p: Sequence[str], __: Sequence[str],
              fillers: bool = True) -> Family:
    return Family(name, "describe", {(True, True): tuple(tt), (True, False): tuple(t_), (False, True): tuple(_p),
                                     (False, False): tuple(__)}, fillers)


_DESCRIBE = (
    _describe("adjectives_first",
              ["{color} {adj} {cat}", "[a] {color} {adj} {cat}", "{adj} {color} {cat}", "[a] {adj} {color} {cat}"],
              ["{color} {cat}", "[a] {color} {cat}"], ["{adj} {cat}", "[a] {adj} {cat}"], ["{cat}", "[a] {cat}"]),
    _describe("in_color_with",
              ["[a] {cat} in {color} with {with}", "{cat} in {color} with {with}"],
              ["[a] {cat} in {color}", "{cat} in {color}"], ["[a] {cat} with {with}", "{cat} with {with}"],
              ["[a] {cat}"]),
    _describe("with_then_color",
              ["[a] {cat} with {with} in {color}", "{cat} with {with}, in {color}"],
              ["[a] {cat}, in {color}"], ["{cat} with {with}"], ["[a] {cat}, any colour"]),
    _describe("comma_tail",
              ["{adj} {cat}, {color}", "{color} {cat}, {adj}", "[a] {adj} {cat}, {color}"],
              ["{cat}, {color}", "[a] {cat}, {color}"], ["{cat}, {adj}", "[a] {cat}, {adj}"], ["{cat}, any colour"]),
    _describe("color_noun_with",
              ["{color} {cat} with {with}", "[a] {color} {cat} with {with}"],
              ["{color} {cat}"], ["[a] {cat} with {with}"], ["just [a] {cat}"]),
    _describe("colour_of",
              ["[a] {adj} {cat}, colour {color}", "{cat} with {with}, colour {color}"],
              ["[a] {cat}, colour {color}", "{cat} colour {color}"], ["[a] {adj} {cat}, any colour"],
              ["[a] {cat} in any colour"]),
    _describe("would_be_nice",
              ["[a] {color} {adj} {cat} would be nice", "[a] {color} {cat} with {with} would be great"],
              ["[a] {color} {cat} would be nice", "[a] {color} {cat} would be great"],
              ["[a] {adj} {cat} would be nice"], ["[a] {cat} would be great"], fillers=False),
    _describe("what_i_need",
              ["what i need is [a] {color} {adj} {cat}", "[a] {color} {cat} with {with} {is} what i need"],
              ["what i need is [a] {color} {cat}", "[a] {color} {cat} {is} what i need"],
              ["what i need is [a] {adj} {cat}"], ["what i need is [a] {cat}"], fillers=False),
    _describe("any_will_do",
              ["any {color} {adj} {cat} will do", "any {cat} in {color} with {with} will do"],
              ["any {color} {cat} will do", "show me any {color} {cats}"],
              ["any {adj} {cat} will do"], ["any {cat} will do", "show me any {cats}"], fillers=False),
    _describe("for_sale",
              ["{color} {adj} {cats} for sale", "{adj} {cats} in {color} for sale"],
              ["{color} {cats} for sale"], ["{adj} {cats} for sale"], ["{cats} for sale"], fillers=False),
)

# Composed-query families: what to change about the reference, per triplet kind.
_MODIFY = (
    Family("make_it", "modify", {
        "color": ("make it {color}", "make them {color}"),
        "pattern": ("make it {adj}",),
        "category": ("make it [a] {cat}",),
        "color+pattern": ("make it {color} and {adj}", "make it {adj} and {color}"),
    }),
    Family("instead", "modify", {
        "color": ("in {color} instead", "{color} instead"),
        "pattern": ("with {with} instead", "{adj} instead"),
        "category": ("[a] {cat} instead",),
        "color+pattern": ("in {color} with {with} instead", "{color} and {adj} instead"),
        "this-one": ("this one instead, from another shop",),
    }),
    Family("same_but", "modify", {
        "color": ("same but {color}", "same but in {color}"),
        "pattern": ("same but {adj}", "same but with {with}"),
        "category": ("same colours but as [a] {cat}", "same look but as [a] {cat}"),
        "color+pattern": ("same but {color} and {adj}",),
        "this-one": ("same one, another photo",),
    }),
    Family("want_it", "modify", {
        "color": ("I want it in {color}", "i'd like it in {color}"),
        "pattern": ("i want it {adj}", "i'd like it with {with}"),
        "category": ("i want this as [a] {cat}", "i'd like [a] {cat} like this"),
        "color+pattern": ("I want it in {color} with {with}", "i'd like it {adj}, in {color}"),
    }),
    Family("change_to", "modify", {
        "color": ("change the colour to {color}", "change colour to {color}"),
        "pattern": ("change the pattern to {adj}", "change the print to {with}"),
        "category": ("change it to [a] {cat}",),
        "color+pattern": ("change it to {color} with {with}", "change the colour to {color} and the pattern to {adj}"),
    }),
    Family("version", "modify", {
        "color": ("the {color} version", "{color} version of this"),
        "pattern": ("the {adj} version", "{adj} version of this"),
        "category": ("the {cat} version of this", "{cat} version"),
        "color+pattern": ("the {color} {adj} version",),
    }),
    Family("instead_of", "modify", {
        "color": ("{color} instead of {ref_color}",),
        "pattern": ("{with} instead of {ref_with}", "{adj} instead of {ref_adj}"),
        "category": ("[a] {cat} instead of [a] {ref_cat}",),
        "color+pattern": ("{color} instead of {ref_color}, and {adj}",),
    }),
    Family("like_this_but", "modify", {
        "color": ("like this but {color}", "like this one but in {color}"),
        "pattern": ("like this but with {with}", "like this one but {adj}"),
        "category": ("[a] {cat} like this one", "something like this but [a] {cat}"),
        "color+pattern": ("like this but {color} with {with}",),
        "this-one": ("like this one, from any listing",),
    }),
    Family("prefer", "modify", {
        "color": ("i'd prefer {color}", "prefer it in {color}"),
        "pattern": ("i'd prefer {with}", "i'd prefer it {adj}"),
        "category": ("i'd prefer [a] {cat} in the same colours",),
        "color+pattern": ("i'd prefer {color} and {adj}",),
    }),
    Family("redescribe", "modify", {
        # {bare}: a description from a shape without its own fillers, so that wrapping it reads well
        "redescribe": ("{description}", "actually, {bare}", "no, {bare}", "i want {bare} instead",
                       "rather {bare}"),
    }),
    Family("this_one_but", "modify", {
        "this-one": ("this one but from another shop", "this one but another photo", "exactly this one, please",
                     "this one but any listing", "the very same one", "just this one, does not matter which shop",
                     "another photo of this one", "this exact one", "this one from another seller"),
    }),
)


def _region(name: str, tt: Sequence[str], t_: Sequence[str], _p: Sequence[str], __: Sequence[str]) -> Family:
    return Family("region_" + name, "region", {(True, True): tuple(tt), (True, False): tuple(t_),
                                               (False, True): tuple(_p), (False, False): tuple(__)})


# Drill-down rounds: short phrases, as people name one item in a picture.
_REGION = (
    _region("bare", ["{color} {adj} {cat}", "{adj} {color} {cat}"], ["{color} {cat}"], ["{adj} {cat}"], ["{cat}"]),
    _region("article", ["[a] {color} {adj} {cat}"], ["[a] {color} {cat}", "[a] {cat} in {color}"],
            ["[a] {adj} {cat}"], ["[a] {cat}"]),
    _region("the_item", ["the {color} {adj} {cat}", "the {adj} {color} {cat}"], ["the {color} {cat}"],
            ["the {adj} {cat}"], ["the {cat}"]),
    _region("comma", ["{adj} {cat}, {color}", "{color} {cat}, {adj}"], ["{cat}, {color}"], ["{cat}, {adj}"],
            ["{cat}"]),
    _region("plus", ["plus [a] {color} {adj} {cat}", "and [a] {color} {cat} with {with}"],
            ["plus [a] {color} {cat}", "and [a] {color} {cat}"], ["and [a] {adj} {cat}"], ["and [a] {cat}"]),
)

_REGISTRY: dict[str, dict[str, Family]] = {
    kind: {f.name: f for f in fams} for kind, fams in (("describe", _DESCRIBE), ("modify", _MODIFY),
                                                        ("region", _REGION))
}
TRAIN_FAMILIES: dict[str, list[str]] = {kind: list(fams) for kind, fams in _REGISTRY.items()}


def family(kind: str, name: str) -> Family:
    """A TRAINING family by name; any other name (a held-out family's included) is an error."""
    try:
        return _REGISTRY[kind][name]
    except KeyError:
        raise ValueError(f"{name!r} is not a training {kind} family (one of "
                         f"{', '.join(TRAIN_FAMILIES.get(kind, []))})") from None


@cache
def vocabulary() -> frozenset[str]:
    """Every lower-case word token the training grammar can produce, fillers included (typos excluded)."""
    words: set[str] = {"a", "an", "is", "are"}
    for phrases in (*COLOR_WORDS.values(), *PATTERN_WORDS.values(), PREFIX_FILLERS, SUFFIX_FILLERS):
        for p in phrases:
            words.update(tokens(p))
    for cats in CATEGORY_WORDS.values():
        for c in cats:
            words.update(tokens(c) + tokens(plural(c)))
    for fams in _REGISTRY.values():
        for f in fams.values():
            words.update(template_words(f.templates))
    return frozenset(words)


@cache
def content_words() -> frozenset[str]:
    """Tokens of colour, pattern and category words (never fillers)."""
    phrases = [*COLOR_WORDS.values(), *PATTERN_WORDS.values(), *CATEGORY_WORDS.values()]
    return frozenset(t for group in phrases for p in group for t in tokens(p) + tokens(plural(p)))


# --- slots, fillers, typos ----------------------------------------------------------------------


def slots(attrs: Attributes, rng: random.Random, plural_form: bool = False, prefix: str = "") -> dict[str, str]:
    """Random words for every slot of `attrs` (names prefixed with `prefix`, e.g. 'ref_')."""
    cat = rng.choice(CATEGORY_WORDS[attrs.category])
    out = {
        "cat": plural(cat) if plural_form else cat,
        "cats": plural(cat),
        "color": rng.choice(COLOR_WORDS[attrs.color]),
        "adj": rng.choice(PATTERN_ADJECTIVES[attrs.pattern]),
        "with": rng.choice(PATTERN_WITH_PHRASES[attrs.pattern]),
        "is": "are" if plural_form or is_plural(cat) else "is",
    }
    return {prefix + k: v for k, v in out.items()}


def is_plural(noun: str) -> bool:
    """'socks', 'jeans', 'ballet shoes' are plural already; 'pair of socks', 'dress' are not."""
    return plural(noun) == noun and not noun.startswith("pair of") and not noun.endswith(("ss", "us"))


def _content_tokens(slot_values: Mapping[str, str]) -> set[str]:
    """Tokens that came from colour/pattern/category words: the only ones a typo may touch."""
    return {t for k, v in slot_values.items() if not k.endswith("is") for t in tokens(v)}


def misspell(text: str, content: set[str], rng: random.Random, rate: float = TYPO_RATE) -> str:
    """With probability `rate`, one letter dropped, swapped with the next or doubled in one content
    word (at least 4 letters), never giving another vocabulary word. Deterministic given `rng`."""
    if rate <= 0 or rng.random() >= rate:
        return text
    words = sorted({t for t in tokens(text) if t in content and len(t) >= 4 and t.isalpha()})
    if not words:
        return text
    vocab = vocabulary()
    word = rng.choice(words)
    for _ in range(20):
        i = rng.randrange(1, len(word))
        op = rng.choice(("drop", "swap", "double"))
        if op == "drop":
            typo = word[:i] + word[i + 1:]
        elif op == "swap":
            typo = word[:i - 1] + word[i] + word[i - 1] + word[i + 1:]
        else:
            typo = word[:i] + word[i] + word[i:]
        if typo != word and typo not in vocab:
            return re.sub(rf"\b{re.escape(word)}\b", typo, text, count=1)
    return text


def _with_fillers(text: str, rng: random.Random) -> str:
    r = rng.random()
    if r < 0.3:
        text = f"{rng.choice(PREFIX_FILLERS)} {text}"
    elif r < 0.42:
        text = f"{text} {rng.choice(SUFFIX_FILLERS)}"
    elif r < 0.47:
        text = f"{rng.choice(PREFIX_FILLERS)} {text}, {rng.choice(SUFFIX_FILLERS)}"
    return text


def _pick(kind: str, case: object, rng: random.Random, families: Sequence[str] | None) -> Family:
    names = TRAIN_FAMILIES[kind] if families is None else list(families)
    pool = [f for f in (family(kind, n) for n in names) if f.applies(case)]
    if not pool:
        raise ValueError(f"none of the {kind} families {names} covers {case!r}")
    return rng.choice(pool)


def _check_mention(mention: tuple[bool, bool]) -> tuple[bool, bool]:
    return (bool(mention[0]), bool(mention[1]))  # so that (1, 0) finds the (True, False) templates


# --- public API ---------------------------------------------------------------------------------


def describe_query(attrs: Attributes, rng: random.Random, mention: tuple[bool, bool] = (True, True),
                   plural_form: bool = False, families: Sequence[str] | None = None,
                   typo_rate: float = TYPO_RATE) -> str:
    """One training text query for `attrs`; `mention` says whether colour and pattern appear (the
    category always does). `families` restricts the sentence shapes to these TRAINING families."""
    mention = _check_mention(mention)
    fam = _pick("describe", mention, rng, families)
    s = slots(attrs, rng, plural_form)
    text = fam(s, mention, rng)
    if fam.fillers:
        text = _with_fillers(text, rng)
    return misspell(text, _content_tokens(s), rng, typo_rate)


def modification_text(reference: Attributes, target: Attributes, kind: str, rng: random.Random,
                      families: Sequence[str] | None = None, typo_rate: float = TYPO_RATE) -> str:
    """The modification text of a composed query turning `reference` into `target` (one of
    MODIFY_KINDS; 'redescribe' fully describes the target, 'this-one' asks for nothing)."""
    if kind not in MODIFY_KINDS:
        raise ValueError(f"unknown modification kind {kind!r} (one of {', '.join(MODIFY_KINDS)})")
    fam = _pick("modify", kind, rng, families)
    s = {**slots(target, rng), **slots(reference, rng, prefix="ref_")}
    if kind == "redescribe":
        s["description"] = describe_query(target, rng, typo_rate=0.0)
        bare = [n for n in TRAIN_FAMILIES["describe"] if _REGISTRY["describe"][n].fillers]
        s["bare"] = _pick("describe", (True, True), rng, bare)(slots(target, rng), (True, True), rng)
    text = fam(s, kind, rng)
    described = set(tokens(s.get("description", "") + " " + s.get("bare", "")))
    content = _content_tokens(s) | (described & content_words())
    return misspell(text, content, rng, typo_rate)


def region_phrase(attrs: Attributes, rng: random.Random, mention: tuple[bool, bool] = (True, False),
                  plural_form: bool = False, families: Sequence[str] | None = None,
                  typo_rate: float = TYPO_RATE) -> str:
    """A short phrase naming one item in a picture, for a drill-down round ('a red handbag')."""
    mention = _check_mention(mention)
    fam = _pick("region", mention, rng, families)
    s = slots(attrs, rng, plural_form)
    return misspell(fam(s, mention, rng), _content_tokens(s), rng, typo_rate)
