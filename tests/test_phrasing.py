"""The training phrasing grammar and its held-out shapes (hsl_demo/data/phrasing*.py)."""

from __future__ import annotations

import ast
import random
import re
import shutil
from pathlib import Path

import pytest

from hsl_demo.data import phrasing as P
from hsl_demo.data import phrasing_heldout as H
from hsl_demo.data.attributes import CATEGORIES, COLORS, PATTERNS, Attributes, plural
from hsl_demo.fileio import load_jsonl

DEMO = Path(__file__).resolve().parent.parent / "assets" / "demo"
RED_STRIPED_DRESS = Attributes("dress", "red", "striped")
# Substrings only held-out shapes produce (each is checked to occur in held-out output too).
HELDOUT_MARKERS = ("do you have any", "same thing but", "could it be", "is there", " that is ", " that are ",
                   "of any kind", ": ", "the one,", ", not ")
_ADJECTIVES = "|".join(re.escape(w) for words in P.PATTERN_ADJECTIVES.values() for w in words)
# "a striped dress in red": a pattern adjective before the noun and the colour after it
HELDOUT_REGEX_MARKERS = (r"\bone, an? ", rf"^(i am looking for )?an? ({_ADJECTIVES}) [a-z' -]+ in [a-z -]+$")


def _random_attrs(rng: random.Random) -> Attributes:
    return Attributes(rng.choice(CATEGORIES).name, rng.choice(COLORS).name, rng.choice(PATTERNS).name)


def _has(text: str, phrases: tuple[str, ...] | list[str]) -> bool:
    return any(re.search(rf"(?<![\w-]){re.escape(p)}(?![\w-])", text.lower()) for p in phrases)


def _cat_words(category: str) -> list[str]:
    return [w for word in P.CATEGORY_WORDS[category] for w in (word, plural(word))]


def _training_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = _random_attrs(rng), _random_attrs(rng)
        mention = P.MENTIONS[i % 4]
        out.append(P.describe_query(a, rng, mention, plural_form=i % 3 == 0, typo_rate=0))
        out.append(P.region_phrase(a, rng, mention, plural_form=i % 5 == 0, typo_rate=0))
        out.append(P.modification_text(b, a, P.MODIFY_KINDS[i % 6], rng, typo_rate=0))
    return out


def _heldout_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = _random_attrs(rng), _random_attrs(rng)
        out.append(H.heldout_describe_query(a, rng, P.MENTIONS[i % 4], plural_form=i % 3 == 0))
        out.append(H.heldout_region_phrase(a, rng, P.MENTIONS[i % 4]))
        out.append(H.heldout_modification_text(b, a, P.MODIFY_KINDS[i % 6], rng))
    return out


def test_grammar_is_varied():
    rng = random.Random(0)
    texts = {P.describe_query(RED_STRIPED_DRESS, rng, typo_rate=0) for _ in range(200)}
    assert len(texts) >= 30
    for kind, names in P.TRAIN_FAMILIES.items():
        assert len(names) >= 5, kind
    # every training family can actually be sampled on its own
    for name in P.TRAIN_FAMILIES["describe"]:
        assert P.describe_query(RED_STRIPED_DRESS, rng, families=[name], typo_rate=0)
    assert len({P.region_phrase(RED_STRIPED_DRESS, rng, typo_rate=0) for _ in range(200)}) >= 20
    for kind in P.MODIFY_KINDS:
        texts = {P.modification_text(Attributes("boot", "blue", "dotted"), RED_STRIPED_DRESS, kind, rng, typo_rate=0)
                 for _ in range(200)}
        assert len(texts) >= 8, kind


def test_vocabulary_has_the_synonyms_people_use():
    assert {"crimson", "scarlet", "navy", "cobalt", "gray", "silver", "violet", "lilac", "rose", "tan",
            "chocolate", "mustard", "emerald", "ivory", "cream", "jet"} <= P.vocabulary()
    assert {"stripy", "pinstripe", "polka", "spotted", "checkered", "plaid", "gingham", "tartan", "solid",
            "pattern", "looking", "please", "show", "shirt"} <= P.vocabulary()
    assert "t shirt" in P.CATEGORY_WORDS["t-shirt"] and "tee" in P.CATEGORY_WORDS["t-shirt"]
    for c in CATEGORIES:  # the original synonyms are all kept
        assert set(c.words) <= set(P.CATEGORY_WORDS[c.name])


