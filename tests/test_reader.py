"""`hsl-demo index` on packed input: Parquet files of image bytes and metadata columns, and
WebDataset tar shards, give the catalog a folder of the same images gives (ids from their
metadata), keep a copy of each image for the app to show, skip and list bad rows, resume, and
refuse what they cannot read in one line."""

import io
import json
import tarfile

import numpy as np
import pytest
from conftest import assert_clean_error, counting_shards, run_cli

from hsl_demo import cli
from hsl_demo.catalog import Catalog
from hsl_demo.errors import HslDemoError
from hsl_demo.indexing import build_catalog
from hsl_demo.reader import open_source

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def _photos(small_images) -> list[tuple[dict, bytes]]:
    """The 12 small photos' metadata records and bytes, in the folder catalog's order."""
    records = [json.loads(line) for line in (small_images / "metadata.jsonl").read_text().splitlines()]
    records.sort(key=lambda r: r["image"])
    return [(r, (small_images / "images" / r["image"]).read_bytes()) for r in records]


def _write_parquet(path, photos, hf_struct: bool = False, row_group_size: int = 4) -> None:
    images = [{"bytes": data, "path": r["image"]} for r, data in photos] if hf_struct else [d for _, d in photos]
    table = pa.table({"image": images, "id": [r["id"] for r, _ in photos], "title": [r["title"] for r, _ in photos],
                      "color": [r["color"] for r, _ in photos]})
    pq.write_table(table, path, row_group_size=row_group_size)


