"""A fourth mode from one module inside tests/ (toy_mode.py), registered, gets with no other file
changed: an index-time store, a CLI search, an `evaluate` run and a tab in the served app that
answers over HTTP. What issue 25 asks of "a mode is one folder"."""

from __future__ import annotations

import json
import urllib.request

import numpy as np
import pytest
import toy_mode
from conftest import run_cli

from hsl_demo import modes


@pytest.fixture(scope="module")
def toy():
    modes.register(toy_mode.MODE)
    yield toy_mode.MODE
    modes.unregister(toy_mode.MODE.name)


@pytest.fixture(scope="module")
def toy_catalog(toy, small_images, tmp_path_factory):
    """The small photos indexed by the CLI with the embedded model, the toy mode registered."""
    out = tmp_path_factory.mktemp("toy") / "catalog"
    proc = run_cli("index", str(small_images / "images"), "--metadata", str(small_images / "metadata.jsonl"),
                   "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


def test_the_toy_mode_stores_its_arrays_at_index_time(toy_catalog, demo_backbone):
    from hsl_demo.catalog import Catalog
    from hsl_demo.models import head_fingerprint

    manifest = json.loads((toy_catalog / "manifest.json").read_text())
    head = toy_mode.SignHash(demo_backbone.embed_dim)
    assert manifest["heads"]["hash"]["fingerprint"] == head_fingerprint(head)
    stored = np.load(toy_catalog / "hash_bits.npy")
    catalog = Catalog.open(toy_catalog)
    assert stored.shape == (12, toy_mode.BITS) and stored.dtype == bool
    assert np.array_equal(stored, head.bits(__import__("torch").from_numpy(np.asarray(catalog.embeddings))))
    assert set(catalog.stores) == {"hsl", "hash"}  # read back without the catalog naming either


def test_the_cli_searches_in_the_toy_mode(toy_catalog):
    proc = run_cli("search", "--catalog", str(toy_catalog), "--hash-text", "red striped t-shirt", "-k", "3")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "hash search, 64 bits" and len(lines) == 4 and lines[1].lstrip().startswith("1  s")
    as_json = json.loads(run_cli("search", "--catalog", str(toy_catalog), "--hash-text", "red striped t-shirt",
                                 "-k", "3", "--json").stdout)
    assert [r["rank"] for r in as_json] == [1, 2, 3] and all(0 < r["levels"]["shared_bits"] <= 64 for r in as_json)
    assert "--hash-text" in run_cli("search", "--help").stdout
    both = run_cli("search", "--catalog", str(toy_catalog), "--hash-text", "red", "--region", "a red scarf")
    assert both.returncode == 2 and "go one at a time" in both.stderr


def test_evaluate_runs_a_toy_query_file(toy_catalog, tmp_path):
    queries = tmp_path / "queries.jsonl"
    lines = [{"mode": "hash", "text": "red striped t-shirt", "targets": ["s02", "s08"]},
             {"mode": "hash", "text": "green dotted scarf", "targets": ["s00", "s06"]}]
    queries.write_text("".join(json.dumps(q) + "\n" for q in lines))
    proc = run_cli("evaluate", "--catalog", str(toy_catalog), "--queries", str(queries), "--ablation", "--json")
    assert proc.returncode == 0, proc.stderr
    table = json.loads(proc.stdout)
    assert set(table) >= {"bits", "none"} and table["bits"]["queries"] == 2
    # a ranking without bits ("none") is the catalog's row order: its recall follows from that order
    from hsl_demo.catalog import Catalog

    catalog = Catalog.open(toy_catalog)
    order = [catalog.items[row]["id"] for row in range(len(catalog))]
    for k in (1, 5, 10):
        expected = sum(bool(set(order[:k]) & set(q["targets"])) for q in lines) / len(lines)
        assert table["none"][f"R@{k}"] == pytest.approx(expected), k


@pytest.mark.slow
def test_the_served_app_has_a_toy_tab_that_answers(toy_catalog, demo_backbone):
    from gradio_client import Client

    from hsl_demo.catalog import Catalog
    from hsl_demo.search import Retriever, load_heads
    from hsl_demo.ui import serve

    retriever = Retriever(demo_backbone, Catalog.open(toy_catalog), heads=load_heads(demo_backbone))
    demo = serve(retriever, block=False, server_name="127.0.0.1", quiet=True)
    try:
        with urllib.request.urlopen(demo.local_url, timeout=30) as page:
            assert page.status == 200
        tabs = [c["props"]["label"] for c in demo.config["components"] if c["type"] == "tabitem"]
        assert tabs == ["Describe", "Modify", "Drill down", "Hash"]
        gallery, ids = Client(demo.local_url, verbose=False).predict("red striped t-shirt", 3, api_name="/hash_search")
        assert len(gallery) == 3 and ids == [r.id for r in retriever.search("hash", {"text": "red striped t-shirt"},
                                                                              k=3)[0]]
    finally:
        demo.close()
