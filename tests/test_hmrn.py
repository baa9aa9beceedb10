"""HMRN drill-down: the model's levels, the search session, evaluation per round, training."""

import json
import warnings

import pytest
import torch
import torch.nn.functional as F

from hsl_demo.errors import HslDemoError
from hsl_demo.models import load_head, save_head
from hsl_demo.models.hmrn import HMRNHead
from hsl_demo.models.similarity import GraphReasoning, cross_attend


def _unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


# ---- primitives ------------------------------------------------------------------------------
def test_cross_attention_finds_the_matching_region_and_skips_masked_ones():
    regions = _unit(1, 4, 16, seed=1)
    queries = regions[:, [2]]  # the query is region 2
    mask = torch.ones(1, 4, dtype=torch.bool)
    context = cross_attend(queries, regions, mask, temperature=50.0)
    assert F.cosine_similarity(context[0, 0], regions[0, 2], dim=0) > 0.99
    mask[0, 2] = False  # hide it: the context must come from the other regions
    hidden = cross_attend(queries, regions, mask, temperature=50.0)
    assert F.cosine_similarity(hidden[0, 0], regions[0, 2], dim=0) < 0.9


def test_graph_reasoning_ignores_masked_nodes():
    torch.manual_seed(0)
    step = GraphReasoning(8)
    nodes = torch.randn(2, 5, 8)
    mask = torch.tensor([[True, True, True, False, False]] * 2)
    changed = nodes.clone()
    changed[:, 3:] = 100.0  # padding must not leak into the valid nodes
    assert torch.allclose(step(nodes, mask)[:, :3], step(changed, mask)[:, :3], atol=1e-6)


# ---- the model -------------------------------------------------------------------------------
@pytest.fixture
def head():
    torch.manual_seed(0)
    return HMRNHead(embed_dim=32, dim=16, sim_dim=8).eval()


def _inputs(q=3, t=4, n=5, r=3, seed=0):
    return (_unit(q, t, 32, seed=seed), torch.ones(q, t, dtype=torch.bool), _unit(n, 32, seed=seed + 1),
            _unit(n, r, 32, seed=seed + 2), torch.ones(n, r, dtype=torch.bool))


def _scores(head, queries, qmask, embeds, regions, rmask):
    return head.scores(queries, qmask, head.encode_images(embeds, regions, rmask))


def test_scores_have_one_value_per_query_set_and_image(head):
    queries, qmask, embeds, regions, rmask = _inputs()
    s = _scores(head, queries, qmask, embeds, regions, rmask)
    for term in (s.local, s.global_, s.reasoning):
        assert term.shape == (3, 5) and torch.isfinite(term).all()
    assert s.per_query.shape == (3, 5, 4)
    assert ((s.reasoning > 0) & (s.reasoning < 1)).all()
    assert torch.allclose(s.local, s.per_query.mean(-1), atol=1e-6)  # local = mean over the queries


def test_padded_rounds_do_not_change_the_scores(head):
    queries, qmask, embeds, regions, rmask = _inputs(t=4)
    qmask[:, 2:] = False  # two rounds so far
    padded = _scores(head, queries, qmask, embeds, regions, rmask)
    short = _scores(head, queries[:, :2], qmask[:, :2], embeds, regions, rmask)
    for a, b in ((padded.local, short.local), (padded.global_, short.global_), (padded.reasoning, short.reasoning)):
        assert torch.allclose(a, b, atol=1e-5)
    rmask[:, 2] = False  # a missing region is not attended to either
    regions2 = regions.clone()
    regions2[:, 2] = _unit(5, 32, seed=9)
    assert torch.allclose(_scores(head, queries, qmask, embeds, regions, rmask).local,
                          _scores(head, queries, qmask, embeds, regions2, rmask).local, atol=1e-5)


