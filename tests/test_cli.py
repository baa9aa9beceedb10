"""The command line as a user runs it: output, JSON, exit codes, one-line errors."""

import json

import pytest
from conftest import assert_clean_error, run_cli, run_cli_subprocess


@pytest.mark.slow
def test_the_real_command_searches_and_fails_cleanly():
    """Smoke test of `python -m hsl_demo` in its own process (the rest of the CLI tests call
    cli.main in-process): a search, and a bad input that exits 2 with one line."""
    proc = run_cli_subprocess("search", "--text", "green dotted scarf", "-k", "2")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].split()[0] == "1" and "Green dotted" in proc.stdout
    assert_clean_error(run_cli_subprocess("search", "--catalog", "nowhere", "--text", "cap"), "no such catalog")


def test_search_with_no_options_uses_the_embedded_defaults():
    proc = run_cli("search", "--text", "green dotted scarf", "-k", "3")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 3
    assert lines[0].split()[0] == "1" and "Green dotted" in lines[0]
    assert sum("Green dotted scarf" in line for line in lines) == 2


def test_search_json_fills_the_hsl_levels():
    proc = run_cli("search", "--text", "green dotted scarf", "-k", "4", "--json")
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert [r["rank"] for r in results] == [1, 2, 3, 4]
    assert results[0]["title"] == "Green dotted scarf"
    for r in results:
        assert {"id", "title", "score", "levels"} <= set(r)
        levels = r["levels"]
        assert levels["final"] == r["score"]
        assert set(levels["level1"]) == set(levels["level2"]) == {"object", "image"}
        assert all({"similarity", "weight"} == set(levels[lv][g]) for lv in ("level1", "level2")
                   for g in ("object", "image"))
    white = json.loads(run_cli("search", "--text", "white plain sneaker", "-k", "4", "--json").stdout)
    assert all(r["title"].startswith("White") for r in white)  # colour is always right
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    assert_clean_error(run_cli("search", "--text", "   "), "empty query")
    assert_clean_error(run_cli("search", "--catalog", "nowhere", "--text", "cap"), "no such catalog")
    assert_clean_error(run_cli("search", "--model", str(tmp_path / "nope"), "--text", "cap"), "no such folder")
    assert_clean_error(run_cli("index", str(tmp_path / "no-images"), "--out", str(tmp_path / "c")),
                       "no such file or folder")
    (tmp_path / "empty").mkdir()
    assert_clean_error(run_cli("index", str(tmp_path / "empty"), "--out", str(tmp_path / "c")), "no images")
    assert not (tmp_path / "c").exists()


def test_evaluate_ablation_reports_every_variant(tmp_path):
    queries = tmp_path / "q.jsonl"
    queries.write_text(json.dumps({"text": "black plain t-shirt", "targets": ["p00000", "p00001"]}) + "\n")
    proc = run_cli("evaluate", "--queries", str(queries), "--ablation", "--json")
    assert proc.returncode == 0, proc.stderr
    table = json.loads(proc.stdout)
    assert list(table) == ["full", "image", "object", "global"]
    assert all(table[v]["R@10"] == 1.0 for v in table)
    table_text = run_cli("evaluate", "--queries", str(queries), "--ablation").stdout
    assert "| full |" in table_text and "| global |" in table_text
    bad = run_cli("evaluate", "--queries", str(queries), "--variant", "nope")  # argparse: usage + error
    assert bad.returncode == 2 and "invalid choice: 'nope'" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_train_hsl_writes_a_head_next_to_a_backbone(tmp_path):
    proc = run_cli("train", "hsl", "--model", "hsl-demo-tiny", "--out", str(tmp_path / "m"), "--steps", "3",
                   "--batch-size", "16", "--variants", "1", "--levels", "3")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "m/hsl/config.json").read_text())["levels"] == 3
    assert "saved HSL head" in proc.stdout


