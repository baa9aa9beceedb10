"""The HSL head: untrained = backbone, training, saving, two-stage search and its breakdown."""

import json

import numpy as np
import pytest
import torch

from hsl_demo.catalog import Catalog
from hsl_demo.errors import HslDemoError
from hsl_demo.indexing import build_catalog
from hsl_demo.models import head_fingerprint, load_head, save_head
from hsl_demo.models.hsl import HSLHead
from hsl_demo.models.similarity import aggregate, non_negative
from hsl_demo.modes.describe import pipeline as describe
from hsl_demo.search import Retriever
from hsl_demo.training import HSLTrainConfig, train_hsl


def _terms(head: HSLHead, n_text: int = 3, n_items: int = 5, regions: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    d = head.embed_dim
    image = head.encode_image_side(torch.randn(n_items, d, generator=g), torch.randn(n_items, regions, d, generator=g),
                                   torch.ones(n_items, regions, dtype=torch.bool))
    text = head.encode_text_side(torch.randn(n_text, 7, d, generator=g), torch.ones(n_text, 7, dtype=torch.bool))
    global_cos = torch.rand(n_text, n_items, generator=g)
    return head.similarities(text, image, global_cos), global_cos


def test_an_untrained_head_scores_exactly_the_global_cosine():
    head = HSLHead(embed_dim=64, dim=32, levels=3)
    terms, global_cos = _terms(head)
    assert terms.shape == (3, 5, 1 + 2 * 3)
    assert head.term_names() == ["global", "level1/object", "level1/image", "level2/object", "level2/image",
                                 "level3/object", "level3/image"]
    assert (terms[..., 1:].abs() > 0).any()  # the levels do compute something ...
    assert torch.equal(head.combine(terms), global_cos)  # ... but weigh nothing yet


def test_combination_weights_never_go_negative_but_keep_their_gradient():
    raw = torch.tensor([-0.5, 0.0, 2.0], requires_grad=True)
    w = non_negative(raw)
    assert w.tolist() == [0.0, 0.0, 2.0]
    w.sum().backward()
    assert raw.grad.tolist() == [1.0, 1.0, 1.0]  # a weight pushed below zero can come back


def test_region_aggregations_skip_missing_regions():
    scores = torch.tensor([[0.2, 0.9, 0.5, 5.0]])
    mask = torch.tensor([[True, True, True, False]])
    assert aggregate(scores, mask, "max").item() == pytest.approx(0.9)
    assert aggregate(scores, mask, "mean").item() == pytest.approx(1.6 / 3)
    assert aggregate(scores, mask, "topk", k=2).item() == pytest.approx(0.7)
    assert aggregate(scores, mask, "topk", k=9).item() == pytest.approx(1.6 / 3)
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate(scores, mask, "median")


def test_ablation_variants_pick_the_right_terms():
    head = HSLHead(embed_dim=16, dim=16, levels=2)
    with torch.no_grad():
        head.raw_weights.copy_(torch.tensor([0.5, 0.0, 0.2, 0.0, 0.7]))
    assert head.variant_weights("full").tolist() == pytest.approx([0.5, 0.0, 0.2, 0.0, 0.7])
    assert head.variant_weights("object").tolist() == [0.0, 1.0, 0.0, 1.0, 0.0]  # even with zero learned weight
    assert head.variant_weights("image").tolist() == [0.0, 0.0, 1.0, 0.0, 1.0]
    assert head.variant_weights("global").tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]
    terms = torch.tensor([[0.9, 0.1, 0.2, 0.3, 0.4]])
    assert head.combine(terms, "object").item() == pytest.approx(0.4)
    assert head.combine(terms).item() == pytest.approx(0.45 + 0.04 + 0.28)
    with pytest.raises(ValueError, match="unknown HSL variant"):
        head.variant_weights("words")


