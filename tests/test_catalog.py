import json
import shutil

import numpy as np
import pytest
import torch

from hsl_demo import indexing
from hsl_demo.catalog import Catalog
from hsl_demo.errors import HslDemoError
from hsl_demo.features import box_crops, dequantize, grid_regions, quantize
from hsl_demo.hub import load_backbone
from hsl_demo.indexing import build_catalog
from hsl_demo.search import Retriever


@pytest.fixture(scope="module")
def messy_images(small_images, tmp_path_factory):
    """The small catalog plus a corrupt JPEG, a text file named .png, and a README."""
    root = tmp_path_factory.mktemp("messy")
    shutil.copytree(small_images / "images", root / "images")
    (root / "images" / "broken.jpg").write_bytes((small_images / "images" / "item01.jpg").read_bytes()[:300])
    (root / "images" / "notes.png").write_text("not an image")
    (root / "images" / "README.txt").write_text("ignored: not an image suffix")
    return root


@pytest.fixture(scope="module")
def built(messy_images, small_images, tiny_backbone, tmp_path_factory):
    out = tmp_path_factory.mktemp("cat") / "catalog"
    summary = build_catalog(messy_images / "images", out, tiny_backbone,
                            metadata=small_images / "metadata.jsonl", batch_size=5, progress=False)
    return out, summary