def test_evaluate_prints_recall_and_rejects_unknown_modes(tmp_path):
    queries = tmp_path / "q.jsonl"
    queries.write_text(json.dumps({"mode": "text", "text": "green dotted scarf", "targets": ["p00000"]}) + "\n"
                       + json.dumps({"text": "black plain t-shirt", "targets": ["p00000", "p00001"]}) + "\n")
    proc = run_cli("evaluate", "--queries", str(queries), "--json")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(proc.stdout)
    assert set(metrics) >= {"R@1", "R@5", "R@10"}
    # p00000 is a black plain t-shirt: the second query finds it, the first does not
    assert metrics["R@10"] == 0.5
    queries.write_text(json.dumps({"mode": "drilldown", "text": "blue", "targets": ["p00001"]}) + "\n")
    assert_clean_error(run_cli("evaluate", "--queries", str(queries)), "unknown mode 'drilldown'")
    queries.write_text(json.dumps({"mode": "composed", "text": "blue", "targets": ["p00001"]}) + "\n")
    assert_clean_error(run_cli("evaluate", "--queries", str(queries)), "needs a \"reference\"")
    queries.write_text("{not json\n")
    assert_clean_error(run_cli("evaluate", "--queries", str(queries)), "q.jsonl:1")
    queries.write_text(json.dumps({"text": "cap", "targets": ["nope"]}) + "\n")
    assert_clean_error(run_cli("evaluate", "--queries", str(queries)), "not in catalog")


def test_index_lists_skipped_files(small_images, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for p in list((small_images / "images").glob("*.jpg"))[:3]:
        (images / p.name).write_bytes(p.read_bytes())
    (images / "bad.webp").write_bytes(b"RIFF0000WEBPnope")
    proc = run_cli("index", str(images), "--out", str(tmp_path / "cat"))
    assert proc.returncode == 0, proc.stderr
    assert "skipped bad.webp" in proc.stderr
    assert "indexed 3 images" in proc.stdout
    search = run_cli("search", "--catalog", str(tmp_path / "cat"), "--text", "scarf", "-k", "10", "--json")
    assert len(json.loads(search.stdout)) == 3


def test_composed_search_prints_the_query_weights():
    proc = run_cli("search", "--reference", "p00000", "--text", "make it blue and striped", "-k", "3")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("query weights: image 0.") and len(lines) == 4
    w_image, w_text = (float(x.strip(",")) for x in lines[0].split()[3::2])
    assert w_image + w_text == pytest.approx(1.0, abs=0.011)
    assert sum("Blue striped" in line for line in lines[1:]) >= 2
    out = json.loads(run_cli("search", "--reference", "p00000", "--text", "blue", "-k", "2", "--json").stdout)
    assert {"w_image", "w_text", "image_similarity", "text_similarity"} <= set(out[0]["levels"])
    assert_clean_error(run_cli("search", "--reference", "p99999", "--text", "blue"), "not an item id")


def test_evaluate_reports_the_held_out_phrasing_beside_the_file(tmp_path):
    """A query file with a `.heldout.jsonl` sibling (the same queries in held-out sentence
    shapes) is evaluated on both; the phrasing is what differs."""
    queries = tmp_path / "q.jsonl"
    queries.write_text(json.dumps({"text": "green dotted scarf", "targets": ["p00668", "p00669"]}) + "\n")
    (tmp_path / "q.heldout.jsonl").write_text(
        json.dumps({"text": "do you have any red striped sneakers?", "targets": ["p00668"],
                    "phrasing": "held-out"}) + "\n")
    proc = run_cli("evaluate", "--queries", str(queries), "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["R@1"] == 1.0 and out["heldout_phrasing"]["queries"] == 1
    assert out["heldout_phrasing"]["R@10"] == 0.0  # asks for something else: the scarf is not found
    text = run_cli("evaluate", "--queries", str(queries)).stdout
    assert "## phrasing of the file" in text and "## held-out phrasing: " in text and text.count("1 queries:") == 2
    alone = run_cli("evaluate", "--queries", str(tmp_path / "q.heldout.jsonl"), "--json")
    assert "heldout_phrasing" not in json.loads(alone.stdout)


def test_evaluate_counts_what_users_would_have_been_told(tmp_path):
    queries = tmp_path / "q.jsonl"
    lines = [{"mode": "modify", "reference": "p00024", "text": "", "targets": ["p00025"]},
             {"mode": "modify", "reference": "p00000", "text": " ", "targets": ["p00001"]},
             {"mode": "modify", "reference": "p00000", "text": "make it zebra", "targets": ["p00001"]}]
    queries.write_text("".join(json.dumps(q) + "\n" for q in lines))
    proc = run_cli("evaluate", "--queries", str(queries), "--json")
    assert json.loads(proc.stdout)["notices"] == {
        "no modification text: searching by the reference image alone": 2,
        "the model was never trained on 'zebra': its results for it may mean little": 1}
    assert "hsl-demo: warning: 2 queries of q.jsonl: no modification text" in proc.stderr
