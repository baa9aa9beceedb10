"""`hsl-demo convert FORMAT`: public composed data sets (Fashion-IQ, Shoes, CIRR, Fashion200k) in
their published layouts, rendered as tiny fixtures, become catalog metadata, query files and
triplets; one of them is then indexed, evaluated and trained on end to end."""

from __future__ import annotations

import json

import pytest
from conftest import assert_clean_error, run_cli
from dataset_fixtures import write_cirr_fixture, write_fashion200k_fixture, write_fashioniq_fixture, write_shoes_fixture

from hsl_demo.data.composed_datasets import load_composed_dataset
from hsl_demo.data.fashion200k import one_word_pairs, replace_text
from hsl_demo.errors import HslDemoError

FIXTURES = {"fashioniq": write_fashioniq_fixture, "shoes": write_shoes_fixture, "cirr": write_cirr_fixture,
            "fashion200k": write_fashion200k_fixture}
# (images, triplets per split with targets, query files)
EXPECTED = {
    "fashioniq": (108, {"train": 72, "val": 72}, ["queries.composed.val.jsonl"]),
    "shoes": (18, {"train": 12, "eval": 24}, ["queries.composed.eval.jsonl"]),
    "cirr": (36, {"train": 24, "val": 24}, ["queries.composed.val.jsonl"]),
    "fashion200k": (48, {"train": 36, "test": 12}, ["queries.composed.test.jsonl", "queries.test.jsonl"]),
}


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("fmt", list(FIXTURES))
def test_each_published_layout_converts_to_metadata_queries_and_triplets(fmt, tmp_path):
    FIXTURES[fmt](tmp_path / "data")
    proc = run_cli("convert", fmt, "--root", str(tmp_path / "data"), "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    images, triplets, query_files = EXPECTED[fmt]
    out = tmp_path / "out"
    records = read_jsonl(out / "metadata.jsonl")
    assert len(records) == images == len({r["id"] for r in records})
    assert all((out / "images" / r["image"]).resolve().is_file() for r in records)  # links to the originals
    found = read_jsonl(out / "triplets.jsonl")
    assert {s: sum(t["split"] == s for t in found) for s in triplets} == triplets
    assert sorted(p.name for p in out.glob("queries.*.jsonl")) == query_files
    ids = {r["id"] for r in records}
    for name in query_files:
        for q in read_jsonl(out / name):
            assert set(q["targets"]) <= ids and q.get("reference", next(iter(ids))) in ids
    assert f"hsl-demo index {out / 'images'}" in proc.stdout


def test_cirr_and_fashion200k_read_as_published_for_training_and_evaluation(tmp_path):
    write_cirr_fixture(tmp_path / "cirr")
    (train,) = load_composed_dataset("cirr", tmp_path / "cirr", "train")
    assert len(train.triplets) == 24 and len(train.gallery) == 12
    with pytest.raises(HslDemoError, match="targets of this split are not public"):
        load_composed_dataset("cirr", tmp_path / "cirr", "test")
    split_file = tmp_path / "cirr" / "cirr" / "image_splits" / "split.rc2.val.json"
    names = json.loads(split_file.read_text())
    split_file.write_text(json.dumps({**names, "evil": "../../etc/passwd"}))
    with pytest.raises(HslDemoError, match="leads outside the CIRR folder"):
        load_composed_dataset("cirr", tmp_path / "cirr", "val")

    proc = run_cli("evaluate", "--dataset", "cirr", "--data-root", str(tmp_path / "cirr"), "--split", "train", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["ks"] == [1, 5, 10, 50] and json.loads(proc.stdout)["published"] is None

    write_fashion200k_fixture(tmp_path / "f200k")
    (test,) = load_composed_dataset("fashion200k", tmp_path / "f200k")
    assert {t.captions[0] for t in test.triplets} == {"replace red with blue", "replace blue with black",
                                                      "replace black with red"}
    run_cli("convert", "fashion200k", "--root", str(tmp_path / "f200k"), "--out", str(tmp_path / "out"))
    first = read_jsonl(tmp_path / "out" / "queries.composed.test.jsonl")[0]
    assert len(first["targets"]) == 2  # both photos with the target's caption count (TIRG)


def test_fashion200k_pairs_differ_in_exactly_one_word():
    captions = {"a": "red striped dress", "b": "blue striped dress", "c": "red dress", "d": "blue plain top"}
    pairs = one_word_pairs(captions)
    assert sorted(pairs) == [("blue striped dress", "red striped dress"), ("red striped dress", "blue striped dress")]
    assert replace_text("red striped dress", "blue striped dress") == "replace red with blue"


def test_a_converted_data_set_is_indexed_evaluated_and_trained_on(tmp_path):
    write_fashion200k_fixture(tmp_path / "data")
    out, catalog = tmp_path / "out", tmp_path / "catalog"
    assert run_cli("convert", "fashion200k", "--root", str(tmp_path / "data"), "--out", str(out)).returncode == 0
    proc = run_cli("index", str(out / "images"), "--metadata", str(out / "metadata.jsonl"), "--out", str(catalog))
    assert proc.returncode == 0, proc.stderr
    for name, count in (("queries.test.jsonl", 12), ("queries.composed.test.jsonl", 12)):
        proc = run_cli("evaluate", "--catalog", str(catalog), "--queries", str(out / name), "--json")
        assert proc.returncode == 0, proc.stderr
        body = json.loads(proc.stdout)
        assert body.get("average", body)["queries"] == count  # a composed file: the data set's table
    proc = run_cli("train", "composed", "--catalog", str(catalog), "--triplets", str(out / "triplets.jsonl"),
                   "--out", str(tmp_path / "model"), "--steps", "3", "--batch-size", "8")
    assert proc.returncode == 0, proc.stderr
    info = json.loads((tmp_path / "model" / "composed" / "training.json").read_text())
    assert info["triplets"] == "triplets.jsonl" and info["catalog"]["heldout_items"] > 0


def test_conversion_never_replaces_a_folder_it_did_not_write(tmp_path):
    write_cirr_fixture(tmp_path / "data")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    assert_clean_error(run_cli("convert", "cirr", "--root", str(tmp_path / "data"), "--out", str(tmp_path / "mine")),
                       "not empty")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    assert_clean_error(run_cli("convert", "cirr", "--root", str(tmp_path / "data"), "--out", str(tmp_path)),
                       "holds the cirr data")
    assert_clean_error(run_cli("convert", "shoes", "--root", str(tmp_path / "data"), "--out", str(tmp_path / "o")),
                       "no shoes split found (train: no train_im_names.txt")
    # an images/ folder holding a real file is someone's, not an earlier conversion's links
    assert run_cli("convert", "cirr", "--root", str(tmp_path / "data"), "--out", str(tmp_path / "o2")).returncode == 0
    (tmp_path / "o2" / "images" / "precious.jpg").write_bytes(b"mine")
    assert_clean_error(run_cli("convert", "cirr", "--root", str(tmp_path / "data"), "--out", str(tmp_path / "o2")),
                       "not empty (images")
    assert (tmp_path / "o2" / "images" / "precious.jpg").read_bytes() == b"mine"
    # a split that is there but broken is an error, not a split left out
    (tmp_path / "data" / "cirr" / "captions" / "cap.rc2.val.json").write_text("[{")
    assert_clean_error(run_cli("convert", "cirr", "--root", str(tmp_path / "data"), "--out", str(tmp_path / "o3")),
                       "cap.rc2.val.json: not valid JSON")


def test_linked_image_folders_convert_as_they_are_written(tmp_path):
    """NLVR2's train/, dev/ and test1/ are often links to another disk."""
    write_cirr_fixture(tmp_path / "elsewhere")
    root = tmp_path / "cirr"
    root.mkdir()
    (root / "cirr").symlink_to(tmp_path / "elsewhere" / "cirr")
    for folder in ("train", "dev", "test1"):
        (root / folder).symlink_to(tmp_path / "elsewhere" / folder)
    proc = run_cli("convert", "cirr", "--root", str(root), "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    records = read_jsonl(tmp_path / "out" / "metadata.jsonl")
    assert records[0]["image"].startswith("train/") and len(records) == 36