@pytest.fixture(scope="module")
def vit_b32_catalog(small_images, tmp_path_factory, vit_b32_random):
    """A randomly initialised ViT-B-32 (pretrained=None) and the small catalog indexed with it
    plus an untrained head (so the catalog carries precomputed HSL features)."""
    backbone = vit_b32_random
    head = HSLHead(embed_dim=backbone.embed_dim)
    out = tmp_path_factory.mktemp("vitb32") / "catalog"
    build_catalog(small_images / "images", out, backbone, metadata=small_images / "metadata.jsonl",
                  progress=False, heads={"hsl": head})
    return backbone, head, Catalog.open(out)


def test_untrained_head_on_vit_b32_ranks_exactly_as_the_backbone(vit_b32_catalog):
    backbone, head, catalog = vit_b32_catalog
    plain = Retriever(backbone, catalog)  # no head: FAISS global cosine only
    hsl = Retriever(backbone, catalog, hsl=head)
    assert catalog.manifest["heads"]["hsl"]["fingerprint"] == head_fingerprint(head)
    for text in ["green dotted scarf", "a white sneaker", "black checked handbag"]:
        a, b = plain.search_text(text, k=12), hsl.search_text(text, k=12)
        assert [r.id for r in a] == [r.id for r in b]
        assert set(a[0].breakdown.to_dict()) == {"global", "final"}  # the JSON keys of a global-only ranking
        assert a[0].breakdown.final == pytest.approx(a[0].score, abs=1e-6)
        assert [r.score for r in b] == pytest.approx([r.score for r in a], abs=1e-6)
        for r in b:  # the breakdown is there, with zero weight on every level
            assert r.breakdown.to_dict()["level1"]["object"]["weight"] == 0.0
            assert r.breakdown.to_dict()["level2"]["image"]["weight"] == 0.0
            assert r.breakdown.to_dict()["final"] == pytest.approx(r.score, abs=1e-5)


def test_precomputed_hsl_features_match_computing_them_at_load(vit_b32_catalog, tmp_path, caplog):
    backbone, head, catalog = vit_b32_catalog
    stored = describe.image_side(catalog, head)
    assert "no HSL features precomputed" not in caplog.text
    fresh = HSLHead(embed_dim=backbone.embed_dim)  # different random blocks: not the stored features
    with torch.no_grad():
        for p in fresh.parameters():
            p.add_(0.01 * torch.randn_like(p))
    computed = describe.image_side(catalog, fresh)
    assert "no HSL features precomputed for this head" in caplog.text
    assert computed.objects.shape == stored.objects.shape
    assert not np.array_equal(computed.objects, stored.objects)
    catalog_hsl = catalog.stores.pop("hsl")  # as if the catalog had been indexed without a head
    try:
        caplog.clear()
        again = describe.image_side(catalog, head)
        assert "no HSL features precomputed for this head" in caplog.text
    finally:
        catalog.stores["hsl"] = catalog_hsl
    # computed now = written at index time (up to one int8 step)
    assert np.abs(again.objects.astype(int) - stored.objects.astype(int)).max() <= 1


def test_heads_save_and_load_the_hub_way(tmp_path):
    head = HSLHead(embed_dim=32, dim=16, levels=2, object_aggregation="topk", topk=2)
    with torch.no_grad():
        head.raw_weights.copy_(torch.tensor([0.7, 0.1, 0.2, 0.3, 0.4]))
    save_head(head, tmp_path / "hsl", {"note": "test"})
    assert sorted(p.name for p in (tmp_path / "hsl").iterdir()) == [
        "README.md", "config.json", "model.safetensors", "training.json"]
    assert json.loads((tmp_path / "hsl/config.json").read_text())["object_aggregation"] == "topk"
    loaded = load_head(HSLHead, tmp_path / "hsl")
    assert head_fingerprint(loaded) == head_fingerprint(head)
    assert torch.allclose(_terms(loaded)[0], _terms(head)[0])
    (tmp_path / "hsl/model.safetensors").rename(tmp_path / "hsl/pytorch_model.bin")
    with pytest.raises(HslDemoError, match="no model.safetensors"):  # pickles are never loaded
        load_head(HSLHead, tmp_path / "hsl")


