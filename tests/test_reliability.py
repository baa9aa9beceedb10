"""Reliability: the bad-input matrix (input, entry point, expected message) as data, and the
fault tests: a run killed mid-way, two writers at once, a catalog spread over several trees
served by the app, hostile image sizes, many threads on one model.

CLI cases run in-process (`cli.main(argv)`); one subprocess test kills a real run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO
from PIL import Image

from hsl_demo import cli
from hsl_demo.catalog import Catalog
from hsl_demo.errors import HslDemoError
from hsl_demo.fileio import output_lock
from hsl_demo.hub import load_backbone
from hsl_demo.indexing import build_catalog


@pytest.fixture(scope="module")
def catalog_dir(small_images, tiny_backbone, tmp_path_factory) -> Path:
    """A small catalog built with the tiny backbone, to copy and break."""
    out = tmp_path_factory.mktemp("reliability") / "catalog"
    build_catalog(small_images / "images", out, tiny_backbone, metadata=small_images / "metadata.jsonl",
                  progress=False, heads={"hsl": catalog_head(tiny_backbone.embed_dim)})
    return out


def catalog_head(embed_dim: int):
    """The HSL head `catalog_dir` was indexed with (the same random blocks every call)."""
    from hsl_demo.models.hsl import HSLHead

    with torch.random.fork_rng():
        torch.manual_seed(0)
        return HSLHead(embed_dim=embed_dim)


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, fragment: str) -> None:
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("hsl-demo: warning")]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("hsl-demo: error: "), err
    assert fragment in lines[0], (fragment, lines[0])
    assert "Traceback" not in err


# ---- the bad-input matrix --------------------------------------------------------------------
@dataclass
class Case:
    """A broken input: `make(tmp, catalog, images)` writes it and returns the CLI argv that reads it."""

    name: str
    make: Callable[[Path, Path, Path], list[str]]
    message: str


def _broken_catalog(edit: Callable[[Path], None]) -> Callable[[Path, Path, Path], list[str]]:
    def make(tmp: Path, catalog: Path, images: Path) -> list[str]:
        broken = tmp / "broken"
        shutil.copytree(catalog, broken)
        edit(broken)
        return ["search", "--catalog", str(broken), "--text", "red cap"]
    return make


def _edit_json(name: str, change: Callable[[object], object]) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        path = folder / name
        path.write_text(json.dumps(change(json.loads(path.read_text()))))
    return edit


def _edit_items(change: Callable[[list[dict]], list[dict]]) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        path = folder / "items.jsonl"
        items = [json.loads(line) for line in path.read_text().splitlines()]
        path.write_text("".join(json.dumps(it) + "\n" for it in change(items)))
    return edit


def _without(key: str) -> Callable[[list[dict]], list[dict]]:
    return lambda items: [{k: v for k, v in it.items() if k != key or i != 3} for i, it in enumerate(items)]


def _index_with_metadata(records: Callable[[list[dict]], list[dict]]):
    def make(tmp: Path, catalog: Path, images: Path) -> list[str]:
        meta = tmp / "meta.jsonl"
        rows = [{"image": f"item{i:02d}.jpg", "id": f"x{i}", "items": [{"box": [0, 0, 10, 10]}]} for i in range(1, 4)]
        meta.write_text("".join(json.dumps(r) + "\n" for r in records(rows)))
        return ["index", str(images), "--metadata", str(meta), "--out", str(tmp / "out")]
    return make


def _queries_not_utf8(tmp: Path, catalog: Path, images: Path) -> list[str]:
    path = tmp / "q.jsonl"
    path.write_bytes(b'{"text": "caf\xe9", "targets": ["p00000"]}\n')
    return ["evaluate", "--queries", str(path)]


def _pickle_tag(tmp: Path, catalog: Path, images: Path) -> list[str]:
    weights = tmp / "weights.bin"
    weights.write_bytes(b"\x80\x04K\x01.")  # a pickle: refused before it is ever read
    return ["search", "--model", f"hsl-demo-tiny:{weights}", "--text", "red cap"]


def _thin_reference(tmp: Path, catalog: Path, images: Path) -> list[str]:
    Image.new("RGB", (100_000, 1), "red").save(tmp / "strip.png")
    return ["search", "--reference", str(tmp / "strip.png"), "--text", "make it blue"]


def _safetensors_that_is_a_pickle(tmp: Path, catalog: Path, images: Path) -> list[str]:
    weights = tmp / "evil.safetensors"
    weights.write_bytes(b"\x80\x04K\x01.")  # a pickle behind a .safetensors name: never unpickled
    return ["search", "--model", f"hsl-demo-tiny:{weights}", "--text", "red cap"]


def _unwritable_out(tmp: Path, catalog: Path, images: Path) -> list[str]:
    return ["index", str(images), "--out", "/proc/hsl-demo-catalog", "--model", "hsl-demo-tiny"]


MATRIX = [
    Case("manifest is a list", _broken_catalog(_edit_json("manifest.json", lambda m: [])), "expected a JSON object"),
    Case("manifest heads not an object", _broken_catalog(_edit_json("manifest.json", lambda m: {**m, "heads": "hsl"})),
         '"heads" must be a JSON object'),
    Case("item without id", _broken_catalog(_edit_items(_without("id"))), 'item 4 has no "id"'),
    Case("item without image", _broken_catalog(_edit_items(_without("image"))), 'item 4 has no "image"'),
    Case("duplicate ids in a catalog", _broken_catalog(_edit_items(lambda its: [its[0], *its[:-1]])), "duplicate id"),
    Case("region_scale of the wrong shape",
         _broken_catalog(lambda f: np.save(f / "region_scale.npy", np.zeros((3, 2), np.float16))),
         "region_scale.npy is (3, 2) float16, expected 12x16"),
    Case("queries file not UTF-8", _queries_not_utf8, "not UTF-8 text"),
    Case("malformed box in --metadata",
         _index_with_metadata(lambda rows: [rows[0], {**rows[1], "items": [{"box": [5, 5, 1, "x"]}]}]),
         "is not [x0, y0, x1, y1]"),
    Case("box with x1 < x0 in --metadata",
         _index_with_metadata(lambda rows: [{**rows[0], "items": [{"box": [50, 0, 10, 10]}]}]),
         "is not [x0, y0, x1, y1]"),
    Case("duplicate ids in --metadata", _index_with_metadata(lambda rows: [rows[0], {**rows[1], "id": "x1"}]),
         "duplicate item id 'x1'"),
    Case("NAME:TAG whose tag is a pickle", _pickle_tag, "only safetensors weights are loaded"),
    Case("a 100000x1 reference", _thin_reference, "too thin to be a photo"),
    Case("a pickle named .safetensors", _safetensors_that_is_a_pickle, "the weights could not be read"),
    Case("--out where nothing can be written", _unwritable_out, "cannot write there"),
    Case("box beyond any number in --metadata",
         _index_with_metadata(lambda rows: [{**rows[0], "items": [{"box": [0, 0, 10**400, 10]}]}]),
         "is not [x0, y0, x1, y1]"),
    Case("manifest heads entry not an object",
         _broken_catalog(_edit_json("manifest.json", lambda m: {**m, "heads": {"hsl": []}})),
         'each entry of "heads" must be a JSON object'),
    Case("model probe not numbers",
         _broken_catalog(_edit_json("manifest.json", lambda m: {**m, "model": {**m["model"], "probe": "abc"}})),
         "model probe is not a list of numbers"),
    Case("regions of another dimension than the index",
         _broken_catalog(lambda f: np.save(f / "regions.npy", np.zeros((12, 16, 7), np.int8))),
         "index.faiss holds 128-d vectors, regions.npy 7-d"),
    Case("item offsets emptied", _broken_catalog(lambda f: (f / "item_offsets.npy").write_bytes(b"")),
         "item_offsets.npy is empty or cut short"),
    Case("embeddings a single number", _broken_catalog(lambda f: np.save(f / "embeds.npy", np.float32(1))),
         "embeds.npy holds a single value, not an array"),
    Case("manifest nested too deeply",
         _broken_catalog(lambda f: (f / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)),
         "nested too deeply"),
]


@pytest.mark.parametrize("case", MATRIX, ids=[c.name for c in MATRIX])
def test_bad_input_matrix_cli(case, catalog_dir, small_images, tmp_path, capsys):
    argv = case.make(tmp_path, catalog_dir, small_images / "images")
    code, _, err = run_main(capsys, *argv)
    assert_one_line_error(code, err, case.message)
    assert not (tmp_path / "out").exists()  # nothing half-written


# ---- hand-edited catalogs: a correct answer or one line, never a traceback --------------------
def _boxes(box) -> Callable[[Path], None]:
    return _edit_items(lambda items: [{**it, "items": [{"box": box, "caption": "x"}]} for it in items])


def _nan_embedding(folder: Path) -> None:
    embeds = np.load(folder / "embeds.npy")
    embeds[0] = np.nan
    np.save(folder / "embeds.npy", embeds)


def _nan_region_scale(folder: Path) -> None:
    scale = np.load(folder / "region_scale.npy")
    scale[:, 0] = np.nan
    np.save(folder / "region_scale.npy", scale)


def _ids_past_the_items(folder: Path) -> None:
    import faiss

    embeds = np.load(folder / "embeds.npy")
    index = faiss.IndexIDMap(faiss.IndexFlatIP(embeds.shape[1]))
    index.add_with_ids(embeds, np.arange(len(embeds), dtype=np.int64) + 1000 * (np.arange(len(embeds)) % 2))
    faiss.write_index(index, str(folder / "index.faiss"))


EDITED = {
    "items holds numbers": _edit_items(lambda items: [{**it, "items": [1, 2]} for it in items]),
    "boxes of strings": _boxes(["a", "b", "c", "d"]),
    "boxes of nested lists": _boxes([[1, 2], [3, 4]]),
    "a NaN box": _boxes([0, 0, float("nan"), 10]),
    "a box with x1 < x0": _boxes([50, 0, 10, 10]),
    "a NaN embedding": _nan_embedding,
    "NaN region scales": _nan_region_scale,
    "index ids past the items": _ids_past_the_items,
}


def test_stored_hsl_features_of_the_wrong_shape_are_one_line(catalog_dir, tiny_backbone, tmp_path):
    """Checked where they are read (describe's store, on first use), not by the catalog, which
    knows no mode's arrays."""
    from hsl_demo.search import Retriever

    broken = tmp_path / "broken"
    shutil.copytree(catalog_dir, broken)
    np.save(broken / "hsl_pooled.npy", np.zeros((12, 5), np.int8))
    retriever = Retriever(tiny_backbone, Catalog.open(broken), hsl=catalog_head(tiny_backbone.embed_dim))
    with pytest.raises(HslDemoError, match=r"hsl_pooled.npy is \(12, 5\) int8, expected 12x2x"):
        retriever.search_text("red cap")


@pytest.mark.parametrize("edit", EDITED, ids=list(EDITED))
def test_hand_edited_catalogs_answer_correctly(edit, catalog_dir, tiny_backbone, tmp_path):
    """Text search, drill-down and the app's marked thumbnails over a catalog edited by hand:
    results with finite scores (what a broken row cannot give is left out), strict JSON."""
    from hsl_demo.models.hsl import HSLHead
    from hsl_demo.search import Retriever
    from hsl_demo.thumbnails import Thumbnails

    broken = tmp_path / "broken"
    shutil.copytree(catalog_dir, broken)
    EDITED[edit](broken)
    retriever = Retriever(tiny_backbone, Catalog.open(broken), hsl=HSLHead(embed_dim=tiny_backbone.embed_dim))
    thumbnails = Thumbnails(tmp_path / "thumbs")
    text = retriever.search_text("red striped t-shirt", k=5).results
    rounds = retriever.search_multi(["a red scarf", "white sneakers"], k=5)
    for results in (text, rounds[-1].results):
        assert results and all(np.isfinite(r.score) for r in results), edit
        json.dumps([r.to_dict() for r in results], allow_nan=False)
        for r in results:
            assert Path(thumbnails.marked(r.image, r.marks)).is_file()
    if edit == "a NaN embedding":
        assert retriever.catalog.items[0]["id"] not in [r.id for r in text]
    if edit == "index ids past the items":
        assert len(text) == 5  # the rows the index names rightly


def test_a_big_endian_catalog_array_is_a_one_line_error(catalog_dir, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(catalog_dir, broken)
    np.save(broken / "region_scale.npy", np.load(broken / "region_scale.npy").astype(">f2"))
    code, _, err = run_main(capsys, "search", "--catalog", str(broken), "--text", "red cap")
    assert_one_line_error(code, err, "region_scale.npy is")


def test_an_empty_shard_with_an_hsl_head_is_skipped(demo_backbone, tmp_path):
    """A shard whose photos are all unreadable adds no rows (it crashed the HSL image side)."""
    from hsl_demo.search import load_heads

    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.jpg", "b.jpg"):
        shutil.copy(REPO / "assets/demo/products/images/p00000.jpg", images / name)
    for name in ("c.jpg", "d.jpg"):
        (images / name).write_text("not an image")
    summary = build_catalog(images, tmp_path / "catalog", demo_backbone, progress=False, shard_size=2,
                            heads=load_heads(demo_backbone))
    assert len(summary["skipped"]) == 2 and len(Catalog.open(tmp_path / "catalog")) == 2


def test_the_cli_escapes_control_characters_of_catalog_records(catalog_dir, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(catalog_dir, broken)
    _edit_items(lambda items: [{**it, "title": "evil\x1b[31m\nforged line"} for it in items])(broken)
    from hsl_demo.search import Retriever

    with pytest.raises(HslDemoError, match="catalog must be a name or a folder, not int"):
        Retriever.from_pretrained(catalog=123)
    from hsl_demo.query import printable

    assert printable("evil\x1b[31m\nforged") == "evil\\x1b[31m\\nforged"


def test_search_prints_catalog_ids_and_titles_with_control_characters_escaped(tmp_path, capsys):
    """`hsl-demo search` itself (text and JSON): an ANSI escape or a newline in a catalog's
    title or id is shown escaped on the terminal, never sent raw (it could restyle the
    terminal or forge a line of output); --json keeps the record as it is, strict JSON."""
    from hsl_demo.defaults import CATALOGS_DIR

    edited = tmp_path / "products"
    shutil.copytree(CATALOGS_DIR / "products", edited)
    _edit_items(lambda items: [{**it, "id": it["id"] + "\x07", "title": "evil\x1b[31m\nforged line"}
                               for it in items])(edited)
    code, out, err = run_main(capsys, "search", "--catalog", str(edited), "--text", "green dotted scarf", "-k", "2")
    assert code == 0, err
    assert "\x1b" not in out and "\x07" not in out
    lines = out.strip().splitlines()
    assert len(lines) == 2 and all(ln.endswith("evil\\x1b[31m\\nforged line") and "\\x07" in ln for ln in lines), out
    code, out, err = run_main(capsys, "search", "--catalog", str(edited), "--text", "green dotted scarf", "-k", "2",
                              "--json")
    assert code == 0 and json.loads(out)[0]["title"] == "evil\x1b[31m\nforged line"


# ---- index --out never deletes what it did not write ---------------------------------------
def test_index_refuses_an_out_folder_it_did_not_write(small_images, tmp_path, capsys):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("my notes")
    code, _, err = run_main(capsys, "index", str(small_images / "images"), "--out", str(notes),
                            "--model", "hsl-demo-tiny")
    assert_one_line_error(code, err, "is not a catalog written by hsl-demo (it holds todo.txt)")
    assert (notes / "todo.txt").read_text() == "my notes"


@pytest.mark.parametrize("where", ["the images folder", "its parent", "inside it"])
def test_index_refuses_an_out_that_is_holds_or_lies_in_the_images(small_images, tmp_path, capsys, where):
    images = tmp_path / "photos" / "images"
    shutil.copytree(small_images / "images", images)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    out = {"the images folder": images, "its parent": images.parent, "inside it": images / "catalog"}[where]
    code, _, err = run_main(capsys, "index", str(images), "--out", str(out), "--model", "hsl-demo-tiny")
    assert_one_line_error(code, err, "images folder")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_index_replaces_its_own_catalog_and_cleans_a_killed_runs_leftovers(small_images, catalog_dir, tmp_path,
                                                                         capsys):
    out = tmp_path / "catalog"
    shutil.copytree(catalog_dir, out)
    (tmp_path / ".catalog.tmp-abc123").mkdir()
    (tmp_path / ".catalog.tmp-abc123" / "regions.npy").write_bytes(b"half")
    (tmp_path / ".catalog.lock").write_text("")  # a killed run's lock file, no longer held
    keep = tmp_path / ".other.tmp-xyz"  # someone else's output: not ours to clean
    keep.mkdir()
    code, out_text, err = run_main(capsys, "index", str(small_images / "images"), "--out", str(out),
                                   "--model", "hsl-demo-tiny")
    assert code == 0, err
    assert "removed .catalog.tmp-abc123, left behind by an interrupted run" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.tmp-xyz", "catalog"]
    assert len(Catalog.open(out)) == 12


def test_a_catalog_moved_aside_by_a_killed_run_is_restored(catalog_dir, tmp_path):
    moved = tmp_path / ".catalog.old-4242"  # killed between the two renames: no catalog, the old one aside
    shutil.copytree(catalog_dir, moved)
    (tmp_path / ".catalog.tmp-zz").mkdir()
    with output_lock(tmp_path / "catalog") as notes:
        assert notes == ["restored catalog from an interrupted run (.catalog.old-4242)",
                         "removed .catalog.tmp-zz, left behind by an interrupted run"]
    assert len(Catalog.open(tmp_path / "catalog")) == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catalog"]


def test_a_file_put_into_the_catalog_during_the_run_is_kept(small_images, catalog_dir, tmp_path, monkeypatch, capsys):
    from hsl_demo import indexing

    out = tmp_path / "catalog"
    shutil.copytree(catalog_dir, out)
    encode = indexing.mapper.region_features_for

    def meanwhile(*args, **kwargs):
        (out / "thesis.docx").write_text("my thesis")
        return encode(*args, **kwargs)

    monkeypatch.setattr(indexing.mapper, "region_features_for", meanwhile)
    code, _, err = run_main(capsys, "index", str(small_images / "images"), "--out", str(out), "--model",
                            "hsl-demo-tiny")
    last = err.strip().splitlines()[-1]  # after the progress bars of the encoding
    assert code == 2 and "Traceback" not in err
    assert last.startswith("hsl-demo: error: ")
    assert "is not a catalog written by hsl-demo (it holds thesis.docx)" in last
    assert (out / "thesis.docx").read_text() == "my thesis" and (out / "manifest.json").is_file()
    # no temporary folder left; the encoded shards are kept, for a run once the folder is cleared
    assert "the encoded shards are kept in" in last
    assert sorted(p.name for p in tmp_path.iterdir()) == [".catalog.shards", "catalog"]


def test_a_folder_named_like_a_catalog_file_is_not_one(small_images, catalog_dir, tmp_path, capsys):
    out = tmp_path / "catalog"
    shutil.copytree(catalog_dir, out)
    (out / "hsl_mask.npy").unlink()
    (out / "hsl_mask.npy").mkdir()
    (out / "hsl_mask.npy" / "notes.txt").write_text("precious")
    code, _, err = run_main(capsys, "index", str(small_images / "images"), "--out", str(out), "--model",
                            "hsl-demo-tiny")
    assert_one_line_error(code, err, "(it holds hsl_mask.npy)")
    assert (out / "hsl_mask.npy" / "notes.txt").read_text() == "precious"


def test_make_demo_catalog_never_replaces_what_it_did_not_write(tmp_path, capsys):
    (tmp_path / "products").mkdir()
    (tmp_path / "products" / "mine.txt").write_text("mine")
    code, _, err = run_main(capsys, "make-demo-catalog", "--out", str(tmp_path), "--looks", "1")
    assert_one_line_error(code, err, "is not a demo catalog written by hsl-demo (it holds mine.txt)")
    assert (tmp_path / "products" / "mine.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["products"]


def test_two_writers_of_one_catalog_the_second_is_told_it_is_in_use(small_images, tmp_path, capsys):
    out = tmp_path / "catalog"
    with output_lock(out):  # another run holds it
        code, _, err = run_main(capsys, "index", str(small_images / "images"), "--out", str(out),
                                "--model", "hsl-demo-tiny")
    assert_one_line_error(code, err, "is in use: another hsl-demo run is writing it")
    assert not out.exists()
    code, _, err = run_main(capsys, "index", str(small_images / "images"), "--out", str(out),
                            "--model", "hsl-demo-tiny")
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catalog"]


@pytest.mark.slow
def test_index_killed_mid_run_then_run_again(small_images, tmp_path):
    """A real `hsl-demo index` killed with SIGKILL: the next run succeeds and leaves no litter."""
    images = tmp_path / "images"
    images.mkdir()
    for i in range(300):  # enough work to be killed in the middle of it
        shutil.copy(small_images / "images" / f"item{1 + i % 11:02d}.jpg", images / f"{i:03d}.jpg")
    out = tmp_path / "catalog"
    argv = [sys.executable, "-m", "hsl_demo", "index", str(images), "--out", str(out), "--model", "hsl-demo-tiny",
            "--batch-size", "8"]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not (tmp_path / ".catalog.lock").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catalog", "images"]
    assert len(Catalog.open(out)) == 300


# ---- hostile image sizes ------------------------------------------------------------------
MEMORY_PROBE = """
import gc, sys
from PIL import Image
from hsl_demo.hub import load_backbone
from hsl_demo.errors import HslDemoError
from hsl_demo.images import open_image
backbone = load_backbone(device="cpu")
backbone.encode_images([Image.new("RGB", (128, 128))])
def megabytes(key):
    return int(next(ln for ln in open("/proc/self/status") if ln.startswith(key)).split()[1]) // 1024
for path in sys.argv[1:]:
    gc.collect()
    open("/proc/self/clear_refs", "w").write("5")  # restart the peak-RSS count (VmHWM) from here
    idle = megabytes("VmRSS:")
    try:
        backbone.encode_images([open_image(path)])
        outcome = "accepted"
    except HslDemoError as e:
        outcome = "refused: " + str(e)
    print(megabytes("VmHWM:") - idle, outcome)
"""


@pytest.fixture(scope="module")
def hostile_images(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hostile")
    # plain colours: cheap to write, and they decode to exactly as many pixels as a photo
    rgba = Image.new("RGBA", (5100, 5100), (200, 30, 30, 255))
    exif = rgba.getexif()
    exif[0x0112] = 6  # rotated: the transpose must not copy the full-size image
    rgba.save(root / "rgba-25mp-rotated.png", compress_level=1, exif=exif)
    Image.new("I;16", (6000, 6000), 40000).save(root / "grey16-36mp.png", compress_level=1)
    Image.new("RGB", (6400, 6250), "white").save(root / "rgb-40mp.png", compress_level=1)
    Image.new("RGB", (100_000, 1)).save(root / "strip-100000x1.png")
    # WebP decodes through full-size buffers of its own (about 16 bytes a pixel): budgeted apart
    Image.new("RGB", (5000, 5000), "navy").save(root / "webp-25mp.webp")
    Image.new("RGB", (2400, 2400), "navy").save(root / "webp-6mp.webp")
    return {p.stem: p for p in root.iterdir()}


@pytest.mark.slow
def test_any_accepted_image_costs_under_200_mb(hostile_images):
    """Open + encode each hostile image in a fresh model process: what is accepted stays under
    200 MB above idle (a 100000x1 strip used to cost 2.4 GB), the rest is refused up front."""
    expected = {"rgba-25mp-rotated": "accepted", "grey16-36mp": "accepted", "rgb-40mp": "refused: ",
                "strip-100000x1": "refused: ", "webp-25mp": "refused: ", "webp-6mp": "accepted"}
    proc = subprocess.run([sys.executable, "-c", MEMORY_PROBE, *(str(hostile_images[n]) for n in expected)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for name, line in zip(expected, proc.stdout.strip().splitlines()):
        peak_mb, outcome = line.split(" ", 1)
        assert outcome.startswith(expected[name]), (name, outcome)
        assert int(peak_mb) < 200, (name, peak_mb)


def test_index_skips_a_thin_strip_and_lists_why(small_images, tiny_backbone, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(small_images / "images", images)
    Image.new("RGB", (100_000, 1)).save(images / "strip.png")
    summary = build_catalog(images, tmp_path / "cat", tiny_backbone, progress=False)
    assert summary["count"] == 12
    assert summary["skipped"] == [{"file": "strip.png",
                                   "reason": "100000x1 pixels is too thin to be a photo (aspect ratio beyond 20:1)"}]


def test_reduced_images_keep_their_boxes_in_place(tiny_backbone):
    """A photo reduced on opening crops the same product as the full-size photo."""
    from hsl_demo.features import box_crops
    from hsl_demo.images import WORK_PIXELS, open_image

    big = Image.new("RGB", (4000, 3000), "white")
    big.paste(Image.new("RGB", (600, 600), "red"), (3000, 2000))
    opened = open_image(big)
    assert opened.size[0] * opened.size[1] <= WORK_PIXELS and opened.info["source_size"] == (4000, 3000)
    crop = box_crops(opened, [[3000, 2000, 3600, 2600]], margin=0)[0]
    assert np.asarray(crop).reshape(-1, 3).mean(0).round().tolist() == [255, 0, 0]


# ---- one model, many threads -------------------------------------------------------------
def test_backbone_from_many_threads_matches_serial_calls(demo_backbone):
    from hsl_demo.images import open_image

    images = [open_image(REPO / f"assets/demo/products/images/p{i:05d}.jpg") for i in range(6)]
    texts = ["red cap", "green dotted scarf", "white sneaker", "blue striped t-shirt"]
    serial_images = [demo_backbone.image_features([im]).tokens.numpy() for im in images]
    serial_texts = [demo_backbone.text_features([t]).tokens.numpy() for t in texts]

    def call(i: int) -> bool:
        image = demo_backbone.image_features([images[i % 6]]).tokens.numpy()
        text = demo_backbone.text_features([texts[i % 4]]).tokens.numpy()
        return np.allclose(image, serial_images[i % 6], atol=1e-5) and np.allclose(text, serial_texts[i % 4],
                                                                                   atol=1e-5)

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(call, range(96)))
    # the shared model itself is untouched: open_clip's own encoders still return one tensor
    assert not isinstance(demo_backbone.model.encode_image(demo_backbone.images_to_tensor(images[:1])), tuple)


def test_retriever_from_many_threads_matches_serial_calls(demo_backbone):
    from hsl_demo.search import Retriever, load_heads

    retriever = Retriever(demo_backbone, Catalog.open("products"), **load_heads(demo_backbone))
    queries = ["red cap", "green dotted scarf", "white plain sneaker", "a backpack in blue with checks"]
    serial = {q: [(r.id, r.score) for r in retriever.search_text(q, k=5)] for q in queries}
    with ThreadPoolExecutor(6) as pool:
        found = list(pool.map(lambda i: (queries[i % 4], retriever.search_text(queries[i % 4], k=5)), range(48)))
    for q, results in found:
        assert [r.id for r in results] == [i for i, _ in serial[q]]
        assert np.allclose([r.score for r in results], [s for _, s in serial[q]], atol=1e-5)


# ---- Python API: wrong types are clear errors ------------------------------------------
@pytest.mark.parametrize("call, message", [
    (lambda r: r.search_text(123), "the query must be a string, not int"),
    (lambda r: r.search_text(None), "empty query"),
    (lambda r: r.search_composed(None, "make it blue"), "reference must be a catalog item id, an image file"),
    (lambda r: r.search_composed("p00000", 7), "the modification text must be a string, not int"),
    (lambda r: r.search_multi("a red handbag"), "regions must be a list of strings"),
    (lambda r: r.session().add(3.5), "a region query must be a string, not float"),
    (lambda r: r.search_composed(Image.new("RGB", (0, 0)), "blue"), "an empty image"),
])
def test_python_api_wrong_types_are_clear_errors(products_all_heads, call, message):
    with pytest.raises(HslDemoError, match=message):
        call(products_all_heads)
    assert products_all_heads.search_text("red cap", k=1)[0].title.startswith("Red")


# ---- portable manifests ------------------------------------------------------------------
def test_shipped_manifests_and_cards_hold_no_builders_path():
    shipped = [*REPO.glob("assets/catalogs/*/manifest.json"), *REPO.glob("checkpoints/demo/*/*.json"),
               *REPO.glob("checkpoints/demo/*/README.md")]
    assert shipped
    for path in shipped:
        assert str(REPO) not in path.read_text(), path
    assert json.loads((REPO / "assets/catalogs/products/manifest.json").read_text())["model"]["id"] == \
        "checkpoints/demo"


def test_a_catalog_records_the_model_portably(demo_backbone, tiny_backbone, tmp_path, catalog_dir):
    assert demo_backbone.portable_id == "checkpoints/demo"
    assert tiny_backbone.portable_id == "hsl-demo-tiny"
    from hsl_demo.backbone import save_backbone

    folder = tmp_path / "deep" / "my-model"
    save_backbone(tiny_backbone.model, json.loads((REPO / "hsl_demo/model_configs/hsl-demo-tiny.json").read_text()),
                  folder)
    assert load_backbone(str(folder), device="cpu").portable_id == "my-model"
    from safetensors.torch import save_file

    weights = tmp_path / "deep" / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_backbone.model.state_dict().items()}, weights)
    assert load_backbone(f"hsl-demo-tiny:{weights}", device="cpu").portable_id == "hsl-demo-tiny:tiny.safetensors"
    assert Catalog.open(catalog_dir).manifest["model"]["id"] == "hsl-demo-tiny"


def test_a_model_mismatch_error_names_no_builders_path(demo_backbone, catalog_dir):
    from hsl_demo.search import Retriever

    with pytest.raises(HslDemoError) as err:
        Retriever(demo_backbone, Catalog.open(catalog_dir))
    assert "indexed with model 'hsl-demo-tiny'" in str(err.value)
    assert str(REPO) not in str(err.value).split("not with")[0]


# ---- the app serves catalog images and nothing else -----------------------------------
@pytest.fixture(scope="module")
def scattered_app(small_images, tiny_backbone, tmp_path_factory):
    """A catalog whose photos live in two separate trees plus one behind a symlink out of them,
    with a secret planted next to the photos; served by the app over HTTP."""
    from hsl_demo.search import Retriever
    from hsl_demo.ui import serve

    root = tmp_path_factory.mktemp("scattered")
    tree_a, tree_b, elsewhere, listing = root / "a" / "pics", root / "b" / "pics", root / "c", root / "catalog-src"
    for folder in (tree_a, tree_b, elsewhere, listing):
        folder.mkdir(parents=True)
    sources = sorted((small_images / "images").glob("*.jpg"))
    for i, src in enumerate(sources):
        target = (tree_a if i % 2 else tree_b) / src.name
        if i == 0:
            target = elsewhere / src.name
        shutil.copy(src, target)
        (listing / src.name).symlink_to(target)
    (tree_a / "secret.txt").write_text("TOP SECRET next to the images")
    (listing / "secret.png").symlink_to(tree_a / "secret.txt")  # a link out to a non-image: skipped
    catalog = tmp_path_factory.mktemp("scattered-cat") / "catalog"
    summary = build_catalog(listing, catalog, tiny_backbone, progress=False)
    assert [s["file"] for s in summary["skipped"]] == ["secret.png"]
    retriever = Retriever(tiny_backbone, Catalog.open(catalog))
    demo = serve(retriever, retriever, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    yield demo, tree_a
    demo.close()


def test_the_app_serves_catalog_images_and_nothing_else(scattered_app):
    import httpx
    from gradio_client import Client

    demo, tree_a = scattered_app
    base = demo.local_url.rstrip("/")
    client = Client(demo.local_url, verbose=False, download_files=False)
    image_url = client.predict("red cap", 3, api_name="/describe")[0][0]["image"]["url"]
    shown = httpx.get(image_url)
    assert shown.status_code == 200 and shown.headers["content-type"].startswith("image/")
    forbidden = ["/etc/passwd", str(REPO / "hsl_demo" / "ui.py"), str(REPO / "app.py"),
                 str(REPO / "checkpoints" / "demo" / "open_clip_config.json"),
                 str(REPO / "checkpoints" / "demo" / "open_clip_model.safetensors"),
                 str(tree_a / "secret.txt"), str(next(tree_a.glob("*.jpg"))), str(tree_a), "/"]
    for path in forbidden:
        response = httpx.get(f"{base}/gradio_api/file={path}")
        assert response.status_code in (403, 404), (path, response.status_code)
        assert "SECRET" not in response.text


def test_web_api_bad_k_is_a_message_without_a_server_traceback(served_products, capfd):
    from gradio_client import Client

    client = Client(served_products.local_url, verbose=False)
    capfd.readouterr()
    for k, message in [(None, "must be a number from 1 to 50"), ("many", "must be a number from 1 to 50"),
                       (1000, "must be from 1 to 50"), (0, "must be from 1 to 50")]:
        with pytest.raises(Exception, match=message):
            client.predict("red cap", k, api_name="/describe")
    assert "Traceback" not in capfd.readouterr().err
    assert len(client.predict("red cap", 3, api_name="/describe")[0]) == 3


def test_web_upload_of_a_thin_strip_is_a_message(served_products, tmp_path):
    from gradio_client import Client, handle_file

    Image.new("RGB", (100_000, 1), "red").save(tmp_path / "strip.png")
    client = Client(served_products.local_url, verbose=False)
    with pytest.raises(Exception, match="too thin to be a photo"):
        client.predict(handle_file(str(tmp_path / "strip.png")), "", "make it blue", 5, api_name="/modify")
    assert len(client.predict(None, "p00000", "make it blue", 3, api_name="/modify")[0]) == 3


@pytest.fixture(scope="module")
def served_products(served_demo):
    return served_demo[0]


def test_catalog_open_errors_are_hsl_demo_errors(catalog_dir, tmp_path):
    """The same checks in the Python API: Catalog.open raises HslDemoError, never KeyError."""
    broken = tmp_path / "c"
    shutil.copytree(catalog_dir, broken)
    (broken / "manifest.json").write_text("[]")
    with pytest.raises(HslDemoError, match="expected a JSON object"):
        Catalog.open(broken)
    assert os.listdir(broken)  # nothing deleted
