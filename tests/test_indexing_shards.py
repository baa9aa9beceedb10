"""`hsl-demo index` in shards: an interrupted run resumes from its finished shards, the catalog
is the same as one built in a single go, and the shard folder is only ever removed when the
tool wrote it."""

import json
import re
import shutil

import numpy as np
import pytest
from conftest import counting_shards, run_cli

from hsl_demo import indexing
from hsl_demo.catalog import Catalog
from hsl_demo.errors import HslDemoError
from hsl_demo.indexing import StageTimes, build_catalog


class Interrupted(RuntimeError):  # a crash or a kill mid-run (not bad input)
    pass


def counting(monkeypatch, stop_after: int | None = None) -> list[int]:
    return counting_shards(monkeypatch, stop_after, Interrupted)


def test_an_interrupted_index_resumes_from_its_finished_shards(small_images, tiny_backbone, tmp_path, monkeypatch):
    images, meta = small_images / "images", small_images / "metadata.jsonl"
    whole = tmp_path / "whole"
    build_catalog(images, whole, tiny_backbone, metadata=meta, progress=False)  # one shard
    out = tmp_path / "sharded"
    first = counting(monkeypatch, stop_after=2)
    with pytest.raises(Interrupted):
        build_catalog(images, out, tiny_backbone, metadata=meta, progress=False, shard_size=5)
    shards = tmp_path / ".sharded.shards"
    assert first == [5, 5] and not out.exists()
    assert sorted(p.name for p in shards.iterdir()) == ["plan.json", "shard-00000", "shard-00001"]

    again = counting(monkeypatch)
    times = StageTimes()
    summary = build_catalog(images, out, tiny_backbone, metadata=meta, progress=False, shard_size=5, times=times)
    assert again == [2] and summary["resumed_shards"] == 2  # only the last shard was encoded
    assert not shards.exists() and times.images == 2 and times.seconds["forward"] > 0
    a, b = Catalog.open(out), Catalog.open(whole)
    assert [i["id"] for i in a.items] == [i["id"] for i in b.items] and len(a) == 12
    assert np.abs(a.embeddings - b.embeddings).max() < 1e-5
    assert np.array_equal(a.regions, b.regions) and np.array_equal(a.region_mask, b.region_mask)


def test_shards_of_other_images_are_not_reused(small_images, tiny_backbone, tmp_path, monkeypatch):
    images = tmp_path / "images"
    shutil.copytree(small_images / "images", images)
    out = tmp_path / "cat"
    counting(monkeypatch, stop_after=1)
    with pytest.raises(Interrupted):
        build_catalog(images, out, tiny_backbone, progress=False, shard_size=5)
    (images / "item05.jpg").unlink()  # the folder changed: the kept shard is of other images
    again = counting(monkeypatch)
    summary = build_catalog(images, out, tiny_backbone, progress=False, shard_size=5)
    assert again == [5, 5, 1] and summary["resumed_shards"] == 0 and summary["count"] == 11


def test_a_shard_folder_it_did_not_write_is_left_alone(small_images, tiny_backbone, tmp_path):
    foreign = tmp_path / ".cat.shards"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(HslDemoError, match="not an hsl-demo shard folder"):
        build_catalog(small_images / "images", tmp_path / "cat", tiny_backbone, progress=False)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_a_shard_link_is_refused_and_kept(small_images, tiny_backbone, tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / ".cat.shards").symlink_to(target)
    with pytest.raises(HslDemoError, match="a link or a file"):
        build_catalog(small_images / "images", tmp_path / "cat", tiny_backbone, progress=False)
    assert (tmp_path / ".cat.shards").is_symlink() and target.is_dir()


def test_a_taken_id_is_skipped_and_input_with_nothing_readable_leaves_no_shards(small_images, tiny_backbone,
                                                                               tmp_path):
    meta = tmp_path / "meta.jsonl"  # item04.jpg takes the id item05.jpg gets by default
    meta.write_text('{"image": "item04.jpg", "id": "item05"}\n')
    summary = build_catalog(small_images / "images", tmp_path / "cat", tiny_backbone, metadata=meta, progress=False,
                            shard_size=3)
    assert summary["count"] == 11
    assert summary["skipped"] == [{"file": "item05.jpg",
                                   "reason": "duplicate item id 'item05' (an earlier image has it)"}]

    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("a.jpg", "b.jpg", "c.png"):
        (broken / name).write_bytes(b"not an image")
    with pytest.raises(HslDemoError, match=r"none of the 3 images could be read \(3x not an image"):
        build_catalog(broken, tmp_path / "none", tiny_backbone, progress=False, shard_size=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "cat", "meta.jsonl"]


def test_profile_prints_where_the_time_went(small_images, tmp_path):
    proc = run_cli("index", str(small_images / "images"), "--out", str(tmp_path / "cat"), "--model", "hsl-demo-tiny",
                   "--shard-size", "4", "--profile")
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("profile: "))
    assert "12 images in" in line and all(f"{stage} " in line for stage in indexing.shards.PROFILE_STAGES)
    assert re.search(r"\(\d+ img/s, \d+ img/s after the first shard\)", line), line  # 3 shards of 4


