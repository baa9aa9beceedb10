"""Search with the shipped demo model and catalog."""

import pytest

from hsl_demo.errors import HslDemoError
from hsl_demo.search import Retriever


@pytest.fixture(scope="module")
def retriever(demo_backbone):
    from hsl_demo.catalog import Catalog
    from hsl_demo.search import load_heads

    return Retriever(demo_backbone, Catalog.open("products"), hsl=load_heads(demo_backbone)["hsl"])


def test_green_dotted_scarf_ranks_first_and_both_in_the_top_three(retriever):
    results = retriever.search_text("green dotted scarf", k=10)
    assert [r.rank for r in results] == list(range(1, 11))
    # there are exactly two green dotted scarves in the catalog: HSL puts one first and both in
    # the top 3 (the backbone alone put a green dotted bikini first), and the top 3 are all
    # green and dotted
    attrs = [(r.metadata["category"], r.metadata["color"], r.metadata["pattern"]) for r in results]
    assert attrs[0] == ("scarf", "green", "dotted")
    assert attrs[:3].count(("scarf", "green", "dotted")) == 2
    assert all(a[1:] == ("green", "dotted") for a in attrs[:3])
    scores = [r.score for r in results]
    assert scores == sorted(scores, reverse=True)
    assert all(r.image.is_file() for r in results)


def test_partial_descriptions_find_mostly_matching_products(retriever):
    results = retriever.search_text("red t-shirt", k=8)  # 4 patterns x 2 photos of red t-shirts
    hits = [(r.metadata["category"], r.metadata["color"]) for r in results]
    assert hits.count(("t-shirt", "red")) >= 5
    assert all(cat == "t-shirt" or color == "red" for cat, color in hits)


def test_result_dicts_carry_the_score_breakdown(retriever):
    r = retriever.search_text("blue striped backpack", k=1)[0]
    d = r.to_dict()
    assert set(d) == {"rank", "id", "title", "score", "image", "levels", "marks"}
    assert d["levels"]["final"] == pytest.approx(d["score"], abs=1e-5)
    assert d["marks"][0]["label"] == "object match" and len(d["marks"][0]["cell"]) == 3  # row, col, grid
    assert d["levels"]["global"]["weight"] >= 0 and "object" in d["levels"]["level2"]


def test_k_larger_than_the_catalog_returns_everything(retriever):
    n = len(retriever.catalog)
    results = retriever.search_text("cap", k=n + 50)
    assert len(results) == n
    assert len({r.id for r in results}) == n


@pytest.mark.parametrize("text", ["", "   ", "\n\t", None])
def test_empty_queries_are_refused(retriever, text):
    with pytest.raises(HslDemoError, match="empty query"):
        retriever.search_text(text)


@pytest.mark.parametrize("k", [0, -3, 2.5, True])
def test_bad_k_is_refused(retriever, k):
    with pytest.raises(HslDemoError, match="k must be"):
        retriever.search_text("cap", k=k)


def test_long_queries_are_truncated_and_too_long_ones_refused(retriever):
    """A query up to the limit (hsl_demo.query) is cut to the model's context; a longer one is a
    one-line error before it is tokenized."""
    results = retriever.search_text("green dotted scarf " + "with a lot of extra words " * 8, k=3)
    assert len(results) == 3
    with pytest.raises(HslDemoError, match="too long"):
        retriever.search_text("green dotted scarf " + "with a lot of extra words " * 40, k=3)


def test_words_the_model_never_saw_are_named_in_a_notice(retriever, tiny_backbone):
    """The demo model folder lists its training words (vocabulary.json): a query with others
    gets a notice naming them, in every mode; a query of known words gets none."""
    response = retriever.search_text("zebra tee with stripes", k=3)
    assert response.notices == ["the model was never trained on 'zebra': its results for it may mean little"]
    assert retriever.search_text("red striped tee", k=3).notices == []
    composed = retriever.search_composed("p00024", "make it teal and paisley", k=3)
    assert composed.notices == ["the model was never trained on 'teal', 'paisley': its results for them may "
                                "mean little"]
    step = retriever.session(k=3).add("a houndstooth handbag")
    assert step.notices and "'houndstooth'" in step.notices[0] and step.round is not None  # searched all the same
    assert tiny_backbone.vocabulary is None and tiny_backbone.unknown_words_notice("crimson") == []


def test_the_cli_prints_unknown_words_as_a_warning():
    from conftest import run_cli

    proc = run_cli("search", "--text", "zebra polka dot dress", "-k", "2")
    assert proc.returncode == 0
    assert "hsl-demo: warning: the model was never trained on 'zebra'" in proc.stderr


def test_each_mode_returns_the_breakdown_type_it_registers(retriever):
    from hsl_demo import modes

    found = {"describe": retriever.search_text("red cap", k=2)[0],
             "modify": retriever.search_composed("p00024", "make it blue", k=2)[0],
             "drill-down": retriever.session(k=2).add("a red cap").results[0]}
    for name, result in found.items():
        assert type(result.breakdown) is modes.MODES[name].breakdown, name
        assert result.breakdown.final == pytest.approx(result.score, abs=1e-5)