def _write_tar(path, samples: list[tuple[str, dict[str, bytes]]]) -> None:
    with tarfile.open(path, "w") as tar:
        for key, members in samples:
            for extension, data in members.items():
                info = tarfile.TarInfo(f"{key}.{extension}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def folder_catalog(small_images, tiny_backbone, tmp_path_factory):
    out = tmp_path_factory.mktemp("folder") / "catalog"
    build_catalog(small_images / "images", out, tiny_backbone, metadata=small_images / "metadata.jsonl",
                  progress=False)
    return Catalog.open(out)


def _same_catalog(packed: Catalog, folder: Catalog, photos) -> None:
    """Same ids, titles and embeddings as the folder's catalog; each image kept inside the
    catalog, byte for byte."""
    assert [it["id"] for it in packed.items] == [it["id"] for it in folder.items]
    assert [it["title"] for it in packed.items] == [it["title"] for it in folder.items]
    assert np.abs(packed.embeddings - folder.embeddings).max() < 1e-5
    assert np.array_equal(np.asarray(packed.regions), np.asarray(folder.regions))
    by_id = {r["id"]: data for r, data in photos}
    for row, item in enumerate(packed.items):
        path = packed.image_path(row)
        assert path.is_relative_to(packed.root.resolve() / "images") and path.read_bytes() == by_id[item["id"]]


def test_parquet_files_give_the_folders_catalog_and_keep_the_images(small_images, tiny_backbone, folder_catalog,
                                                                    tmp_path, monkeypatch):
    photos = _photos(small_images)
    data = tmp_path / "data"
    data.mkdir()
    _write_parquet(data / "part-0.parquet", photos[:7])  # row groups of 4: shards cut across them
    _write_parquet(data / "part-1.parquet", photos[7:], hf_struct=True)  # a Hugging Face Image column
    source = open_source(data)
    assert source.kind == "parquet" and source.count == 12
    assert [s["count"] for s in source.shards(5)] == [5, 2, 5]  # a shard never crosses a file

    # interrupted after two shards, then resumed: only the third is encoded
    counting_shards(monkeypatch, stop_after=2)
    out = tmp_path / "catalog"
    with pytest.raises(KeyboardInterrupt):
        build_catalog(data, out, tiny_backbone, progress=False, shard_size=5)
    resumed = counting_shards(monkeypatch)
    summary = build_catalog(data, out, tiny_backbone, progress=False, shard_size=5)
    assert summary["resumed_shards"] == 2 and resumed == [5] and summary["skipped"] == []
    catalog = Catalog.open(out)
    _same_catalog(catalog, folder_catalog, photos)
    assert catalog.manifest["kept_images"] == {"folder": "images", "count": 12}
    assert catalog.items[0]["color"] == photos[0][0]["color"]  # other columns are metadata
    from PIL import Image

    from hsl_demo.search import Retriever
    from hsl_demo.thumbnails import Thumbnails

    results = Retriever(tiny_backbone, catalog).search_text("a red striped scarf", k=3).results
    shown = Thumbnails(tmp_path / "thumbs").of(results[0].image)  # what the app serves for a result
    assert Image.open(shown).size[0] > 0 and results[0].image.is_relative_to((out / "images").resolve())
    assert not (tmp_path / ".catalog.shards").exists()

    # indexing again replaces the catalog, its images included; a file of someone else's in
    # them is never deleted
    build_catalog(data / "part-1.parquet", out, tiny_backbone, progress=False)
    assert len(Catalog.open(out)) == 5 and len(list((out / "images").rglob("*.*"))) == 5
    for mine in ("notes.txt", "00007.jpg"):  # a file of someone else's, even one named as ours
        (out / "images" / "00000" / mine).write_text("mine")
        with pytest.raises(HslDemoError, match="not a catalog written by hsl-demo"):
            build_catalog(data, out, tiny_backbone, progress=False)
        assert (out / "images" / "00000" / mine).read_text() == "mine"
        (out / "images" / "00000" / mine).unlink()


def test_a_webdataset_gives_the_folders_catalog_and_skips_bad_samples(small_images, tiny_backbone, folder_catalog,
                                                                      tmp_path):
    photos = _photos(small_images)
    samples = []
    for r, data in photos:
        extension = "png" if data.startswith(b"\x89PNG") else "jpg"
        meta = {k: v for k, v in r.items() if k not in ("image", "title")}
        samples.append((r["id"], {extension: data, "json": json.dumps(meta).encode(), "txt": r["title"].encode()}))
    shards = tmp_path / "shards"
    shards.mkdir()
    _write_tar(shards / "shard-0.tar", samples[:6])
    _write_tar(shards / "shard-1.tar", samples[6:])
    summary = build_catalog(shards, tmp_path / "catalog", tiny_backbone, progress=False, shard_size=4)
    assert summary["count"] == 12 and summary["skipped"] == []
    _same_catalog(Catalog.open(tmp_path / "catalog"), folder_catalog, photos)

    # bad samples are skipped with their reason; a member named to escape is never extracted by name
    bad = tmp_path / "bad.tar"
    _write_tar(bad, [("a", {"jpg": photos[1][1]}), ("b", {"jpg": b"not an image"}), ("c", {"json": b"{}"}),
                     ("d", {"jpg": photos[2][1], "json": b"[1, 2]"}),
                     ("e", {"jpg": photos[3][1], "json": json.dumps({"items": [{"box": [5, 5, 1, 1]}]}).encode()}),
                     ("../../escape", {"jpg": photos[4][1]}),
                     ("f", {"jpg": photos[5][1], "json": b'{"x": ' + b"[" * 5000 + b"]" * 5000 + b"}"}),
                     ("g\nhsl-demo: error: forged", {"jpg": b"\xff\xd8 broken"}),
                     ("h", {"jpg": photos[6][1], "json": b'{"id": "a"}'})])
    summary = build_catalog(bad, tmp_path / "bad", tiny_backbone, progress=False)
    reasons = {s["file"]: s["reason"] for s in summary["skipped"]}
    assert set(reasons) == {"bad.tar:b", "bad.tar:c", "bad.tar:d", "bad.tar:e", "bad.tar:f",
                            "bad.tar:g\\nhsl-demo: error: forged", "bad.tar:h"}
    assert "not an image" in reasons["bad.tar:b"] and "no image member" in reasons["bad.tar:c"]
    assert "not a JSON object" in reasons["bad.tar:d"] and "x1 > x0" in reasons["bad.tar:e"]
    assert "not JSON" in reasons["bad.tar:f"] and "duplicate item id 'a'" in reasons["bad.tar:h"]
    catalog = Catalog.open(tmp_path / "bad")
    assert [it["id"] for it in catalog.items] == ["a", "../../escape"]
    assert len(list((tmp_path / "bad" / "images").rglob("*.*"))) == 2  # the duplicate's copy is not kept
    assert catalog.image_path(1).is_relative_to((tmp_path / "bad" / "images").resolve())
    assert not (tmp_path.parent / "escape.jpg").exists()


def test_parquet_values_json_cannot_hold_are_written_as_strict_json(small_images, tiny_backbone, tmp_path):
    """NaN, dates, decimals and durations in metadata columns; a part with a caption and no box
    (Arrow writes its box as null); two files of one name in two folders (their default ids
    differ); an upper-case suffix."""
    import datetime
    import decimal

    photos = _photos(small_images)[:4]
    data = tmp_path / "data"
    for split in ("train", "test"):
        (data / split).mkdir(parents=True)
        pq.write_table(pa.table({
            "image": [d for _, d in photos],
            "price": [1.5, float("nan"), float("inf"), 2.0],
            "added": [datetime.datetime(2026, 1, 2, 3, 4, 5)] * 4,
            "cost": pa.array([decimal.Decimal("9.99")] * 4, pa.decimal128(5, 2)),
            "wait": pa.array([datetime.timedelta(seconds=90)] * 4, pa.duration("s")),
            "items": [[{"box": [0.0, 0.0, 10.0, 10.0], "caption": "a"}, {"box": None, "caption": "b"}]] * 4,
        }), data / split / ("0000.PARQUET" if split == "test" else "0000.parquet"))
    summary = build_catalog(data, tmp_path / "cat", tiny_backbone, progress=False)
    assert summary["count"] == 8 and summary["skipped"] == []
    for line in (tmp_path / "cat" / "items.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} is not strict JSON"))
    catalog = Catalog.open(tmp_path / "cat")
    assert [it["id"] for it in catalog.items][:5] == ["test/0000-0", "test/0000-1", "test/0000-2", "test/0000-3",
                                                      "train/0000-0"]
    first = catalog.items[1]
    assert first["price"] is None and first["added"] == "2026-01-02T03:04:05" and first["cost"] == 9.99
    assert first["wait"] == 90.0 and first["items"][1] == {"caption": "b"}