def test_the_steady_rate_leaves_out_the_first_shard():
    times = StageTimes()
    assert times.steady_rate() is None
    for seconds, images in ((30.0, 100), (2.0, 100), (2.0, 100)):  # the first carries the start-up
        times.shard_done(images, seconds)
    assert times.steady_rate() == 50.0
    times.workers = 2  # two Ray workers encoding at once: their per-shard seconds overlap
    assert times.steady_rate() == 100.0


def test_the_build_picks_the_smallest_nprobe_that_finds_the_exact_top_10():
    """autofaiss-style: the IVF stage's 200 candidates must hold 98 % of the exact top 10 of
    sampled catalog vectors; nprobe is the smallest power of two that does (here, on clustered
    vectors, well below the lists' count), and the recall it reports is what a search gets."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(64, 32)).astype(np.float32)
    vectors = centres[rng.integers(0, 64, 20_000)] + 0.35 * rng.normal(size=(20_000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    shards = [vectors[:7_000], vectors[7_000:]]
    index, _, _ = indexing.build_index_from_shards(shards, "IVF256,Flat")
    nprobe, recall = indexing.tune_nprobe_on_shards(index, shards)
    assert recall >= indexing.NPROBE_RECALL and 1 < nprobe < 256
    exact = indexing.policy._exact_top(shards, vectors[:300], 10)  # a list of blocks is an iterable of them
    _, flat = __import__("faiss").knn(vectors[:300], vectors, 10)
    assert (exact == flat).mean() > 0.99  # the shard-by-shard exact search is the exact search
    index.nprobe = nprobe // 2
    _, fewer = index.search(vectors[:300], 200)
    lower = np.mean([len(set(e) & set(f)) / 10 for e, f in zip(exact.tolist(), fewer.tolist())])
    assert lower < recall  # half as many lists find less: the smallest that reaches the target


@pytest.mark.parametrize("codes", ["flat", "fast-scan"])
def test_large_catalogs_get_a_region_index_that_drill_down_takes_its_candidates_from(small_images, tiny_backbone,
                                                                                      tmp_path, monkeypatch, codes):
    """Above REGION_INDEX_ITEMS a catalog keeps its regions in a FAISS index (regions.faiss, id =
    row * regions per item + region), and drill-down's candidates come from it, not from the
    whole-image embeddings. Here 12 items are "large"; "fast-scan": the 4-bit codes large
    catalogs get (approximate: the catalog orders their hits by its stored regions)."""
    from hsl_demo import search
    from hsl_demo.features import dequantize

    if codes == "fast-scan":
        assert indexing.region_index_spec(16_000_000, 128).endswith(",PQ64x4fs")
        monkeypatch.setattr(indexing.policy, "region_index_spec", lambda n, dim: f"IVF2,PQ{dim // 2}x4fs")
    build_catalog(small_images / "images", tmp_path / "cat", tiny_backbone, shard_size=5, progress=False,
                  limits=indexing.IndexLimits(region_index_items=5))
    cat = Catalog.open(tmp_path / "cat")
    entry, per_item = cat.manifest["region_index"], cat.regions.shape[1]
    assert (tmp_path / "cat" / "regions.faiss").is_file() and entry["vectors"] == int(cat.region_mask.sum())
    assert entry["index"].startswith("IVF") and entry["nprobe_recall"] >= indexing.NPROBE_RECALL
    assert ("x4fs" in entry["index"]) == (codes == "fast-scan")
    region = dequantize(np.asarray(cat.regions[7:8, 3]), np.asarray(cat.region_scale[7:8, 3])).numpy()
    _, ids = cat.region_index.search(region, 1)
    assert ids[0][0] == 7 * per_item + 3  # the ids name the row and the region
    assert cat.region_candidates(region, 4)[0] == 7

    edited = tmp_path / "edited"  # a region index its manifest does not describe (copied from elsewhere)
    shutil.copytree(tmp_path / "cat", edited)
    manifest = json.loads((edited / "manifest.json").read_text())
    manifest["region_index"]["vectors"] += 1
    (edited / "manifest.json").write_text(json.dumps(manifest))
    opened = Catalog.open(edited)  # read on first use: only drill-down needs it
    with pytest.raises(HslDemoError, match="regions.faiss is not the IVF index of this catalog's"):
        opened.region_candidates(region, 4)

    monkeypatch.setattr(Catalog, "search", lambda *a: pytest.fail("drill-down fell back to the global index"))
    retriever = search.Retriever(tiny_backbone, cat, cache_items=0)  # the large-catalog path
    rounds = retriever.search_multi(["a red cap", "a blue scarf"], k=3)
    assert [len(r.results) for r in rounds] == [3, 3]


def test_a_removal_that_was_stopped_is_finished_by_the_next_run(small_images, tiny_backbone, tmp_path):
    """Shards are removed by a rename then a delete: a run stopped while deleting leaves
    `.OUT.shards.trash-PID`, which the next run of that output removes."""
    leftover = tmp_path / ".cat.shards.trash-12345" / "shard-00001"
    leftover.mkdir(parents=True)
    build_catalog(small_images / "images", tmp_path / "cat", tiny_backbone, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat"]
