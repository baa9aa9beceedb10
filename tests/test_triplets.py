"""Composed-query triplets for the demo catalog."""

import random

import pytest

from hsl_demo.data.attributes import Attributes
from hsl_demo.data.demo import held_out_combinations, plan_products
from hsl_demo.data.triplets import KINDS, modify, plan_triplets


@pytest.fixture(scope="module")
def records():
    return [p.record(f"images/{p.id}.jpg") for p in plan_products(0)]


def _attrs(record):
    return Attributes(record["category"], record["color"], record["pattern"])


def test_each_kind_changes_what_it_says():
    rng = random.Random(0)
    ref = Attributes("t-shirt", "red", "plain")
    for _ in range(20):
        t, text = modify(ref, "color", rng)
        assert (t.category, t.pattern) == ("t-shirt", "plain") and t.color != "red" and text
        t, _ = modify(ref, "pattern", rng)
        assert (t.category, t.color) == ("t-shirt", "red") and t.pattern != "plain"
        t, _ = modify(ref, "category", rng)
        assert (t.color, t.pattern) == ("red", "plain") and t.category != "t-shirt"
        t, _ = modify(ref, "color+pattern", rng)
        assert t.category == "t-shirt" and t.color != "red" and t.pattern != "plain"
        t, text = modify(ref, "redescribe", rng)
        assert t.category != "t-shirt" and t.color != "red"
        t, text = modify(ref, "this-one", rng)
        assert t == ref and text.startswith(("this one", "exactly this one"))
    with pytest.raises(ValueError, match="unknown triplet kind"):
        modify(ref, "swap", rng)


def test_test_triplets_target_only_held_out_combinations(records):
    held = held_out_combinations(0)
    by_id = {r["id"]: r for r in records}
    test = plan_triplets(records, held, seed=0, split="test", per_kind=15)
    train = plan_triplets(records, held, seed=0, split="train", per_kind=15)
    assert {q["kind"] for q in test} == set(KINDS) and len(test) == 15 * len(KINDS)
    for q in test:
        assert all(_attrs(by_id[t]) in held for t in q["targets"])
        assert q["reference"] not in q["targets"] and q["mode"] == "composed"
    for q in train:
        assert not any(_attrs(by_id[t]) in held for t in q["targets"])
    assert plan_triplets(records, held, seed=0, per_kind=15) == test  # deterministic
    assert plan_triplets(records, held, seed=1, per_kind=15) != test
