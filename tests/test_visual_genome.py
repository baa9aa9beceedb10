"""Visual Genome region descriptions -> catalog metadata and drill-down queries (Drill-down's data)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import assert_clean_error, run_cli
from dataset_fixtures import write_visual_genome_fixture

from hsl_demo.data.visual_genome import (
    IMAGE_DATA_FILE,
    REGIONS_FILE,
    load_visual_genome,
    multi_queries_from_records,
    write_visual_genome,
)
from hsl_demo.errors import HslDemoError
from hsl_demo.fileio import load_jsonl


@pytest.fixture(scope="module")
def vg(tmp_path_factory) -> dict:
    """The fixture data set, written once; tests that change it work on a copy (`vg_copy`)."""
    return write_visual_genome_fixture(tmp_path_factory.mktemp("vg") / "root")


@pytest.fixture
def vg_copy(vg, tmp_path) -> dict:
    root = tmp_path / "root"
    shutil.copytree(vg["root"], root)
    return {**vg, "root": str(root), "split_file": str(root / "split.txt")}


def _raw(vg: dict) -> dict[int, list[dict]]:
    entries = json.loads((Path(vg["root"]) / REGIONS_FILE).read_text())
    return {e["id"]: e["regions"] for e in entries}


def _by_id(records: list[dict]) -> dict[str, dict]:
    return {r["id"]: r for r in records}


# ---- parsing ---------------------------------------------------------------------------------

def test_records_ids_images_and_boxes(vg):
    records = load_visual_genome(vg["root"])
    assert [r["id"] for r in records] == [f"vg{i}" for i in vg["images"]]  # the missing image is skipped
    raw = _raw(vg)
    for r in records:
        image_id = r["vg_image_id"]
        assert r["image"] == vg["images"][image_id]
        assert (Path(vg["root"]) / r["image"]).is_file()
        assert r["title"] and r["items"]
        raw_by_rid = {g["region_id"]: g for g in raw[image_id]}
        for it in r["items"]:
            x0, y0, x1, y1 = it["box"]
            assert 0 <= x0 < x1 <= r["width"] and 0 <= y0 < y1 <= r["height"]
            g = raw_by_rid[it["region_id"]]
            assert it["caption"] == g["phrase"].strip()
            if g["x"] >= 0 and g["x"] + g["width"] <= r["width"] and g["y"] + g["height"] <= r["height"]:
                assert it["box"] == [g["x"], g["y"], g["x"] + g["width"], g["y"] + g["height"]]
            else:  # the scene region overflows the 256 px image by 6 px on both sides: clipped
                assert (g["x"], g["width"]) == (-6, 268)
                assert it["box"] == [0, g["y"], 256, g["y"] + g["height"]]
    # odd fixture images live in VG_100K_2 and are found there
    assert {r["image"].split("/")[0] for r in records} == {"VG_100K", "VG_100K_2"}


def test_cleaning_drops_empty_duplicate_and_degenerate_regions(vg, tmp_path):
    records = load_visual_genome(vg["root"])
    kept_rids = {it["region_id"] for r in records for it in r["items"]}
    dropped = vg["dropped"]
    for kind in ("empty", "duplicate", "degenerate"):
        assert dropped[kind] and not set(dropped[kind]) & kept_rids, kind
    for r in records:
        captions = [it["caption"] for it in r["items"]]
        assert all(c and c == c.strip() for c in captions)
        assert len({c.casefold() for c in captions}) == len(captions)
    # the duplicate's larger original stays
    first = records[0]
    dup = next(g for g in _raw(vg)[first["vg_image_id"]] if g["region_id"] == dropped["duplicate"][0])
    assert dup["phrase"].strip().casefold() in {it["caption"].casefold() for it in first["items"]}
    counts = write_visual_genome(vg["root"], tmp_path / "out")
    assert counts["dropped_regions"] == {"empty": 1, "duplicate": 1, "degenerate": 1, "beyond_max_rounds": 0}
    assert counts["regions"] == vg["regions"] - 3 - len(_raw(vg)[vg["missing_id"]])
    assert (counts["images"], counts["missing_images"], counts["missing_examples"]) == (
        len(vg["images"]), 1, [f"{vg['missing_id']}.jpg"])


@pytest.mark.parametrize("max_rounds", [1, 2, 3])
def test_max_rounds_keeps_the_largest_regions(vg, max_rounds):
    records = load_visual_genome(vg["root"], max_rounds=max_rounds)
    bad = {rid for rids in vg["dropped"].values() for rid in rids}
    for r in records:
        usable = [g for g in _raw(vg)[r["vg_image_id"]] if g["region_id"] not in bad]
        clipped = lambda g: (min(g["x"] + g["width"], 256) - max(g["x"], 0)) * (  # noqa: E731
            min(g["y"] + g["height"], 256) - max(g["y"], 0))
        largest = sorted(usable, key=clipped, reverse=True)[:max_rounds]
        assert {it["region_id"] for it in r["items"]} == {g["region_id"] for g in largest}
        assert len(r["items"]) == min(max_rounds, len(usable))
    if max_rounds == 1:  # the table-wide scene region is the largest everywhere
        assert all(r["items"][0]["box"] == [0, 2, 256, 254] for r in records)


def test_round_order_is_fixed_by_the_seed(vg):
    a = load_visual_genome(vg["root"], seed=0)
    assert a == load_visual_genome(vg["root"], seed=0)
    b = load_visual_genome(vg["root"], seed=1)
    order = lambda recs: [[it["region_id"] for it in r["items"]] for r in recs]  # noqa: E731
    assert order(a) != order(b)
    assert [sorted(x) for x in order(a)] == [sorted(x) for x in order(b)]  # same regions, other order
    # not simply largest-first: the shuffle moves some image's largest region off round 1
    assert any(r["items"][0]["box"] != [0, 2, 256, 254] for r in a)
    # an image's order does not depend on which other images are converted
    split = _by_id(load_visual_genome(vg["root"], split_file=vg["split_file"], seed=0))
    assert split and all(split[k] == _by_id(a)[k] for k in split)


def test_split_file_filters_and_accepts_file_names(vg, tmp_path):
    records = load_visual_genome(vg["root"], split_file=vg["split_file"])
    on_disk = [i for i in vg["split_ids"] if i in vg["images"]]
    assert [r["vg_image_id"] for r in records] == on_disk and len(on_disk) < len(vg["images"])
    counts = write_visual_genome(vg["root"], tmp_path / "out", split_file=vg["split_file"])
    assert (counts["split_ids"], counts["split_unmatched"], counts["missing_images"]) == (
        len(vg["split_ids"]) + 1, 1, 1)
    ids = list(vg["images"])
    other = tmp_path / "names.txt"
    other.write_text(f"# Drill-down test\n{vg['images'][ids[1]]}\n\nvg{ids[4]}\n  {ids[5]}.jpg  \n")
    assert [r["vg_image_id"] for r in load_visual_genome(vg["root"], split_file=other)] == [ids[1], ids[4], ids[5]]


def test_limit(vg):
    records = load_visual_genome(vg["root"], limit=2)
    assert [r["id"] for r in records] == [f"vg{i}" for i in list(vg["images"])[:2]]


def test_image_data_with_id_key_or_absent(vg_copy):
    expected = load_visual_genome(vg_copy["root"])
    data_path = Path(vg_copy["root"]) / IMAGE_DATA_FILE
    data = json.loads(data_path.read_text())
    data_path.write_text(json.dumps([{"id": d["image_id"], "width": d["width"], "height": d["height"]}
                                     for d in data]))
    assert load_visual_genome(vg_copy["root"]) == expected
    data_path.unlink()  # sizes come from the image files then: boxes are still clipped
    assert load_visual_genome(vg_copy["root"]) == expected


def test_multi_queries_from_records(vg):
    records = load_visual_genome(vg["root"])
    queries = multi_queries_from_records(records)
    assert len(queries) == len(records)
    for q, r in zip(queries, records):
        assert q == {"mode": "multi", "regions": [it["caption"] for it in r["items"]], "targets": [r["id"]]}
    assert all(len(q["regions"]) <= 2 for q in multi_queries_from_records(records, max_rounds=2))
    assert max(len(q["regions"]) for q in queries) > 2


def test_written_files_are_evaluable_queries(vg, tmp_path):
    from hsl_demo.evaluate import load_queries

    out = tmp_path / "out"
    counts = write_visual_genome(vg["root"], out, max_rounds=3)
    assert load_jsonl(out / "metadata.jsonl") == load_visual_genome(vg["root"], max_rounds=3)
    queries = load_queries(out / "queries.multi.jsonl")
    assert len(queries) == counts["queries"] == counts["images"]
    assert all(q["mode"] == "multi" and 1 <= len(q["regions"]) <= 3 for q in queries)
    assert not list(out.glob(".*"))  # no temporary leftovers
    # the gallery links exactly the converted images, under their ROOT-relative paths
    gallery = Path(counts["gallery"])
    linked = sorted(p.relative_to(gallery).as_posix() for p in gallery.rglob("*.jpg"))
    assert linked == sorted(vg["images"].values())
    assert all((gallery / rel).resolve() == (Path(vg["root"]) / rel).resolve() for rel in linked)


# ---- errors ----------------------------------------------------------------------------------

def _error(fn, *args, **kwargs) -> str:
    with pytest.raises(HslDemoError) as e:
        fn(*args, **kwargs)
    message = str(e.value)
    assert "\n" not in message
    return message


def test_missing_root_and_files(tmp_path, vg_copy):
    msg = _error(load_visual_genome, tmp_path / "nope")
    assert "nope" in msg and "no such folder" in msg and "region_descriptions.json" in msg
    (Path(vg_copy["root"]) / REGIONS_FILE).unlink()
    msg = _error(load_visual_genome, vg_copy["root"])
    assert REGIONS_FILE in msg and "no such file" in msg


def test_broken_json(vg_copy):
    path = Path(vg_copy["root"]) / REGIONS_FILE
    path.write_text(path.read_text()[:-40])
    msg = _error(load_visual_genome, vg_copy["root"])
    assert str(path) in msg and "not valid JSON" in msg and "line" in msg
    path.write_text('{"regions": []}')
    assert "expected a JSON list" in _error(load_visual_genome, vg_copy["root"])
    (Path(vg_copy["root"]) / IMAGE_DATA_FILE).write_text("[{")
    path.write_text("[]")
    assert IMAGE_DATA_FILE in _error(load_visual_genome, vg_copy["root"])


def test_records_missing_fields(vg_copy):
    path = Path(vg_copy["root"]) / REGIONS_FILE
    entries = json.loads(path.read_text())
    first = entries[0]["id"]
    del entries[0]["regions"][1]["height"]
    path.write_text(json.dumps(entries))
    msg = _error(load_visual_genome, vg_copy["root"])
    assert f"image {first}" in msg and "region 1" in msg and '"height"' in msg
    del entries[0]["id"]
    path.write_text(json.dumps(entries))
    msg = _error(load_visual_genome, vg_copy["root"])
    assert "entry 0" in msg and '"id"' in msg


def test_split_matching_nothing_and_bad_split_lines(vg, tmp_path):
    split = tmp_path / "split.txt"
    split.write_text("5\n6\n")
    msg = _error(load_visual_genome, vg["root"], split_file=split)
    assert str(split) in msg and "none of its 2 image ids" in msg and "5, 6" in msg
    split.write_text("12\nnot-an-id\n")
    assert f"{split}:2" in _error(load_visual_genome, vg["root"], split_file=split)
    assert "no such file" in _error(load_visual_genome, vg["root"], split_file=tmp_path / "absent.txt")


def test_no_images_on_disk(vg_copy, tmp_path):
    root = Path(vg_copy["root"])
    for folder in ("VG_100K", "VG_100K_2"):
        shutil.rmtree(root / folder)
    msg = _error(write_visual_genome, root, tmp_path / "out")
    assert "is on disk" in msg and str(root / "VG_100K") in msg and str(root / "VG_100K_2") in msg
    assert "neither folder exists" in msg
    assert not (tmp_path / "out").exists()


# ---- command line ------------------------------------------------------------------------------

def test_cli_convert(vg, tmp_path):
    out = tmp_path / "out"
    proc = run_cli("convert", "visual-genome", "--root", vg["root"], "--out", str(out),
                   "--split-file", vg["split_file"], "--max-rounds", "3")
    assert proc.returncode == 0, proc.stderr
    records = load_jsonl(out / "metadata.jsonl")
    assert [r["vg_image_id"] for r in records] == [i for i in vg["split_ids"] if i in vg["images"]]
    assert all(len(r["items"]) <= 3 for r in records)
    assert len(load_jsonl(out / "queries.multi.jsonl")) == len(records)
    assert f"converted {len(records)} Visual Genome images" in proc.stdout
    assert "1 not on disk" in proc.stdout
    assert f"hsl-demo index {out / 'images'} --metadata {out / 'metadata.jsonl'} --out CATALOG" in proc.stdout
    assert f"hsl-demo evaluate --catalog CATALOG --queries {out / 'queries.multi.jsonl'}" in proc.stdout


def test_cli_convert_missing_root(tmp_path):
    proc = run_cli("convert", "visual-genome", "--root", str(tmp_path / "nope"), "--out", str(tmp_path / "out"))
    assert_clean_error(proc, "nope", "no such folder")
    assert not (tmp_path / "out").exists()


# ---- end to end: the metadata indexes with one region per kept phrase ---------------------------

def test_metadata_indexes_into_a_catalog(vg, tmp_path, tiny_backbone):
    from hsl_demo.catalog import Catalog
    from hsl_demo.indexing import build_catalog

    out = tmp_path / "out"
    write_visual_genome(vg["root"], out, max_rounds=4)
    records = _by_id(load_jsonl(out / "metadata.jsonl"))
    build_catalog(images_dir=vg["root"], out=tmp_path / "cat", backbone=tiny_backbone,
                  metadata=out / "metadata.jsonl", progress=False)
    cat = Catalog.open(tmp_path / "cat")
    assert {it["id"] for it in cat.items} == set(records)
    per_item = cat.region_mask.sum(1)
    assert [int(per_item[cat.row(i)]) for i in records] == [len(r["items"]) for r in records.values()]
    assert cat.manifest["regions"]["source"] == "box-crops" and cat.manifest["regions"]["per_item"] == 4

    # with a split, the linked gallery indexes just the split's images
    counts = write_visual_genome(vg["root"], tmp_path / "split", split_file=vg["split_file"])
    build_catalog(images_dir=counts["gallery"], out=tmp_path / "cat_split", backbone=tiny_backbone,
                  metadata=counts["metadata"], progress=False)
    split_cat = Catalog.open(tmp_path / "cat_split")
    assert sorted(it["id"] for it in split_cat.items) == sorted(
        f"vg{i}" for i in vg["split_ids"] if i in vg["images"])
    assert all(split_cat.image_path(r).is_file() for r in range(len(split_cat)))


def test_convert_never_replaces_the_data_or_a_foreign_folder(vg, tmp_path):
    root = Path(vg["root"])
    before = sorted(p.name for p in root.iterdir())
    for out in (root, root.parent):  # the data itself, or a folder around it
        with pytest.raises(HslDemoError, match="holds the Visual Genome data"):
            write_visual_genome(root, out)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "thesis.tex").write_text("precious")
    with pytest.raises(HslDemoError, match="not empty"):
        write_visual_genome(root, busy)
    assert (busy / "thesis.tex").read_text() == "precious"
    assert sorted(p.name for p in root.iterdir()) == before
    again = tmp_path / "again"  # an earlier conversion may be replaced
    write_visual_genome(root, again)
    write_visual_genome(root, again)
    assert (again / "metadata.jsonl").is_file()


def test_older_releases_region_id_named_id_as_the_driver_reads_it(vg_copy):
    """visual_genome_python_driver's parse_region_descriptions takes "region_id", else "id"."""
    path = Path(vg_copy["root"]) / REGIONS_FILE
    entries = json.loads(path.read_text())
    for e in entries:
        for g in e["regions"]:
            g["id"] = g.pop("region_id")
    path.write_text(json.dumps(entries))
    records = load_visual_genome(vg_copy["root"])
    ids = {g["id"] for e in entries for g in e["regions"]}
    assert all(it["region_id"] in ids for r in records for it in r["items"])
