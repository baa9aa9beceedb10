import io

import numpy as np
import pytest
from PIL import Image

from hsl_demo import images
from hsl_demo.errors import HslDemoError
from hsl_demo.images import list_images, open_image


def _png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def test_transparent_images_are_flattened_on_white():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    out = open_image(_png_bytes(rgba))
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "LA"])
def test_other_modes_become_rgb(mode):
    image = Image.new(mode, (5, 3))
    out = open_image(_png_bytes(image, "TIFF" if mode == "CMYK" else "PNG"))
    assert out.mode == "RGB" and out.size == (5, 3)


def test_16_bit_greyscale_is_stretched_not_clipped():
    arr = np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)
    out = np.asarray(open_image(Image.fromarray(arr)))  # uint16 -> mode I;16
    assert out.shape == (2, 2, 3)
    assert out[0, 0, 0] == 0 and out[1, 1, 0] == 255 and 100 < out[1, 0, 0] < 140


def test_unreadable_inputs_are_one_line_errors(tmp_path, monkeypatch):
    with pytest.raises(HslDemoError, match="not an image"):
        open_image(b"hello, I am text")
    truncated = _png_bytes(Image.new("RGB", (64, 64), "red"), "JPEG")[:200]
    with pytest.raises(HslDemoError, match="corrupt or truncated"):
        open_image(truncated)
    with pytest.raises(HslDemoError, match="no such file"):
        open_image(tmp_path / "missing.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 100)
    with pytest.raises(HslDemoError, match="too large"):
        open_image(_png_bytes(Image.new("RGB", (20, 20))))


def test_list_images_finds_images_in_subfolders_only_by_suffix(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ["x.jpg", "a/y.PNG", "a/z.webp", "notes.txt"]:
        (tmp_path / name).write_bytes(b"")
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)] == ["a/y.PNG", "a/z.webp", "x.jpg"]
    with pytest.raises(HslDemoError, match="no such folder"):
        list_images(tmp_path / "nope")