def test_index_skips_and_lists_unreadable_files(built):
    out, summary = built
    assert summary["count"] == 12 and summary["index"] == "Flat"
    assert sorted(s["file"] for s in summary["skipped"]) == ["broken.jpg", "notes.png"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["skipped"] == summary["skipped"]
    assert manifest["count"] == 12 and manifest["model"]["embed_dim"] == 128
    assert manifest["regions"] == {"per_item": 16, "source": "grid4x4", "dtype": "int8", "bytes_per_item": 16 * 128
                                   + 16 * 2 + 16}


def test_catalog_items_keep_metadata_and_resolve_images(built, messy_images):
    cat = Catalog.open(built[0])
    assert len(cat) == 12
    row = cat.row("s00")
    assert cat.items[row]["color"] == "green" and cat.items[row]["title"] == "Green dotted scarf"
    assert cat.image_path(row) == (messy_images / "images" / "sub" / "item00.png").resolve()
    assert cat.image_path(row).is_file()
    with pytest.raises(HslDemoError, match="no item 'zzz'"):
        cat.row("zzz")


def test_index_vectors_are_the_backbones_embeddings(built, tiny_backbone, small_images):
    cat = Catalog.open(built[0])
    from hsl_demo.images import open_image

    image = open_image(cat.image_path(cat.row("s03")))
    expected = tiny_backbone.encode_images([image])[0]
    assert np.allclose(cat.embeddings[cat.row("s03")], expected, atol=1e-5)
    scores, rows = cat.search(expected[None], 3)
    assert rows[0][0] == cat.row("s03") and scores[0][0] == pytest.approx(1.0, abs=1e-5)


def test_quantized_regions_are_close_to_the_originals():
    regions = torch.randn(4, 16, 128)
    q, s = quantize(regions)
    assert q.dtype == np.int8 and s.dtype == np.float16
    back = dequantize(q, s)
    cos = torch.nn.functional.cosine_similarity(back, regions, dim=-1)
    assert cos.min() > 0.995


def test_grid_pooling_and_square_box_crops():
    tokens = torch.arange(64, dtype=torch.float32).reshape(1, 64, 1).expand(1, 64, 2)
    pooled = grid_regions(tokens, (8, 8))
    assert pooled.shape == (1, 16, 2)
    assert pooled[0, 0, 0] == pytest.approx((0 + 1 + 8 + 9) / 4)
    from PIL import Image

    image = Image.new("RGB", (200, 100))
    wide, corner, huge = box_crops(image, [[50, 40, 90, 60], [0, 0, 10, 10], [0, 0, 200, 100]], margin=0.1)
    assert wide.size == (48, 48)  # 40 px wide, grown by 10% each side, made square
    assert corner.size == (12, 12)  # clamped inside the image at the corner
    assert huge.size == (100, 100)  # never larger than the image's short side


def test_boxes_in_metadata_become_regions(tmp_path, tiny_backbone, small_images):
    meta = tmp_path / "looks.jsonl"
    with open(meta, "w") as f:
        f.write(json.dumps({"image": "item01.jpg", "id": "look1",
                            "items": [{"box": [0, 0, 64, 64]}, {"box": [64, 64, 128, 128]}]}) + "\n")
        f.write(json.dumps({"image": "item02.jpg", "id": "look2", "items": [{"box": [0, 0, 128, 128]}]}) + "\n")
    build_catalog(small_images / "images", tmp_path / "cat", tiny_backbone, metadata=meta, progress=False)
    cat = Catalog.open(tmp_path / "cat")
    assert cat.manifest["regions"]["source"] == "box-crops"
    assert cat.region_mask[cat.row("look1")].tolist()[:2] == [True, True]
    assert cat.region_mask[cat.row("look2")].sum() == 1
    regions, mask = cat.region_features(np.array([cat.row("look1")]))
    assert regions.shape[1] == cat.regions.shape[1] and mask.shape == regions.shape[:2]
    # a box's region is the backbone embedding of its square crop
    from hsl_demo.images import open_image

    crop = box_crops(open_image(small_images / "images" / "item01.jpg"), [[64, 64, 128, 128]])
    expected = torch.from_numpy(tiny_backbone.encode_images(crop))[0]
    assert torch.nn.functional.cosine_similarity(regions[0, 1], expected, dim=0) > 0.99


def test_interrupted_build_leaves_no_catalog_and_only_its_plan(small_images, tiny_backbone, tmp_path, monkeypatch):
    out = tmp_path / "catalog"
    calls = {"n": 0}
    original = tiny_backbone.image_features

    def interrupt(images):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(images)

    monkeypatch.setattr(tiny_backbone, "image_features", interrupt)
    with pytest.raises(KeyboardInterrupt):
        build_catalog(small_images / "images", out, tiny_backbone, batch_size=4, progress=False)
    # no catalog, no half-written file: only the run's plan, kept so that a rerun resumes
    shards = tmp_path / ".catalog.shards"
    assert list(tmp_path.iterdir()) == [shards] and [p.name for p in shards.iterdir()] == ["plan.json"]
    monkeypatch.setattr(tiny_backbone, "image_features", original)
    build_catalog(small_images / "images", out, tiny_backbone, batch_size=4, progress=False)
    assert list(tmp_path.iterdir()) == [out]


def test_failed_rebuild_keeps_the_old_catalog(built, tiny_backbone, tmp_path):
    out = tmp_path / "catalog"
    shutil.copytree(built[0], out)
    before = (out / "items.jsonl").read_text()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(HslDemoError, match="no images"):
        build_catalog(empty, out, tiny_backbone, progress=False)
    assert (out / "items.jsonl").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catalog", "empty"]


def test_large_catalogs_use_an_ivf_index(small_images, tiny_backbone, tmp_path, monkeypatch):
    build_catalog(small_images / "images", tmp_path / "cat", tiny_backbone, progress=False,
                  limits=indexing.IndexLimits(flat_max_items=5))
    cat = Catalog.open(tmp_path / "cat")
    assert cat.manifest["index"] == "IVF1,Flat"  # a faiss.index_factory spec
    assert cat.manifest["nprobe"] == 1 and cat.manifest["nprobe_recall"] == 1.0  # one list holds everything
    query = cat.embeddings[4:5]
    _, rows = cat.search(query, 3)
    assert rows[0][0] == 4


def test_the_index_type_is_a_factory_spec(small_images, tiny_backbone, tmp_path, capsys):
    import faiss

    from hsl_demo import cli

    build_catalog(small_images / "images", tmp_path / "cat", tiny_backbone, progress=False, index_spec="IVF2,Flat")
    cat = Catalog.open(tmp_path / "cat")
    assert cat.manifest["index"] == "IVF2,Flat" and faiss.extract_index_ivf(cat.index).nlist == 2
    assert cat.search(cat.embeddings[7:8], 1)[1][0][0] == 7
    code = cli.main(["index", str(small_images / "images"), "--out", str(tmp_path / "bad"), "--model",
                     "hsl-demo-tiny", "--index", "IVF2,Nonsense"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("hsl-demo: error: --index 'IVF2,Nonsense': not a FAISS index_factory spec")
    assert not (tmp_path / "bad").exists()
    with pytest.raises(HslDemoError, match="cannot hold the vectors"):
        build_catalog(small_images / "images", tmp_path / "ids", tiny_backbone, progress=False, index_spec="IDMap,Flat")
    assert not (tmp_path / "ids").exists()


def test_a_compressed_index_finds_candidates_and_the_stored_vectors_score_them(small_images, tiny_backbone,
                                                                                 tmp_path):
    """A lossy index (4-bit scalar codes here; PQ at scale) only picks the candidates: their
    scores are exact inner products with the embeddings the catalog keeps in embeds.npy."""
    import numpy as np

    build_catalog(small_images / "images", tmp_path / "sq", tiny_backbone, progress=False, index_spec="SQ4")
    cat = Catalog.open(tmp_path / "sq")
    assert cat.manifest["index"] == "SQ4" and isinstance(cat.embeds, np.memmap)
    approx, _ = cat.index.search(cat.vectors([5]), 3)
    scores, rows = cat.search(cat.vectors([5]), 3)
    assert rows[0][0] == 5 and np.allclose(scores[0], cat.embeddings[rows[0]] @ cat.vectors([5])[0], atol=1e-6)
    assert np.abs(approx[0] - scores[0]).max() > 1e-4  # the index's own scores were approximate
    assert list(scores[0]) == sorted(scores[0], reverse=True)


def test_index_types_follow_catalog_size():
    from hsl_demo.indexing import default_index_spec

    assert default_index_spec(50_000, 128) == "Flat"
    assert default_index_spec(1_000_000, 128) == "IVF4000,Flat"  # 512 MB of vectors: kept
    assert default_index_spec(10_000_000, 128) == "OPQ32,IVF12649,PQ32"  # 5 GB: 32-byte codes
    assert default_index_spec(1_000_000, 512) == "OPQ128,IVF4000,PQ128"


def test_opening_bad_catalogs_is_a_clear_error(tmp_path, built):
    with pytest.raises(HslDemoError, match="no such catalog"):
        Catalog.open(tmp_path / "missing")
    with pytest.raises(HslDemoError, match="not a catalog folder"):
        Catalog.open(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(built[0], broken)
    (broken / "index.faiss").write_bytes(b"garbage")
    with pytest.raises(HslDemoError, match="unreadable"):
        Catalog.open(broken)


def test_catalog_and_model_must_match(built):
    torch.manual_seed(123)
    other = load_backbone("hsl-demo-tiny", device="cpu")  # same architecture, other weights
    with pytest.raises(HslDemoError, match="without a pretrained tag: its weights were random"):
        Retriever(other, Catalog.open(built[0]))


def test_opening_reads_no_region_and_a_query_reads_only_its_rows(demo_backbone):
    """Region features stay on disk (memory-mapped) until a search reads its candidates' rows;
    a composed query reads back the embeddings of its rows, not the whole catalog's."""
    import numpy as np

    catalog = Catalog.open("products")
    assert isinstance(catalog.regions, np.memmap) and isinstance(catalog.region_mask, np.memmap)
    assert isinstance(catalog.embeds, np.memmap)
    assert np.array_equal(catalog.vectors([3, 1]), catalog.index.reconstruct_n(0, 4)[[3, 1]])
    from hsl_demo.search import Retriever, load_heads

    retriever = Retriever(demo_backbone, catalog, **load_heads(demo_backbone))
    assert [r.id for r in retriever.search_composed("p00024", "make it blue and striped", k=1)] == ["p00059"]


def test_items_are_read_one_at_a_time(built, tmp_path, caplog):
    """Opening parses no record (a catalog of millions opens in a second): ids are found through
    item_ids.npy, and a record is parsed, and checked, when it is read."""
    copy = tmp_path / "copy"
    shutil.copytree(built[0], copy)
    lines = (copy / "items.jsonl").read_bytes().split(b"\n")
    lines[2] = b"{" + b"x" * (len(lines[2]) - 1)  # same length: the offsets still fit, the record is broken
    (copy / "items.jsonl").write_bytes(b"\n".join(lines))
    cat = Catalog.open(copy)
    assert len(cat) == 12 and cat.row(cat.items[7]["id"]) == 7 and cat.items[-1] == cat.items[11]
    assert "s05" in cat and "nope" not in cat and None not in cat
    with pytest.raises(HslDemoError, match=r"items.jsonl: item 3 is not a JSON object; rebuild the catalog"):
        cat.items[2]
    # edited by hand (a title changed): the lines moved, so it is read whole, and still opens
    lines[2] = (built[0] / "items.jsonl").read_bytes().split(b"\n")[2].replace(b'"title": "', b'"title": "new ')
    (copy / "items.jsonl").write_bytes(b"\n".join(lines))
    with caplog.at_level("WARNING"):
        edited = Catalog.open(copy)
    assert "does not match items.jsonl (edited since it was written?)" in caplog.text
    assert edited.items[2]["title"].startswith("new ") and edited.row(edited.items[9]["id"]) == 9


def test_catalogs_written_before_the_item_index_still_open(built, tmp_path):
    import numpy as np

    old = tmp_path / "old"
    shutil.copytree(built[0], old)
    for name in ("item_offsets.npy", "item_ids.npy", "embeds.npy"):
        (old / name).unlink()
    a, b = Catalog.open(built[0]), Catalog.open(old)
    assert list(a.items) == list(b.items) and b.row("s05") == a.row("s05")
    assert np.abs(a.embeddings - b.embeddings).max() < 1e-6


def test_duplicate_ids_are_refused_when_the_items_are_written(tmp_path):
    """Shards encoded apart (the Ray engine's workers) meet only here: an id twice is an error."""
    from hsl_demo.items import write_items

    with pytest.raises(HslDemoError, match=r"duplicate item id 'a' \(items 1 and 3\)"):
        write_items(tmp_path, [{"id": "a", "image": "x.jpg"}, {"id": "b", "image": "y.jpg"}, {"id": "a", "image": "z"}])


def test_row_files_are_read_ahead_into_the_page_cache_when_they_fit(built, tmp_path):
    import os

    from hsl_demo.fileio import prefetch

    cat = Catalog.open(built[0])
    assert cat._prefetching is None  # opening alone reads nothing
    cat.start_prefetch()
    reading = cat._prefetching
    assert reading  # a small catalog fits
    cat.wait_prefetched(timeout=30)
    assert not reading.is_alive() and cat._prefetching is reading  # started once
    assert prefetch([built[0] / "embeds.npy"], share=0.0) is None  # nothing fits in no memory
    big, small = tmp_path / "big", tmp_path / "small"
    big.write_bytes(b"x" * 4096)
    small.write_bytes(b"x")
    free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert prefetch([small, big], share=2048 / free) is not None  # the first file fits, the second not


def test_warm_up_readies_every_mode_before_a_visitor_comes(demo_backbone):
    """What the app runs once its model is loaded: the catalog's files read into memory,
    drill-down's region side built, and one query of each mode run."""
    from hsl_demo.search import Retriever, load_heads

    retriever = Retriever(demo_backbone, Catalog.open("looks"), heads=load_heads(demo_backbone))
    assert "drill-down" not in retriever._prepared and retriever.catalog._prefetching is None
    retriever.warm_up()
    store = retriever._prepared["drill-down"]
    assert store is not None and retriever.prepared("drill-down") is store
    assert retriever.catalog._prefetching and not retriever.catalog._prefetching.is_alive()
