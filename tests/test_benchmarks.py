"""Public benchmarks as their papers score them, on fixtures that copy the published files'
shapes (CIRR rc2 and its test server's files, Fashion-IQ's lists, Fashion200k's labels):
file names, nesting, field names and types, pairid, img_set with 6 members, a test split
without targets, an image in two lists, a missing image. See docs/datasets.md."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import torch
from conftest import assert_clean_error, run_cli
from dataset_fixtures import write_fashion200k_fixture
from PIL import Image

from hsl_demo.data.cirr import load_cirr
from hsl_demo.data.composed_datasets import PROTOCOLS, load_composed_dataset, load_fashioniq
from hsl_demo.data.convert import write_composed_conversion
from hsl_demo.data.fashion200k import load_fashion200k
from hsl_demo.errors import HslDemoError
from hsl_demo.evaluate import SUBMISSION_FILES, rank_composed, score_rankings


def _png(path: Path, name: str) -> None:
    """A small picture of its own per name (the real images are not ours to ship)."""
    h = hashlib.sha256(name.encode()).digest()
    image = Image.new("RGB", (32, 32), tuple(h[:3]))
    image.paste(tuple(h[3:6]), (0, 0, 16, 16))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def _dump(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")


# ---- CIRR rc2 as its cirr_dataset branch publishes it ---------------------------------------

VAL = [f"dev-{n}-{k}-img{k % 2}" for n in (244, 1028) for k in range(4)]  # 8 dev images
SETS = [VAL[:6], VAL[2:]]  # two img_sets of 6 members, as in rc2


def _val_record(pairid: int, reference: str, target: str, caption: str, members: list[str]) -> dict:
    return {"pairid": pairid, "reference": reference, "target_hard": target, "target_soft": {target: 1.0},
            "caption": caption, "img_set": {"id": pairid % 7, "members": members,
                                            "reference_rank": members.index(reference),
                                            "target_rank": members.index(target)}}


def write_cirr_rc2(root: Path, layout: str = "cirr") -> Path:
    """CIRR rc2 in CIRR's layout (ROOT/captions, ROOT/image_splits, ROOT/img_raw/{dev,test1,train/N})
    or CLIP4Cir's (ROOT/cirr/{captions,image_splits} beside ROOT/{dev,test1,train}). Returns the
    annotations folder."""
    ann = root if layout == "cirr" else root / "cirr"
    images = root / "img_raw" if layout == "cirr" else root
    test1 = [f"test1-{n}-{k}-img{k % 2}" for n in (147, 83) for k in range(4)]
    splits = {"train": {"train-11041-2-img0": "./train/34/train-11041-2-img0.png"},
              "val": {n: f"./dev/{n}.png" for n in VAL}, "test1": {n: f"./test1/{n}.png" for n in test1}}
    for split, names in splits.items():
        _dump(ann / "image_splits" / f"split.rc2.{split}.json", names)
        for name, rel in names.items():
            _png(images / rel, name)
    val = [_val_record(12060 + i, SETS[i % 2][i % 3], SETS[i % 2][3 + i % 3], caption, SETS[i % 2])
           for i, caption in enumerate(["show three bottles of soft drink", "façade is ombré ¾ view",
                                        "Fewer paper towels per pack", "make it darker’s"])]
    _dump(ann / "captions" / "cap.rc2.val.json", val)
    members = test1[:6]
    _dump(ann / "captions" / "cap.rc2.test1.json", [  # no target_hard, target_soft, target_rank
        {"pairid": 12063 + i, "reference": members[i], "caption": caption,
         "img_set": {"id": 1, "members": members, "reference_rank": i}}
        for i, caption in enumerate(["remove all but one dog", " ", "add a woman hugging it"])])
    return ann


def test_cirr_recall_and_recall_subset_as_the_reference_code_defines_them():
    """Hand-checked: one-hot gallery, so a query's score of an image is its weight below. As in
    CLIP4Cir's compute_cirr_val_metrics: the reference is masked out of the ranking, and
    Recall_subset ranks the img_set members other than the reference."""
    ids = [f"g{i}" for i in range(7)]
    gallery = torch.eye(7, 8)
    weights = [{0: 0.9, 1: 0.8, 2: 0.7, 6: 0.6},  # ref g0, target g1: g1 first once g0 is out
               {6: 0.95, 0: 0.9, 3: 0.85, 2: 0.8}]  # ref g2, target g3: g6 (no member), g0, then g3
    queries = torch.zeros(2, 8)
    for q, w in enumerate(weights):
        for i, v in w.items():
            queries[q, i] = v
    refs, targets = ["g0", "g2"], [("g1",), ("g3",)]
    members = [("g0", "g1", "g2", "g3", "g4", "g5"), ("g2", "g3", "g0", "g1", "g4", "g5")]
    cirr, w_text = PROTOCOLS["cirr"], torch.zeros(2)
    removed = rank_composed(queries, gallery, ids, refs, members, True, 50)
    kept = rank_composed(queries, gallery, ids, refs, members, False, 50)
    assert removed.top[0][:3] == ["g1", "g2", "g6"] and kept.top[0][:2] == ["g0", "g1"]
    assert removed.subset == [["g1", "g2", "g3", "g4", "g5"], ["g0", "g3", "g1", "g4", "g5"]]
    assert all("g0" not in ids_ for ids_ in removed.top[:1]) and len(removed.top[0]) == 6  # the rest, g0 out
    scores = score_rankings(removed, targets, cirr, ids, w_text)
    assert scores.recall == {1: 50.0, 5: 100.0, 10: 100.0, 50: 100.0}
    assert scores.subset == {1: 50.0, 2: 100.0, 3: 100.0}
    assert score_rankings(kept, targets, cirr, ids, w_text).recall[1] == 0.0  # keeping the reference costs R@1
    assert score_rankings(kept, targets, cirr, ids, w_text).subset == scores.subset  # the subset never has it


def test_cirr_layouts_as_published_and_as_clip4cir_rearranges_them(tmp_path):
    write_cirr_rc2(tmp_path / "official", "cirr")
    write_cirr_rc2(tmp_path / "clip4cir", "clip4cir")
    official, clip4cir = load_cirr(tmp_path / "official", "val"), load_cirr(tmp_path / "clip4cir", "dev")
    assert official.gallery == clip4cir.gallery == VAL and official.split == "val"
    assert [t.pairid for t in official.triplets] == [12060, 12061, 12062, 12063]
    assert all(len(t.members) == 6 and t.reference in t.members and t.target in t.members for t in official.triplets)
    assert official.image_root == tmp_path / "official" / "img_raw"
    test1 = load_cirr(tmp_path / "official", "test")
    assert [t.target for t in test1.triplets] == [None] * 3 and test1.triplets[1].captions == (" ",)
    # images kept elsewhere: --images; not found: the paths tried, in one line
    (tmp_path / "official" / "img_raw").rename(tmp_path / "nlvr2")
    with pytest.raises(HslDemoError, match=r"CIRR images not found: tried .*img_raw/dev/dev-244-0-img0.png; "
                       r".*official/dev/dev-244-0-img0.png \(give --images DIR"):
        load_cirr(tmp_path / "official", "val")
    assert load_cirr(tmp_path / "official", "val", images=tmp_path / "nlvr2").gallery == VAL
    with pytest.raises(HslDemoError, match="targets of this split are not public.*--submission DIR"):
        load_composed_dataset("cirr", tmp_path / "clip4cir", "test1")


def _table(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("|")]


@pytest.mark.slow  # ~15 s: four model loads, an index
def test_cirr_both_paths_print_the_same_figures_a_missing_image_costs_its_queries_and_test1_is_submitted(tmp_path):
    ann = write_cirr_rc2(tmp_path / "cirr")
    (tmp_path / "cirr" / "img_raw" / "dev" / f"{VAL[5]}.png").unlink()  # the target of pairs 12062 and 12063
    direct = run_cli("--device", "cpu", "evaluate", "--dataset", "cirr", "--data-root", str(tmp_path / "cirr"))
    assert direct.returncode == 0, direct.stderr
    rows = _table(direct.stdout)
    assert rows[0] == ("| variant | category | R@1 | R@5 | R@10 | R@50 | Rsubset@1 | Rsubset@2 | Rsubset@3 | queries "
                       "| mean w_text |")
    assert re.fullmatch(r"\| adaptive \| cirr \|( \d+\.\d\d \|){7} 2 \| \d\.\d\d \|", rows[2]), rows
    assert "reference removed" in direct.stdout and "left out: 2 queries" in direct.stdout
    assert "1 images missing" in direct.stdout
    out, catalog = tmp_path / "out", tmp_path / "catalog"
    proc = run_cli("convert", "cirr", "--root", str(tmp_path / "cirr"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "split val: 1 images missing (e.g. dev-1028-1-img1), 2 queries dropped" in proc.stdout
    assert "split test1: 3 queries without public targets" in proc.stdout
    queries = [json.loads(line) for line in (out / "queries.composed.val.jsonl").read_text().splitlines()]
    assert [q["pairid"] for q in queries] == [12060, 12061] and all(len(q["img_set"]) == 6 for q in queries)
    assert queries[0]["protocol"] == {"dataset": "cirr", "split": "val", "category": "cirr", "gallery": "cirr.val",
                                      "remove_reference": True, "ks": [1, 5, 10, 50], "subset_ks": [1, 2, 3],
                                      "dropped": 2, "missing_images": 1}
    proc = run_cli("index", str(out / "images"), "--metadata", str(out / "metadata.jsonl"), "--out", str(catalog))
    assert proc.returncode == 0, proc.stderr
    converted = run_cli("--device", "cpu", "evaluate", "--catalog", str(catalog), "--queries",
                        str(out / "queries.composed.val.jsonl"))
    assert converted.returncode == 0, converted.stderr
    assert _table(converted.stdout) == rows  # the same figures, the same protocol, the same gallery (val only)
    kept = run_cli("--device", "cpu", "evaluate", "--catalog", str(catalog), "--queries",
                   str(out / "queries.composed.val.jsonl"), "--variant", "image", "--keep-reference", "--json")
    assert json.loads(kept.stdout)["average"]["R@1"] == 0.0  # the reference is its own best match
    assert json.loads(kept.stdout)["reference"] == "kept"
    # test1: the server's two files, as its demo_files/
    sub = tmp_path / "sub"
    proc = run_cli("--device", "cpu", "evaluate", "--dataset", "cirr", "--data-root", str(tmp_path / "cirr"),
                   "--split", "test1", "--submission", str(sub))
    assert proc.returncode == 0, proc.stderr
    test1 = json.loads((ann / "captions" / "cap.rc2.test1.json").read_text())
    for metric, name in SUBMISSION_FILES.items():
        body = json.loads((sub / name).read_text())
        assert list(body)[:2] == ["version", "metric"] and (body["version"], body["metric"]) == ("rc2", metric)
        assert set(body) - {"version", "metric"} == {str(r["pairid"]) for r in test1}
        for r in test1:
            names = body[str(r["pairid"])]
            assert r["reference"] not in names
            if metric == "recall":
                assert len(names) == 7  # min(50, the 8 test1 images but the reference)
            else:
                assert len(names) == 3 and set(names) < set(r["img_set"]["members"])
    assert_clean_error(run_cli("evaluate", "--dataset", "cirr", "--data-root", str(tmp_path / "cirr"), "--split",
                               "test1", "--submission", str(sub)), "exists; give another folder")


def test_submission_and_reference_flags_are_refused_where_they_mean_nothing(tmp_path):
    write_cirr_rc2(tmp_path / "cirr")
    assert_clean_error(run_cli("evaluate", "--dataset", "cirr", "--data-root", str(tmp_path / "cirr"),
                               "--submission", str(tmp_path / "sub")), "for CIRR's test1 split")
    assert_clean_error(run_cli("evaluate", "--dataset", "shoes", "--data-root", str(tmp_path / "cirr"),
                               "--images", str(tmp_path)), "--images goes with CIRR")
    assert_clean_error(run_cli("evaluate", "--queries", str(tmp_path / "q.jsonl"), "--submission", "x"),
                       "--submission goes with --dataset")


# ---- Fashion-IQ as XiaoxiaoGuo/fashion-iq publishes it ----------------------------------------

def write_fashioniq_lists(root: Path) -> None:
    """Fashion-IQ's files for dress and shirt, train/val/test: B0SHARED is in dress val, dress
    test and shirt val (real ASINs are in up to 4 lists); B0GONE is listed but not on disk."""
    lists = {("dress", "train"): ["B0T1", "B0T2"], ("dress", "val"): ["B0D1", "B0D2", "B0SHARED", "B0GONE"],
             ("dress", "test"): ["B0X1", "B0SHARED"], ("shirt", "train"): ["B0T3", "B0T4"],
             ("shirt", "val"): ["B0S1", "B0S2", "B0SHARED"], ("shirt", "test"): ["B0X2", "B0X3"]}
    for (cat, split), asins in lists.items():
        _dump(root / "image_splits" / f"split.{cat}.{split}.json", asins)
        for a in asins:
            if a != "B0GONE":
                _png(root / "images" / f"{a}.png", a)
        a, b = asins[0], asins[1]
        caps = [{"target": b, "candidate": a, "captions": ["is shiny and silver", "fit and flare"]},
                {"target": a, "candidate": b, "captions": ["", "ombré"]}]  # an empty caption, as published
        if split == "val" and cat == "dress":
            caps.append({"target": "B0GONE", "candidate": "B0SHARED", "captions": ["is darker", "longer"]})
        if split == "test":
            caps = [{"candidate": c["candidate"], "captions": c["captions"]} for c in caps]  # no target
        _dump(root / "captions" / f"cap.{cat}.{split}.json", caps)


def test_fashioniq_images_in_several_lists_carry_them_all_and_a_missing_one_costs_its_queries(tmp_path):
    write_fashioniq_lists(tmp_path / "fiq")
    dress, shirt = load_fashioniq(tmp_path / "fiq", "val", categories=("dress", "shirt"))
    assert (dress.missing, dress.dropped, len(dress.triplets)) == (["B0GONE"], 1, 2)
    assert dress.gallery == ["B0D1", "B0D2", "B0SHARED"] and "B0SHARED" in shirt.gallery
    c = write_composed_conversion("fashioniq", tmp_path / "fiq", tmp_path / "out", link_images=False)
    assert c["missing"] == {"val": ["B0GONE"]} and c["dropped"] == {"val": 1} and c["untargeted"] == {"test": 4}
    records = {json.loads(line)["id"]: json.loads(line) for line in (tmp_path / "out/metadata.jsonl").open()}
    shared = records["B0SHARED"]
    assert shared["splits"] == ["val", "test"] and shared["groups"] == ["dress", "shirt"]
    assert shared["galleries"] == ["fashioniq.dress.val", "fashioniq.shirt.val", "fashioniq.dress.test"]
    assert records["B0T1"]["split"] == "train" and shared["split"] == "val"  # held out of training
    queries = [json.loads(line) for line in (tmp_path / "out/queries.composed.val.jsonl").open()]
    assert [(q["kind"], q["protocol"]["gallery"], q["protocol"]["remove_reference"]) for q in queries] == [
        ("dress", "fashioniq.dress.val", False)] * 2 + [("shirt", "fashioniq.shirt.val", False)] * 2
    assert queries[1]["text"] == "ombré"  # the empty caption dropped, not the query


# ---- Fashion200k with TIRG's test queries ----------------------------------------------------

def test_fashion200k_counts_every_image_with_the_target_caption_and_drops_queries_of_missing_images(tmp_path):
    write_fashion200k_fixture(tmp_path / "f200k")
    split = load_fashion200k(tmp_path / "f200k", "test")
    assert all(len(t.targets) == 2 for t in split.triplets)  # two photos of each product share its caption
    assert PROTOCOLS["fashion200k"].remove_reference  # TIRG: sims[source] = -10e10
    source = split.triplets[0].reference
    (tmp_path / "f200k" / source).unlink()
    after = load_fashion200k(tmp_path / "f200k", "test")
    # the source of one test query and the target of another (the fixture's colours go round)
    assert after.dropped == 2 and len(after.triplets) == len(split.triplets) - 2