def test_a_few_hsl_training_steps_learn_and_save_a_loadable_head(tmp_path):
    cfg = HSLTrainConfig(steps=25, batch_size=48, variants=2, limit_combos=60, warmup=5, levels=2)
    info = train_hsl(tmp_path / "model", "hsl-demo-tiny", cfg, log=lambda m: None)
    head = load_head(HSLHead, tmp_path / "model/hsl")
    assert head.levels == 2 and head.embed_dim == 128
    assert (head.weights >= 0).all()
    assert head.weights[1:].sum() > 0  # the levels gained weight
    assert info["config"]["steps"] == 25 and np.isfinite(info["losses"]).all()
    assert json.loads((tmp_path / "model/hsl/training.json").read_text())["trained_by"] == "hsl-demo train hsl"


# ---- the shipped head ------------------------------------------------------------------------
def test_the_shipped_model_has_a_trained_head_with_precomputed_features(products_all_heads):
    r = products_all_heads
    assert r.hsl is not None and r.hsl.levels >= 2
    assert (r.hsl.weights[1:] > 0).sum() >= 1  # a trained level counts (level 1 image: docs/modes/describe.md)
    assert r.catalog.manifest["heads"]["hsl"]["fingerprint"] == head_fingerprint(r.hsl)
    assert r.prepared("describe").bytes_per_item() <= 8192


def test_green_dotted_scarves_come_first_with_per_level_scores(products_all_heads):
    results = products_all_heads.search_text("green dotted scarf", k=10)
    # the two green dotted scarves: first and third (a green dotted bikini is second)
    assert results[0].title == "Green dotted scarf"
    assert [r.title for r in results[:3]].count("Green dotted scarf") == 2
    for r in results:
        lv = r.breakdown.to_dict()
        assert set(lv) == {"global", "level1", "level2", "final"}
        assert set(lv["level1"]) == {"object", "image"}
        parts = [lv["global"]] + [lv[f"level{i}"][g] for i in (1, 2) for g in ("object", "image")]
        total = sum(p["similarity"] * p["weight"] for p in parts)
        assert total == pytest.approx(r.score, abs=1e-4) and lv["final"] == pytest.approx(r.score, abs=1e-5)
    assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)


def test_rerank_handles_boxes_small_catalogs_and_large_k(products_all_heads, demo_backbone, tmp_path):
    looks = Retriever(products_all_heads.backbone, Catalog.open("looks"), hsl=products_all_heads.hsl)
    assert looks.catalog.manifest["regions"]["source"] == "box-crops"
    hits = looks.search_text("a red handbag", k=5)
    assert len(hits) == 5 and all("level2" in h.breakdown.to_dict() for h in hits)
    small = Retriever(products_all_heads.backbone, Catalog.open("products"), candidates=3, hsl=products_all_heads.hsl)
    assert len(small.search_text("cap", k=7)) == 7  # k above the candidate count still gives k
    n = len(products_all_heads.catalog)
    everything = products_all_heads.search_text("cap", k=n + 5)
    assert len({r.id for r in everything}) == n


def test_shipped_head_beats_the_backbone_on_held_out_combinations(products_all_heads):
    from hsl_demo.defaults import DEMO_DATA_DIR
    from hsl_demo.evaluate import evaluate, load_queries

    queries = load_queries(DEMO_DATA_DIR / "products" / "queries.test.jsonl")
    full = evaluate(products_all_heads, queries, variant="full")
    base = evaluate(products_all_heads, queries, variant="global")
    # measured: full R@1 0.661, R@10 0.991; backbone R@1 0.616 (the target of +0.05 is missed
    # by half a point, see docs/modes/describe.md). Floors a little below what ships.
    assert full["R@10"] >= 0.95
    assert full["R@1"] >= base["R@1"] + 0.04
