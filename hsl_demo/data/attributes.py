"""The demo vocabulary: product categories, colours, patterns and how people describe them.

Everything the embedded model knows about language comes from here, so the templates are
deliberately varied (word order, synonyms, partial descriptions).
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Category:
    name: str  # canonical name, used in titles and metadata
    emoji: str  # the Noto Color Emoji glyph the product photo is rendered from
    synonyms: tuple[str, ...]  # other ways people say it (the name is always one of the ways)

    @property
    def words(self) -> tuple[str, ...]:
        return (self.name, *self.synonyms)


CATEGORIES: tuple[Category, ...] = (
    Category("t-shirt", "\U0001f455", ("tee", "tshirt")),
    Category("jeans", "\U0001f456", ("denim trousers", "pair of jeans")),
    Category("dress", "\U0001f457", ("summer dress", "frock")),
    Category("sneaker", "\U0001f45f", ("running shoe", "trainer")),
    Category("handbag", "\U0001f45c", ("shoulder bag", "tote")),
    Category("boot", "\U0001f462", ("tall boot", "riding boot")),
    Category("cap", "\U0001f9e2", ("baseball cap", "peaked cap")),
    Category("scarf", "\U0001f9e3", ("muffler", "neck scarf")),
    Category("shirt and tie", "\U0001f454", ("dress shirt", "collared shirt")),
    Category("blouse", "\U0001f45a", ("women's top", "ladies top")),
    Category("bikini", "\U0001f459", ("two-piece swimsuit", "bikini set")),
    Category("kimono", "\U0001f458", ("robe", "yukata")),
    Category("swimsuit", "\U0001fa71", ("one-piece swimsuit", "bathing suit")),
    Category("briefs", "\U0001fa72", ("swim briefs", "underpants")),
    Category("shorts", "\U0001fa73", ("board shorts", "pair of shorts")),
    Category("coat", "\U0001f9e5", ("jacket", "overcoat")),
    Category("safety vest", "\U0001f9ba", ("hi-vis vest", "work vest")),
    Category("socks", "\U0001f9e6", ("pair of socks", "sock")),
    Category("gloves", "\U0001f9e4", ("pair of gloves", "mittens")),
    Category("purse", "\U0001f45b", ("coin purse", "wallet")),
    Category("clutch", "\U0001f45d", ("clutch bag", "pouch")),
    Category("backpack", "\U0001f392", ("rucksack", "school bag")),
    Category("suitcase", "\U0001f9f3", ("luggage", "travel case")),
    Category("oxford shoe", "\U0001f45e", ("dress shoe", "loafer")),
    Category("high heel", "\U0001f460", ("stiletto", "pump")),
    Category("sandal", "\U0001f461", ("heeled sandal", "slide")),
    Category("ballet shoes", "\U0001fa70", ("pointe shoes", "dance shoes")),
    Category("flat shoe", "\U0001f97f", ("ballet flat", "slip-on")),
    Category("hiking boot", "\U0001f97e", ("trekking boot", "walking boot")),
    Category("flip-flop", "\U0001fa74", ("thong sandal", "beach sandal")),
    Category("sun hat", "\U0001f452", ("straw hat", "wide-brim hat")),
    Category("top hat", "\U0001f3a9", ("tall hat", "stovepipe hat")),
    Category("umbrella", "\U0001f302", ("parasol", "brolly")),
    Category("briefcase", "\U0001f4bc", ("laptop bag", "attache case")),
)


@dataclass(frozen=True)
class Color:
    name: str
    rgb: tuple[int, int, int]
    synonyms: tuple[str, ...] = ()

    @property
    def words(self) -> tuple[str, ...]:
        return (self.name, *self.synonyms)

    @property
    def luminance(self) -> float:
        r, g, b = self.rgb
        return (0.299 * r + 0.587 * g + 0.114 * b) / 255.0


COLORS: tuple[Color, ...] = (
    Color("black", (28, 28, 30)),
    Color("white", (244, 244, 240)),
    Color("grey", (128, 128, 128), ("gray",)),
    Color("red", (205, 28, 36)),
    Color("orange", (244, 128, 18)),
    Color("yellow", (246, 212, 36)),
    Color("green", (36, 150, 58)),
    Color("blue", (36, 84, 208)),
    Color("purple", (122, 46, 166)),
    Color("pink", (244, 134, 186)),
    Color("brown", (118, 72, 36)),
)


@dataclass(frozen=True)
class Pattern:
    name: str
    adjectives: tuple[str, ...]  # "striped t-shirt"
    with_phrases: tuple[str, ...]  # "a t-shirt with stripes"


PATTERNS: tuple[Pattern, ...] = (
    Pattern("plain", ("plain", "solid"), ("no pattern", "a solid colour")),
    Pattern("striped", ("striped", "stripy"), ("stripes", "a striped pattern")),
    Pattern("dotted", ("dotted", "polka-dot"), ("dots", "polka dots")),
    Pattern("checked", ("checked", "checkered", "plaid"), ("checks", "a check pattern")),
)

CATEGORY_BY_NAME = {c.name: c for c in CATEGORIES}
COLOR_BY_NAME = {c.name: c for c in COLORS}
PATTERN_BY_NAME = {p.name: p for p in PATTERNS}


@dataclass(frozen=True)
class Attributes:
    category: str
    color: str
    pattern: str

    def as_tuple(self) -> tuple[str, str, str]:
        return (self.category, self.color, self.pattern)


def title(attrs: Attributes) -> str:
    """A shop-style product title: 'Red striped t-shirt'."""
    pattern = "" if attrs.pattern == "plain" else f" {attrs.pattern}"
    return f"{attrs.color.capitalize()}{pattern} {attrs.category}"


def _article(phrase: str) -> str:
    return "an" if phrase[0] in "aeiou" else "a"


def plural(noun: str) -> str:
    """'sneaker' -> 'sneakers', 'dress' -> 'dresses'; words already plural stay as they are."""
    if noun.endswith(("ss", "sh", "ch", "x", "z")):
        return noun + "es"
    if noun.endswith("s"):  # jeans, socks, ballet shoes, pair of jeans
        return noun
    if noun.endswith("y") and noun[-2:-1] not in ("a", "e", "i", "o", "u"):
        return noun[:-1] + "ies"
    return noun + "s"


def describe(attrs: Attributes, rng: random.Random, mention: tuple[bool, bool] = (True, True),
             plural_form: bool = False) -> str:
    """One natural description of a product; `mention` says whether colour and pattern appear.

    The category is always mentioned: a query without any product word is not a product search.
    `plural_form` names the category in the plural ("white sneakers"), as people often do when
    they describe what is in a picture.
    """
    cat = rng.choice(CATEGORY_BY_NAME[attrs.category].words)
    if plural_form:
        cat = plural(cat)
    color = rng.choice(COLOR_BY_NAME[attrs.color].words)
    pattern = PATTERN_BY_NAME[attrs.pattern]
    adj = rng.choice(pattern.adjectives)
    with_phrase = rng.choice(pattern.with_phrases)
    say_color, say_pattern = mention
    if say_color and say_pattern:
        templates = [
            f"{color} {adj} {cat}",
            f"{_article(cat)} {cat} in {color} with {with_phrase}",
            f"{adj} {cat}, {color}",
            f"{color} {cat} with {with_phrase}",
            f"{_article(adj)} {adj} {color} {cat}",
        ]
    elif say_color:
        templates = [f"{color} {cat}", f"{_article(cat)} {cat} in {color}", f"{cat}, {color}"]
    elif say_pattern:
        templates = [f"{adj} {cat}", f"{_article(cat)} {cat} with {with_phrase}"]
    else:
        templates = [cat, f"{_article(cat)} {cat}"]
    text = rng.choice(templates)
    if plural_form:  # no singular article before a plural noun
        text = text.removeprefix("a ").removeprefix("an ")
    return text


def descriptions(attrs: Attributes, rng: random.Random, n: int = 3) -> list[str]:
    """`n` distinct full descriptions (colour, pattern and category all mentioned)."""
    seen: list[str] = []
    for _ in range(100 * n):
        text = describe(attrs, rng)
        if text not in seen:
            seen.append(text)
        if len(seen) == n:
            break
    return seen