def test_packed_input_that_cannot_be_read_is_one_line(small_images, tmp_path):
    photos = _photos(small_images)
    _write_parquet(tmp_path / "p.parquet", photos[:2])
    cases = {
        "mixed": lambda d: ((d / "p.parquet").write_bytes((tmp_path / "p.parquet").read_bytes()),
                            (d / "x.jpg").write_bytes(photos[0][1])),
        "fake": lambda d: (d / "f.parquet").write_text("not parquet"),
        "badtar": lambda d: (d / "t.tar").write_bytes(b"\0garbage" * 100),
        "norows": lambda d: pq.write_table(pa.table({"image": pa.array([], pa.binary())}), d / "e.parquet"),
        "strings": lambda d: pq.write_table(pa.table({"image": ["a.jpg"]}), d / "s.parquet"),
    }
    for name, make in cases.items():
        (tmp_path / name).mkdir()
        make(tmp_path / name)
    out = str(tmp_path / "out")
    assert_clean_error(run_cli("index", str(tmp_path / "mixed"), "--out", out), "holds images and parquet input")
    for args, fragment in [
        ([str(tmp_path / "fake"), "--out", out], "not a readable Parquet file"),
        ([str(tmp_path / "badtar"), "--out", out], "not a readable tar file"),
        ([str(tmp_path / "norows"), "--out", out], "its .parquet files hold no rows"),
        ([str(tmp_path / "strings"), "--out", out], "column 'image' holds string, not image bytes"),
        ([str(tmp_path / "p.parquet"), "--out", out, "--image-column", "photo"], "no column 'photo'"),
        ([str(tmp_path / "p.parquet"), "--out", out, "--metadata", "m.jsonl"], "--metadata goes with a folder"),
        ([str(small_images / "images"), "--out", out, "--image-column", "x"], "--image-column goes with Parquet"),
        ([str(small_images / "metadata.jsonl"), "--out", out], "a .parquet file or a WebDataset .tar"),
    ]:
        with pytest.raises(HslDemoError, match=fragment):
            cli.index.run(cli.build_parser().parse_args(["index", *args, "--model", "hsl-demo-tiny"]))
    assert not (tmp_path / "out").exists()
    assert cli.main(["index", str(tmp_path / "p.parquet"), "--model", "hsl-demo-tiny", "--out", out]) == 0
    assert len(Catalog.open(out)) == 2