def test_final_weights_follow_the_config_and_reasoning_grows_with_the_round(head):
    assert head.round_factor(10) == 1.0 and head.round_factor(1) == pytest.approx(1 / 55)
    assert head.round_factor(3) == pytest.approx(6 / 55) and head.round_factor(12) == 1.0
    assert head.variant_weights(3, "full") == pytest.approx((0.6, 0.1, 0.3 * 6 / 55))
    assert head.variant_weights(3, "local+global") == (0.6, 0.1, 0.0)
    assert head.variant_weights(3, "local") == (0.6, 0.0, 0.0)
    with pytest.raises(ValueError, match="unknown HMRN variant"):
        head.variant_weights(1, "reasoning")
    s = _scores(head, *_inputs())
    assert torch.allclose(head.combine(s, 2), 0.6 * s.local + 0.1 * s.global_ + 0.3 * 3 / 55 * s.reasoning)
    custom = HMRNHead(embed_dim=32, dim=16, local_weight=1.0, global_weight=0.0, reasoning_weight=0.5, max_rounds=4)
    assert custom.variant_weights(4) == (1.0, 0.0, 0.5)


def test_hmrn_head_saves_and_loads_the_hub_way(head, tmp_path):
    with torch.no_grad():
        head.reasoning_out.weight.normal_()
    save_head(head, tmp_path / "hmrn")
    loaded = load_head(HMRNHead, tmp_path / "hmrn")
    assert json.loads((tmp_path / "hmrn/config.json").read_text())["sim_dim"] == 8
    a, b = _scores(head, *_inputs()), _scores(loaded, *_inputs())
    assert torch.allclose(a.reasoning, b.reasoning, atol=1e-3) and torch.allclose(a.local, b.local, atol=1e-3)


# ---- the drill-down session ------------------------------------------------------------------
@pytest.fixture(scope="module")
def looks(demo_backbone):
    from hsl_demo.catalog import Catalog
    from hsl_demo.search import Retriever, load_heads

    return Retriever(demo_backbone, Catalog.open("looks"), hmrn=load_heads(demo_backbone).get("hmrn"))


def test_each_round_reranks_and_remembers_earlier_ranks(looks):
    session = looks.session(k=8)
    first = session.add("a red handbag").round
    assert first.round == 1 and first.queries == ["a red handbag"]
    assert [r.rank for r in first.results] == list(range(1, 9))
    assert all(r.breakdown.to_dict()["earlier_ranks"] == [] for r in first.results)
    scores = [r.score for r in first.results]
    assert scores == sorted(scores, reverse=True)
    second = session.add("white sneakers").round
    assert second.round == 2 and second.queries == ["a red handbag", "white sneakers"]
    first_ranks = {r.id: r.rank for r in first.results}  # the top 8 of round 1, as shown then
    moved = [r for r in second.results if r.id in first_ranks]
    assert moved, "some look of round 1's top 8 should still be in round 2's"
    for r in moved:
        assert r.breakdown.to_dict()["earlier_ranks"] == [first_ranks[r.id]]
    for r in second.results:
        lv = r.breakdown.to_dict()
        assert len(lv["earlier_ranks"]) == 1 and (lv["earlier_ranks"][0] is None or lv["earlier_ranks"][0] >= 1)
        assert len(lv["per_query"]) == 2
        w = {t: lv[t]["weight"] for t in ("local", "global", "reasoning")}
        assert lv["final"] == pytest.approx(sum(lv[t]["similarity"] * w[t] for t in w), abs=1e-5)
        assert r.score == pytest.approx(lv["final"], abs=1e-5)


