"""Bad and unusual input on the composed-search reference path: in-process and through the CLI.

tests/test_images.py covers `open_image` on bytes; here the reference goes through
`Retriever.search_composed` (files on disk) and `hsl-demo search --reference`, and the
products_untrained must keep working after every error.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_clean_error, run_cli
from PIL import Image, ImageOps

from hsl_demo import images
from hsl_demo.data.attributes import Attributes
from hsl_demo.data.demo import product_sprite, render_product
from hsl_demo.errors import HslDemoError

RED_TSHIRT = Attributes("t-shirt", "red", "plain")
BLUE_SCARF = Attributes("scarf", "blue", "striped")


@pytest.fixture(scope="module")
def baseline(products_untrained):
    """What a good composed query and a text query return before any bad input."""
    return _snapshot(products_untrained)


def _snapshot(products_untrained) -> tuple:
    composed = products_untrained.search_composed("p00000", "make it blue", k=5)
    text = products_untrained.search_text("red striped t-shirt", k=5)
    return [(r.id, round(r.score, 5)) for r in composed], [(r.id, round(r.score, 5)) for r in text]


def _assert_intact(products_untrained, baseline) -> None:
    assert _snapshot(products_untrained) == baseline


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict:
    """Reference files that must be refused, with the error fragment each must give."""
    root = tmp_path_factory.mktemp("bad-references")
    product = render_product(RED_TSHIRT, random.Random(1))
    text = root / "notes.jpg"  # an image suffix does not make it an image
    text.write_text("hello, I am a text file\n")
    jpeg = root / "whole.jpg"
    product.save(jpeg, quality=90)
    truncated = root / "truncated.jpg"
    truncated.write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])
    png = root / "whole.png"
    product.save(png)
    data = bytearray(png.read_bytes())
    start = data.index(b"IDAT") + 4 + 16
    data[start:start + 64] = bytes(64)  # zero part of the compressed pixels; the header stays valid
    corrupt = root / "corrupt.png"
    corrupt.write_bytes(bytes(data))
    huge = root / "huge.png"  # 49 megapixels claimed by the header, a few kB on disk
    Image.new("1", (7000, 7000)).save(huge, optimize=True)
    return {
        "text file": (text, "not an image"),
        "truncated jpeg": (truncated, "corrupt or truncated"),
        "corrupt png": (corrupt, "corrupt or truncated"),
        "huge png": (huge, "too large"),
    }


@pytest.mark.parametrize("kind", ["text file", "truncated jpeg", "corrupt png", "huge png"])
def test_bad_reference_files_are_clear_errors_and_leave_the_retriever_intact(products_untrained, baseline, bad_files,
                                                                               kind):
    path, fragment = bad_files[kind]
    for reference in (path, str(path)):
        with pytest.raises(HslDemoError, match=fragment) as err:
            products_untrained.search_composed(reference, "make it blue", k=5)
        assert str(path) in str(err.value) and "\n" not in str(err.value)
        assert _descriptors_on(path) == 0  # the refused file is closed, not left to the garbage collector
    _assert_intact(products_untrained, baseline)


def _descriptors_on(path) -> int:
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        pytest.skip("needs /proc to list open files")
    count = 0
    for fd in fds.iterdir():
        try:
            count += os.readlink(fd) == str(path)
        except OSError:  # closed meanwhile (e.g. the one iterdir used)
            pass
    return count


def test_huge_image_hits_the_pixel_guard_before_decoding(products_untrained, baseline, tmp_path, monkeypatch):
    path = tmp_path / "big-enough.png"
    render_product(RED_TSHIRT, random.Random(2)).save(path)  # 128x128 = 16384 pixels
    assert len(products_untrained.search_composed(path, "make it blue", k=3)) == 3
    monkeypatch.setattr(images, "MAX_PIXELS", 128 * 128 - 1)
    with pytest.raises(HslDemoError, match=r"128x128 pixels is too large"):
        products_untrained.search_composed(path, "make it blue", k=3)
    monkeypatch.setattr(images, "MAX_PIXELS", 128 * 128)  # the limit itself is allowed
    assert len(products_untrained.search_composed(path, "make it blue", k=3)) == 3
    monkeypatch.undo()
    _assert_intact(products_untrained, baseline)


@pytest.mark.parametrize("reference", ["no-such-file.png", "P00000", "p00000 ", "FOLDER"])
def test_references_that_are_neither_an_item_nor_a_file(products_untrained, baseline, tmp_path, reference):
    reference = str(tmp_path) if reference == "FOLDER" else reference
    with pytest.raises(HslDemoError, match="not an item id .* and not an image file"):
        products_untrained.search_composed(reference, "make it blue", k=3)
    _assert_intact(products_untrained, baseline)


def test_a_path_object_is_never_taken_for_an_item_id(products_untrained):
    with pytest.raises(HslDemoError, match="not an item id"):
        products_untrained.search_composed(Path("p00000"), "make it blue", k=3)


def _save_modes(product: Image.Image, folder) -> dict:
    """The same product photo as RGB, greyscale L, CMYK JPEG and 16-bit greyscale PNG files
    (the greyscale ones span the full range, so the 16-bit one is the 8-bit one, 257x)."""
    paths = {"RGB": folder / "rgb.png", "L": folder / "grey.png", "CMYK": folder / "cmyk.jpg",
             "I;16": folder / "grey16.png"}
    product.save(paths["RGB"])
    product.convert("CMYK").save(paths["CMYK"], quality=95)
    grey = ImageOps.autocontrast(product.convert("L"))
    grey.save(paths["L"])
    Image.fromarray(np.asarray(grey, dtype=np.uint16) * 257).save(paths["I;16"])
    return paths


def test_other_image_modes_are_converted_and_searched(products_untrained, baseline, tmp_path):
    product = render_product(BLUE_SCARF, random.Random(4))
    paths = _save_modes(product, tmp_path)
    for mode, path in paths.items():
        with Image.open(path) as opened:
            assert opened.mode == mode  # the files really are in that mode
    by_mode = {}
    for mode, path in paths.items():
        results = products_untrained.search_composed(path, "make it red", k=5)
        assert len(results) == 5, mode
        scores = [r.score for r in results]
        assert scores == sorted(scores, reverse=True) and all(np.isfinite(scores)), mode
        by_mode[mode] = [r.id for r in results]
    # CMYK round-trips the colours and 16 bits are scaled down, not clipped to white: each must
    # find what its 8-bit RGB / greyscale twin finds
    assert by_mode["CMYK"][0] == by_mode["RGB"][0]
    assert by_mode["I;16"][0] == by_mode["L"][0]
    _assert_intact(products_untrained, baseline)


def test_transparent_product_is_flattened_on_white_and_ranks_like_the_rgb_photo(products_untrained, tmp_path):
    sprite = product_sprite(RED_TSHIRT, random.Random(5))
    rgba = np.array(sprite)
    assert (rgba[..., 3] == 0).mean() > 0.2  # a real cut-out with transparency around the product
    rgba[rgba[..., 3] == 0, :3] = 0  # hidden colour under transparency: black, as many cut-outs store it
    sprite = Image.fromarray(rgba, "RGBA")
    sprite.save(tmp_path / "cutout.png")
    white = Image.alpha_composite(Image.new("RGBA", sprite.size, "white"), sprite).convert("RGB")
    white.save(tmp_path / "on-white.png")

    from_rgba = products_untrained.search_composed(tmp_path / "cutout.png", "make it blue", k=5)
    from_rgb = products_untrained.search_composed(tmp_path / "on-white.png", "make it blue", k=5)
    assert from_rgba[0].id == from_rgb[0].id
    assert [r.score for r in from_rgba] == pytest.approx([r.score for r in from_rgb], abs=0.02)
    # a PIL image in memory is flattened the same way as the file
    in_memory = products_untrained.search_composed(sprite, "make it blue", k=5)
    assert [r.id for r in in_memory] == [r.id for r in from_rgba]


def test_empty_text_with_an_image_file_is_an_image_only_query(products_untrained, tmp_path):
    row = products_untrained.catalog.row("p00000")
    path = products_untrained.catalog.image_path(row)
    for text in ("", None, " \t\n"):
        results = products_untrained.search_composed(path, text, k=3)
        assert results.notices == ["no modification text: searching by the reference image alone"]
        # a file is not the catalog item: the identical photo is not dropped, it ranks first
        assert results[0].id == "p00000" and results[0].score == pytest.approx(1.0, abs=1e-3)
        for r in results:
            assert r.breakdown.to_dict()["w_image"] == 1.0 and r.breakdown.to_dict()["w_text"] == 0.0
            assert r.breakdown.to_dict()["text_similarity"] == 0.0
            assert r.breakdown.to_dict()["final"] == pytest.approx(r.breakdown.to_dict()["image_similarity"], abs=1e-5)


def test_k_larger_than_the_catalog_returns_every_other_item_once(products_untrained, baseline, tmp_path):
    n = len(products_untrained.catalog)
    by_id = products_untrained.search_composed("p00000", "make it blue", k=n + 500)
    ids = [r.id for r in by_id]
    assert len(ids) == n - 1 and len(set(ids)) == n - 1 and "p00000" not in ids
    assert [r.rank for r in by_id] == list(range(1, n))
    scores = [r.score for r in by_id]
    assert scores == sorted(scores, reverse=True)
    exact = products_untrained.search_composed("p00000", "make it blue", k=n - 1)
    assert [r.id for r in exact] == ids
    by_file = products_untrained.search_composed(products_untrained.catalog.image_path(0), "make it blue", k=n + 500)
    assert len(by_file) == n and len({r.id for r in by_file}) == n  # a file reference drops nothing
    for bad_k in (0, -1, 2.5, True):
        with pytest.raises(HslDemoError, match="k must be a positive whole number"):
            products_untrained.search_composed("p00000", "make it blue", k=bad_k)
    _assert_intact(products_untrained, baseline)


# ---- the same through the CLI -------------------------------------------------------------
@pytest.mark.parametrize("kind", ["text file", "truncated jpeg", "corrupt png", "huge png"])
def test_cli_bad_reference_files_are_one_line_errors(bad_files, kind):
    path, fragment = bad_files[kind]
    proc = run_cli("search", "--reference", str(path), "--text", "make it blue")
    assert_clean_error(proc, str(path), fragment)
    assert proc.stdout == ""


def test_cli_reference_without_text_warns_and_searches_by_the_image(tmp_path):
    path = tmp_path / "rgba.png"
    sprite = product_sprite(RED_TSHIRT, random.Random(6))
    sprite.save(path)
    proc = run_cli("search", "--reference", str(path), "-k", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "hsl-demo: warning: no modification text: searching by the reference image alone" in proc.stderr
    assert "Traceback" not in proc.stderr
    out = json.loads(proc.stdout)
    assert len(out) == 3 and all(r["levels"]["w_image"] == 1.0 for r in out)


def test_cli_k_larger_than_the_catalog():
    from hsl_demo.catalog import Catalog

    n = len(Catalog.open("products"))
    proc = run_cli("search", "--reference", "p00000", "--text", "make it blue", "-k", str(n + 1), "--json")
    assert proc.returncode == 0, proc.stderr
    ids = [r["id"] for r in json.loads(proc.stdout)]
    assert len(ids) == len(set(ids)) == n - 1 and "p00000" not in ids