def test_corrupt_parquet_pages_skip_their_rows(small_images, tiny_backbone, tmp_path):
    photos = _photos(small_images)[:6]
    path = tmp_path / "p.parquet"
    _write_parquet(path, photos, row_group_size=2)
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2
    raw[middle:middle + 4096] = bytes(b ^ 0x5A for b in raw[middle:middle + 4096])
    path.write_bytes(bytes(raw))
    summary = build_catalog(path, tmp_path / "cat", tiny_backbone, progress=False)
    assert summary["skipped"] and summary["count"] + len(summary["skipped"]) == 6
    assert all(s["file"].startswith("p.parquet#") for s in summary["skipped"])


def test_parquet_cells_over_the_limit_are_skipped_before_they_fill_memory(small_images, tmp_path):
    """The red-team's Parquet bomb, small (a 1 MB cell limit, cells of 3 MB of zstd-compressed
    zeros, a few KB on disk). A row group of such cells alone: its metadata gives them away and
    nothing is read. Beside good rows (or dictionary-encoded: equal cells share one entry),
    rows are read one at a time and each over-limit cell is skipped by its length in Arrow,
    never copied out: Python memory stays under one cell; the good rows are kept."""
    import tracemalloc

    from hsl_demo.reader import ParquetSource, open_source_config

    limit = 2**20
    good = _photos(small_images)[0][1]
    huge = b"\0" * (3 * limit)
    for name, dictionary in (("plain", False), ("dictionary", True)):
        pq.write_table(pa.table({"image": pa.array([huge, huge], pa.binary())}), tmp_path / f"{name}.parquet",
                       compression="zstd", use_dictionary=dictionary, row_group_size=2)
        pq.write_table(pa.table({"image": pa.array([good, huge, huge] + [good] * 4, pa.binary())}),
                       tmp_path / f"{name}-mixed.parquet", compression="zstd", use_dictionary=dictionary,
                       row_group_size=7)
        assert (tmp_path / f"{name}.parquet").stat().st_size < 20_000
        for file, expect_good in ((f"{name}.parquet", 0), (f"{name}-mixed.parquet", 5)):
            source = ParquetSource(tmp_path / file, max_cell_bytes=limit).scan()
            assert open_source_config(source.config()).max_cell_bytes == limit  # Ray workers keep the limit
            tracemalloc.start()
            try:
                images = [image for shard in source.shards(64) for image in source.read(shard)]
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            problems = [image.problem for image in images if image.problem]
            assert len(problems) == 2 and all("(limit 1 MB)" in p for p in problems), (file, problems)
            assert ("metadata" in problems[0]) == ("mixed" not in file), problems  # unread
            assert sum(image.problem is None for image in images) == expect_good
            assert peak < limit, (file, peak)
    pq.write_table(pa.table({"image": pa.array([good, huge, good], pa.binary())}), tmp_path / "one-row.parquet",
                   compression="zstd", use_dictionary=False, row_group_size=1)
    source = ParquetSource(tmp_path / "one-row.parquet", max_cell_bytes=limit).scan()
    images = [image for shard in source.shards(64) for image in source.read(shard)]
    assert [image.problem for image in images] == [
        None, "3 MB per image cell in its row group's metadata (limit 1 MB)", None]


def test_a_tars_headers_are_read_once_and_a_repeated_key_is_skipped(tmp_path, monkeypatch):
    """Each shard of a tar seeks to its own samples: the headers are read once per file, not
    once per shard (quadratic on a large tar). A key met again later is a second sample,
    listed as skipped, never merged into the first."""
    from hsl_demo import reader

    samples = [(f"k{i:04d}", {"jpg": b"x" * 10, "txt": b"t"}) for i in range(200)]
    samples.append(("k0003", {"jpg": b"again"}))
    _write_tar(tmp_path / "big.tar", samples)
    reads = []
    real = reader._tar_samples
    monkeypatch.setattr(reader, "_tar_samples", lambda file: reads.append(file) or real(file))
    source = reader.open_source(tmp_path / "big.tar").scan()
    shards = source.shards(20)
    assert len(shards) == 11
    images = [image for shard in shards for image in source.read(shard)]
    assert len(reads) == 1 and len(images) == 201
    assert "a second sample with key 'k0003'" in images[-1].problem