def test_undo_reset_and_bad_input_keep_the_state_intact(looks):
    session = looks.session(k=5)
    step = session.undo()
    assert step.round is None and step.notices == ["no round to undo"]
    step = session.add("   ")
    assert step.round is None and step.notices[0].startswith("empty region query: ignored")
    assert session.rounds == []
    one = session.add("a red handbag").round
    step = session.add("A red  handbag")
    assert step.round is one and step.notices == ["'A red handbag' was already asked in round 1: ignored"]
    two = session.add("white sneakers").round
    assert len(session.rounds) == 2
    back = session.undo()
    assert back.round is one and back.notices == [] and session.queries == ["a red handbag"]
    again = session.add("white sneakers")
    assert [r.id for r in again.results] == [r.id for r in two.results]  # the same round comes back
    session.reset()
    assert session.rounds == [] and session.queries == [] and session.current is None


def test_more_rounds_than_the_maximum_is_a_clear_error(looks):
    session = looks.session(k=3)
    for i in range(session.max_rounds):
        session.add(f"item number {i}")
    before = [r.id for r in session.current.results]
    with pytest.raises(HslDemoError, match="at most 10 rounds"):
        session.add("one more")
    assert len(session.rounds) == 10 and [r.id for r in session.current.results] == before
    with pytest.raises(HslDemoError, match="unknown variant"):
        looks.session(variant="reasoning")


def test_showcase_drill_down_brings_looks_with_both_products_to_the_top(looks):
    """The issue's walkthrough: "a red handbag", then "white sneakers"."""
    rounds = looks.search_multi(["a red handbag", "white sneakers"], k=5)
    both = {"l0400", "l0401", "l0402"}  # the looks with a red handbag and white sneakers
    first = [r.id for r in rounds[0].results]
    top = [r.id for r in rounds[1].results]
    assert top[0] in both and len(both & set(top[:3])) == 3, [r.title for r in rounds[1].results]
    # measured: l0402 rank 2 -> 1, l0401 rank 7 -> 3 (l0400's handbag crop is not recognised)
    for r in rounds[1].results:
        if r.id in both:
            assert r.breakdown.earlier_ranks[0] is not None and r.breakdown.earlier_ranks[0] >= r.rank
    # round 1 is about handbags: every look in its top 5 holds a red handbag or a red bag-like product
    assert all("red" in looks.catalog.items[looks.catalog.row(i)]["title"] for i in first)


# ---- evaluation per round --------------------------------------------------------------------
def test_recall_per_round_carries_short_queries_forward():
    from hsl_demo.evaluate import recall_per_round

    queries = [{"targets": ["a"]}, {"targets": ["b"]}]
    rankings = [[["x", "a"], ["a", "x"], ["a"]], [["b"]]]  # query 2 has one round only
    out = recall_per_round(rankings, queries, ks=(1, 2))
    assert out == [{"round": 1, "R@1": 0.5, "R@2": 1.0}, {"round": 2, "R@1": 1.0, "R@2": 1.0},
                   {"round": 3, "R@1": 1.0, "R@2": 1.0}]


def test_multi_query_files_are_validated(tmp_path):
    from hsl_demo.evaluate import load_queries

    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"mode": "multi", "regions": [], "targets": ["l0000"]}) + "\n")
    with pytest.raises(HslDemoError, match="regions"):
        load_queries(path)
    path.write_text(json.dumps({"mode": "multi", "regions": ["a red cap"], "targets": ["l0000"]}) + "\n")
    assert load_queries(path)[0]["regions"] == ["a red cap"]


@pytest.mark.slow
def test_shipped_hmrn_rises_round_over_round_and_beats_local_only(looks):
    from hsl_demo.defaults import DEMO_DATA_DIR
    from hsl_demo.evaluate import evaluate, load_queries

    queries = load_queries(DEMO_DATA_DIR / "looks" / "queries.multi.test.jsonl")
    assert len(queries) == 80
    full = evaluate(looks, queries)["rounds"]
    local = evaluate(looks, queries, variant="local")["rounds"]
    r1 = [r["R@1"] for r in full]
    assert all(b >= a for a, b in zip(r1, r1[1:])) and r1[-1] > r1[0] + 0.2
    assert full[-1]["R@1"] > local[-1]["R@1"]