@pytest.mark.parametrize("plural_form", [False, True])
def test_mentions_are_exact(plural_form):
    rng = random.Random(1)
    all_colors = [w for c in COLORS for w in P.COLOR_WORDS[c.name]]
    all_patterns = [w for p in PATTERNS for w in P.PATTERN_WORDS[p.name]]
    for i in range(1200):
        a = _random_attrs(rng)
        mention = P.MENTIONS[i % 4]
        fn = (P.describe_query, P.region_phrase, H.heldout_describe_query, H.heldout_region_phrase)[i // 4 % 4]
        kwargs = {"typo_rate": 0} if fn in (P.describe_query, P.region_phrase) else {}
        text = fn(a, rng, mention, plural_form, **kwargs)
        assert _has(text, _cat_words(a.category)), text
        others_c = [w for w in all_colors if w not in P.COLOR_WORDS[a.color]]
        others_p = [w for w in all_patterns if w not in P.PATTERN_WORDS[a.pattern]]
        assert _has(text, P.COLOR_WORDS[a.color]) == mention[0], (text, mention)
        assert _has(text, P.PATTERN_WORDS[a.pattern]) == mention[1], (text, mention)
        assert not _has(text, others_c) and not _has(text, others_p), text


@pytest.mark.parametrize("heldout", [False, True])
def test_modification_texts_name_what_changes(heldout):
    fn = H.heldout_modification_text if heldout else P.modification_text
    rng = random.Random(2)
    for i in range(600):
        ref, kind = _random_attrs(rng), P.MODIFY_KINDS[i % 6]
        target = Attributes(rng.choice(CATEGORIES).name if kind in ("category", "redescribe") else ref.category,
                            rng.choice(COLORS).name if kind in ("color", "color+pattern", "redescribe") else ref.color,
                            rng.choice(PATTERNS).name if kind in ("pattern", "color+pattern") else ref.pattern)
        text = fn(ref, target, kind, rng, typo_rate=0)
        if kind in ("category", "redescribe"):
            assert _has(text, _cat_words(target.category)), (kind, text)
        if kind in ("color", "color+pattern", "redescribe"):
            assert _has(text, P.COLOR_WORDS[target.color]), (kind, text)
        if kind in ("pattern", "color+pattern", "redescribe"):
            assert _has(text, P.PATTERN_WORDS[target.pattern]), (kind, text)
        if kind == "this-one":
            assert {"this", "same"} & set(P.tokens(text)), text  # points at the reference
            assert not _has(text, _cat_words(target.category) + list(P.COLOR_WORDS[target.color])), text
    with pytest.raises(ValueError):
        fn(ref, ref, "bogus", rng)


def test_misspelling_rate_and_determinism():
    vocab = P.vocabulary()

    def rate(typo_rate: float | None, n: int) -> float:
        rng = random.Random(3)
        kwargs = {} if typo_rate is None else {"typo_rate": typo_rate}
        texts = [P.describe_query(_random_attrs(rng), rng, P.MENTIONS[i % 4], **kwargs) for i in range(n)]
        return sum(bool(set(P.tokens(t)) - vocab) for t in texts) / n

    assert rate(0.0, 2000) == 0.0
    assert 0.015 <= rate(None, 4000) <= 0.05  # default TYPO_RATE = 0.03
    assert 0.16 <= rate(0.2, 3000) <= 0.24
    a = [P.describe_query(RED_STRIPED_DRESS, random.Random(7), typo_rate=0.5) for _ in range(3)]
    assert len(set(a)) == 1
    # a typo touches one content word (category, colour or pattern), never a filler
    rng = random.Random(4)
    for _ in range(300):
        text = P.describe_query(RED_STRIPED_DRESS, rng, typo_rate=1.0)
        bad = set(P.tokens(text)) - vocab
        assert len(bad) <= 1, text


def test_heldout_families_are_disjoint_and_unreachable_from_training():
    for kind in ("describe", "modify", "region"):
        assert not set(P.TRAIN_FAMILIES[kind]) & set(H.HELD_OUT_FAMILIES[kind])
        assert H.HELD_OUT_FAMILIES[kind]
    with pytest.raises(ValueError):
        P.describe_query(RED_STRIPED_DRESS, random.Random(0), families=["do_you_have_any"])
    with pytest.raises(ValueError):
        P.region_phrase(RED_STRIPED_DRESS, random.Random(0), families=["region_the_color_one"])
    with pytest.raises(ValueError):
        P.modification_text(RED_STRIPED_DRESS, RED_STRIPED_DRESS, "color", random.Random(0), families=["could_it_be"])
    with pytest.raises(ValueError):
        H.heldout_describe_query(RED_STRIPED_DRESS, random.Random(0), families=["adjectives_first"])
    tree = ast.parse(Path(P.__file__).read_text())
    imported = [getattr(n, "module", None) or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if "heldout" in m]


def test_heldout_texts_use_training_vocabulary_only():
    vocab = P.vocabulary()
    unknown = {t for text in _heldout_texts(1500) for t in P.tokens(text)} - vocab
    assert not unknown


def test_heldout_shapes_never_come_out_of_training():
    training = _training_texts(3000)
    heldout = _heldout_texts(600)
    for marker in HELDOUT_MARKERS:
        assert any(marker in t for t in heldout), marker
        assert not [t for t in training if marker in t][:3], marker
    for pattern in HELDOUT_REGEX_MARKERS:
        assert any(re.search(pattern, t) for t in heldout), pattern
        assert not [t for t in training if re.search(pattern, t)][:3], pattern


def test_heldout_query_files_match_their_originals(tmp_path):
    pairs = list(H.HELDOUT_FILES.values())
    for src, dst in pairs:
        original, heldout = load_jsonl(DEMO / src), load_jsonl(DEMO / dst)
        assert len(original) == len(heldout) > 0, dst
        for o, h in zip(original, heldout):
            assert h["phrasing"] == "held-out"
            assert {k: v for k, v in h.items() if k not in ("text", "regions", "phrasing")} == \
                   {k: v for k, v in o.items() if k not in ("text", "regions")}
            if "regions" in o:
                assert len(h["regions"]) == len(o["regions"])
        assert sum(o.get("text") != h.get("text") or o.get("regions") != h.get("regions")
                   for o, h in zip(original, heldout)) > 0.9 * len(original)
    # the committed files are what the generator writes for seed 0
    for name in ("products/metadata.jsonl", "looks/metadata.jsonl", *(src for src, _ in pairs)):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(DEMO / name, tmp_path / name)
    written = H.heldout_query_files(tmp_path, seed=0)
    assert sorted(written) == ["composed", "multi", "text"]
    for _, dst in pairs:
        assert (tmp_path / dst).read_text() == (DEMO / dst).read_text(), dst
