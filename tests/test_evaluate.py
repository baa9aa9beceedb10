"""The shipped checkpoint against a recall floor on held-out attribute combinations."""

from hsl_demo.catalog import Catalog
from hsl_demo.defaults import DEMO_DATA_DIR
from hsl_demo.evaluate import evaluate, load_queries
from hsl_demo.search import Retriever

# Measured 2026-11-24 (hsl-demo-small) with `hsl-demo evaluate --queries assets/demo/products/queries.test.jsonl`
# (docs/embedded-model.md); the floor leaves room for float noise across machines, not for regressions.
HELD_OUT_TEXT_R10_FLOOR = 0.80


def test_backbone_held_out_text_recall_floor(demo_backbone):
    queries = load_queries(DEMO_DATA_DIR / "products/queries.test.jsonl")
    metrics = evaluate(Retriever(demo_backbone, Catalog.open("products")), queries)
    assert metrics["queries"] == len(queries) > 200
    assert metrics["R@10"] >= HELD_OUT_TEXT_R10_FLOOR, metrics
    # the backbone alone (no head: the FAISS global cosine), exactly docs/embedded-model.md's held-out figures
    assert (metrics["R@1"], metrics["R@5"], metrics["R@10"]) == (164 / 224, 210 / 224, 220 / 224)


def test_evaluate_reports_what_the_top_result_gets_right_and_recall_per_kind(demo_backbone):
    """Beyond recall: how often the first result has the asked category / colour / pattern
    (the backbone alone knows colour far better than shape), and per-kind recall."""
    retriever = Retriever(demo_backbone, Catalog.open("products"))
    queries = load_queries(DEMO_DATA_DIR / "products/queries.test.jsonl")
    assert evaluate(retriever, queries)["top1_attributes"] == {"category": 0.7455, "color": 0.9911, "pattern": 0.9955}
    composed = load_queries(DEMO_DATA_DIR / "products/queries.composed.test.jsonl")[:60]
    by_kind = evaluate(retriever, composed)["by_kind"]
    kinds = sorted({q["kind"] for q in composed})
    assert list(by_kind) == kinds and sum(m["queries"] for m in by_kind.values()) == 60
    hits = sum(m["R@10"] * m["queries"] for m in by_kind.values())
    assert round(hits) == round(evaluate(retriever, composed)["R@10"] * 60)  # the kinds partition the file


def test_kept_attributes_count_what_the_text_left_alone(demo_backbone):
    """For a modification ("make it blue"), the attributes every target shares with the
    reference: how often the first result, and how much of the top 5, keep them."""
    from hsl_demo.search import load_heads

    retriever = Retriever(demo_backbone, Catalog.open("products"), **load_heads(demo_backbone))
    catalog = retriever.catalog
    queries = [q for q in load_queries(DEMO_DATA_DIR / "products/queries.composed.test.jsonl")
               if q["kind"] == "color"][:12]
    kept = evaluate(retriever, queries)["kept_attributes"]
    assert set(kept) == {"category", "pattern"} and kept["category"]["queries"] == 12  # colour changed
    top1 = top5 = 0
    for q in queries:  # by hand, from the searches themselves
        ref = catalog.items[catalog.row(q["reference"])]["category"]
        results = retriever.search_composed(q["reference"], q["text"], k=5).results
        top1 += results[0].metadata["category"] == ref
        top5 += sum(r.metadata["category"] == ref for r in results) / 5
    assert kept["category"]["top1"] == round(top1 / 12, 4) and kept["category"]["top5"] == round(top5 / 12, 4)