# ---- training ----------------------------------------------------------------------------------
def test_a_few_hmrn_training_steps_lower_the_loss_and_save_a_loadable_head(tmp_path):
    from hsl_demo.training import HMRNTrainConfig, train_hmrn

    cfg = HMRNTrainConfig(steps=30, batch_size=16, looks=48, warmup=2, dim=32, sim_dim=8, lr=3e-3)
    info = train_hmrn(tmp_path, None, cfg, log=lambda m: None)
    assert sum(info["losses"][-2:]) / 2 < info["losses"][0]  # logged at steps 1, 10, 20, 30
    head = load_head(HMRNHead, tmp_path / "hmrn")
    assert head.dim == 32 and head.term_weights == (0.6, 0.1, 0.3)
    assert json.loads((tmp_path / "hmrn/training.json").read_text())["config"]["steps"] == 30


# ---- the command line ----------------------------------------------------------------------------
def test_cli_drill_down_prints_every_round(tmp_path):
    from conftest import assert_clean_error, run_cli

    proc = run_cli("search", "--catalog", "looks", "--region", "a red handbag", "--region", "white sneakers",
                   "-k", "4", "--json")
    assert proc.returncode == 0, proc.stderr
    rounds = json.loads(proc.stdout)
    assert [r["round"] for r in rounds] == [1, 2] and rounds[1]["queries"] == ["a red handbag", "white sneakers"]
    lv = rounds[1]["results"][0]["levels"]
    assert set(lv) >= {"local", "global", "reasoning", "final", "earlier_ranks", "per_query"}
    table = run_cli("search", "--catalog", "looks", "--region", "a red handbag", "--region", "", "-k", "3")
    assert table.returncode == 0 and "round 1:" in table.stdout and "round 2" not in table.stdout
    assert "empty region query" in table.stderr
    assert_clean_error(run_cli("search", "--catalog", "looks", "--region", " "), "every --region is empty")
    assert_clean_error(run_cli("search", "--region", "a cap", "--text", "a cap"), "--region")


def test_no_warning_leaks_from_a_normal_session(looks):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning raised in the session fails it here
        rounds = looks.search_multi(["a blue cap"], k=3)
    assert len(rounds) == 1 and len(rounds[0].results) == 3


def test_region_index_candidates_match_scoring_the_whole_catalog(looks, monkeypatch):
    """Stage 1 (the region index) loses nothing at the top against re-ranking every look, and
    large catalogs (global-index candidates, image side per round) still rank sensibly."""
    import hsl_demo.search as search

    queries = ["a red handbag", "white sneakers"]
    indexed = [r.id for r in looks.search_multi(queries, k=10)[-1].results]
    monkeypatch.setattr(looks, "candidates", len(looks.catalog))  # every look is a candidate
    assert [r.id for r in looks.search_multi(queries, k=10)[-1].results] == indexed
    large = search.Retriever(looks.backbone, looks.catalog, heads={n: looks.heads[n] for n in looks.trained},
                             cache_items=0)  # the large-catalog path
    big = large.search_multi(queries, k=10)[-1].results
    assert len(big) == 10 and big[0].id in {"l0400", "l0401", "l0402"}


def test_a_head_for_another_backbone_and_too_long_query_files_are_clear_errors(looks, demo_backbone, tmp_path):
    from hsl_demo.catalog import Catalog
    from hsl_demo.evaluate import evaluate
    from hsl_demo.search import Retriever

    with pytest.raises(HslDemoError, match="hmrn head \\(drill-down\\) expects 64-d features"):
        Retriever(demo_backbone, Catalog.open("looks"), hmrn=HMRNHead(embed_dim=64))
    too_long = [{"mode": "multi", "regions": [f"item {i}" for i in range(11)], "targets": ["l0000"]}]
    with pytest.raises(HslDemoError, match="at most 10 rounds"):
        evaluate(looks, too_long)
