"""`train hsl|composed|hmrn --catalog DIR`: what each head learns from, held-out items, early
stopping, and what is refused. The three trainings end to end are tests/test_tutorial.py."""

from __future__ import annotations

import json
import random

import pytest
import torch
from conftest import assert_clean_error, run_cli

from hsl_demo.data.attributes import Attributes
from hsl_demo.data.demo import render_look, render_product
from hsl_demo.errors import HslDemoError

COMBOS = [Attributes(c, col, p) for c in ("scarf", "t-shirt", "sneaker") for col in ("red", "blue", "green")
          for p in ("plain", "striped")]


@pytest.fixture(scope="module")
def byo(tmp_path_factory, tiny_backbone):
    """A user's world: a model folder (the tiny architecture, random weights), a folder of product
    photos with a JSONL of captions, and one of flat-lays with captioned boxes, both indexed."""
    from hsl_demo.backbone import model_config, save_backbone
    from hsl_demo.hub import load_backbone
    from hsl_demo.indexing import build_catalog

    root = tmp_path_factory.mktemp("byo")

    save_backbone(tiny_backbone.model, model_config("hsl-demo-tiny"), root / "model")
    backbone = load_backbone(str(root / "model"), device="cpu")
    rng = random.Random(5)
    (root / "photos").mkdir()
    records = []
    for i, a in enumerate(COMBOS * 2):
        render_product(a, rng).save(root / "photos" / f"{i:03d}.jpg")
        records.append({"image": f"{i:03d}.jpg", "id": f"sku{i:03d}",
                        "captions": [f"a {a.color} {a.pattern} {a.category}"],
                        "category": a.category, "color": a.color, "pattern": a.pattern,
                        "split": "test" if i % 6 == 0 else "train"})
    (root / "photos.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (root / "scenes").mkdir()
    scenes = []
    for i in range(24):
        items = rng.sample(COMBOS, 3)
        items = [a for k, a in enumerate(items) if a.category not in {b.category for b in items[:k]}]
        image, boxes = render_look(items, rng)
        image.save(root / "scenes" / f"{i:02d}.png")
        scenes.append({"image": f"{i:02d}.png", "split": "test" if i % 4 == 0 else "train",
                       "items": [{"box": list(b), "caption": f"a {a.color} {a.category}"}
                                 for a, b in zip(items, boxes)]})
    (root / "scenes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in scenes))
    build_catalog(root / "photos", root / "products", backbone, metadata=root / "photos.jsonl", progress=False)
    build_catalog(root / "scenes", root / "looks", backbone, metadata=root / "scenes.jsonl", progress=False)
    return root


def test_composed_queries_from_shared_attributes_differ_exactly_where_the_text_says(byo, tiny_backbone):
    from hsl_demo.training.catalog_data import attribute_triplets, open_training_catalog

    _, pool = open_training_catalog(byo / "products", str(byo / "model"), log=lambda m: None)
    found = attribute_triplets(pool)
    assert found.source == "attributes: category, color, pattern"
    fields = ("category", "color", "pattern")
    for t in found.train[:200] + found.heldout:
        ref = pool.items[t.reference]
        for target in t.targets:
            changed = [f for f in fields if pool.items[target][f] != ref[f]]
            assert 1 <= len(changed) <= 2
            assert t.text == "change " + " and ".join(f"the {f} to {pool.items[target][f]}" for f in changed)
    assert all(pool.heldout[t.reference] for t in found.heldout)
    assert not any(pool.heldout[t.reference] for t in found.train)


def test_a_triplet_file_names_items_of_the_catalog(byo, tmp_path):
    from hsl_demo.training.catalog_data import open_training_catalog, read_triplet_file

    _, pool = open_training_catalog(byo / "products", str(byo / "model"), log=lambda m: None)
    plain = tmp_path / "t.jsonl"  # no split field: held out with the reference item (sku000 is a test item)
    plain.write_text('{"reference": "sku001", "text": "in blue", "targets": ["sku003"]}\n'
                     '{"reference": "sku000", "text": "in green", "target": "sku004"}\n')
    found = read_triplet_file(plain, pool)
    assert [t.targets for t in found.train] == [[pool.catalog.row("sku003")]]
    assert found.heldout[0].text == "in green"
    split = tmp_path / "split.jsonl"  # a converted data set's: its val triplets are never read
    split.write_text("".join(json.dumps({"reference": f"sku{i:03d}", "text": "in red", "targets": ["sku005"],
                                         "split": "train"}) + "\n" for i in range(1, 5))
                     + json.dumps({"reference": "sku000", "text": "val query", "targets": ["sku002"],
                                   "split": "val"}) + "\n")
    found = read_triplet_file(split, pool)
    assert len(found.train) + len(found.heldout) == 4 and found.heldout
    assert all(t.text == "in red" for t in found.train + found.heldout)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"reference": "sku001", "text": "in blue", "targets": ["nope"]}\n')
    with pytest.raises(HslDemoError, match="record 1: no item 'nope'"):
        read_triplet_file(bad, pool)


def test_catalog_training_refuses_what_would_mix_or_overwrite(byo, tmp_path):
    catalog = str(byo / "products")
    assert_clean_error(run_cli("train", "hsl", "--catalog", catalog), "--catalog needs --out")
    assert_clean_error(run_cli("train", "hsl", "--catalog", catalog, "--out", str(tmp_path / "o")),
                       "catalog 'products' was indexed with it; give --model")
    assert_clean_error(run_cli("train", "hsl", "--catalog", catalog, "--out", str(tmp_path / "o"), "--texts",
                               "grammar"), "--texts")
    assert_clean_error(run_cli("train", "hsl", "--patience", "3", "--out", str(tmp_path / "o")),
                       "--eval-every, --patience and --triplets go with --catalog")
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine")
    model = ["--model", str(byo / "model")]
    assert_clean_error(run_cli("train", "hsl", "--catalog", catalog, *model, "--out", str(notes), "--steps", "1"),
                       "is not a model folder")
    assert (notes / "todo.txt").read_text() == "mine" and len(list(notes.iterdir())) == 1
    # a model folder of another backbone: its heads would not fit this catalog's features
    assert_clean_error(run_cli("train", "hsl", "--catalog", catalog, *model, "--out", "checkpoints/demo",
                               "--steps", "1"),
                       "holds another backbone")


def test_early_stopping_ends_with_the_best_evaluation_weights():
    from hsl_demo.training.loop import Step, TrainConfig, fit

    model = torch.nn.Linear(2, 1)
    scores = iter([0.2, 0.6, 0.5, 0.4, 0.3, 0.9])
    kept = {}

    def step(n: int) -> Step:
        return Step(model(torch.ones(1, 2)).sum() * 0 + model.weight.sum(), {"loss": 0.0})

    def evaluate() -> dict:
        kept[len(kept) + 1] = model.weight.detach().clone()
        return {"score": next(scores)}

    result = fit(model, step, TrainConfig(steps=12, warmup=1, lr=0.1), name="t", rng=random.Random(0),
                 log=lambda m: None, evaluate=evaluate, eval_every=2, keep_best="score", patience=3, progress=False)
    assert result.stopped_early and result.best["step"] == 4  # 0.6, then three worse: stop at step 10
    assert [h["step"] for h in result.history] == [2, 4, 6, 8, 10]
    assert torch.equal(model.weight, kept[2])


def test_held_out_items_follow_the_split_field_or_a_stable_hash():
    from hsl_demo.training.catalog_data import heldout_rows

    with_split = [{"id": "a", "split": "train"}, {"id": "b", "split": "val"}, {"id": "c"}]
    assert heldout_rows(with_split).tolist() == [False, True, False]
    items = [{"id": f"x{i}"} for i in range(2000)]
    held = heldout_rows(items)
    assert 150 < held.sum() < 250
    assert heldout_rows(list(reversed(items))).tolist() == list(reversed(held.tolist()))


def test_a_model_no_step_improves_ends_as_it_started():
    """The untrained model's figures are the evaluation to beat (`baseline`)."""
    from hsl_demo.training.loop import Step, TrainConfig, fit

    model = torch.nn.Linear(2, 1)
    start = model.weight.detach().clone()
    seen = []
    result = fit(model, lambda n: Step(model.weight.sum(), {"loss": 0.0}), TrainConfig(steps=6, warmup=1, lr=0.1),
                 name="t", rng=random.Random(0), log=seen.append, evaluate=lambda: {"score": 0.1}, eval_every=2,
                 keep_best="score", baseline={"score": 0.5}, progress=False)
    assert result.best == {"step": 0, "score": 0.5} and torch.equal(model.weight, start)
    assert any("no evaluation beat the untrained model" in m for m in seen)
