"""Opening user images safely: one place for format quirks and hostile files."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import HslDemoError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
# Far above any product photo, far below what would exhaust memory (a decompression bomb).
MAX_PIXELS = 40_000_000
# The preprocess resizes the *shortest* side to the model's input: a 100000x1 strip would
# become gigabytes. No photo is that thin, so refuse beyond this ratio.
MAX_ASPECT_RATIO = 20
# Pillow's in-memory size of a full decode (4 bytes a pixel for colour): with the reduced copy
# below, one image stays well under 200 MB. JPEGs decode at a reduced scale and rarely reach it.
MAX_DECODE_BYTES = 100 * 2**20
# The formats opened, and what a full decode costs in bytes a pixel beyond Pillow's own image
# (WebP decodes through full-size buffers of its own; JPEG decodes at a reduced scale). Anything
# else (AVIF, EPS through Ghostscript, ...) is refused whatever its file name says.
DECODE_FACTOR = {"JPEG": 1, "PNG": 1, "TIFF": 1, "BMP": 1, "GIF": 1, "WEBP": 4}
# Every opened image is reduced to at most this many pixels: plenty for a model input and
# for region crops, and it bounds every later conversion.
WORK_PIXELS = 2048 * 2048
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
# Reduced by subsampling: palette indices and 16-bit cannot be averaged, and averaging with
# alpha makes a premultiplied full-size copy (twice the memory).
_NO_AVERAGING = {"1", "P", "PA", "LA", "RGBA", "I;16", "I;16B", "I;16L", "I;16N"}
# EXIF orientation -> the transpose that undoes it (as ImageOps.exif_transpose does)
_ORIENTATION = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270,
                7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}


def open_image(source: str | Path | bytes | Image.Image) -> Image.Image:
    """An RGB image from a path, raw bytes or a PIL image, at most WORK_PIXELS large.

    Transparent images are flattened on white, CMYK/16-bit/greyscale/palette images are
    converted, EXIF rotation is applied; anything unreadable, too large or too thin is a
    one-line HslDemoError. The work is bounded by the size after reduction: JPEGs decode at a
    reduced scale, other formats are reduced right after decoding, before any conversion.
    A reduced image records its size before reduction in `info["source_size"]` (what region
    boxes in source pixels are scaled by).
    """
    name = "image" if isinstance(source, (bytes, Image.Image)) else str(source)
    opened = None  # closed below: a refused file must not keep its descriptor open
    try:
        if isinstance(source, Image.Image):
            image = source
        else:
            image = opened = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source,
                                        formats=list(DECODE_FACTOR))
        width, height = image.size
        _check_size(name, width, height)
        factor = max(1, math.ceil(math.sqrt(width * height / WORK_PIXELS)))
        if factor > 1 and image.format == "JPEG":
            image.draft(image.mode, (width // factor, height // factor))  # decode at 1/2, 1/4 or 1/8 scale
        decoded = (image.size[0] * image.size[1] * _BYTES_PER_PIXEL.get(image.mode, 4)
                   * DECODE_FACTOR.get(image.format or "", 1))
        if decoded > MAX_DECODE_BYTES:
            raise HslDemoError(f"{name}: {width}x{height} {image.mode} {image.format or ''} pixels need "
                               f"{decoded // 2**20} MB to decode (limit {MAX_DECODE_BYTES // 2**20} MB); "
                               "save it smaller or as JPEG")
        orientation = image.getexif().get(0x0112, 1)  # PNG: this decodes the image (EXIF may come last)
        image.load()
        factor = max(1, math.ceil(math.sqrt(image.size[0] * image.size[1] / WORK_PIXELS)))
        if factor > 1:
            image = (image.resize((image.size[0] // factor, image.size[1] // factor), Image.Resampling.NEAREST)
                     if image.mode in _NO_AVERAGING else image.reduce(factor))
        if orientation in _ORIENTATION:
            image = image.transpose(_ORIENTATION[orientation])
            width, height = (height, width) if orientation >= 5 else (width, height)
        image = _to_rgb(image)
        if image.size != (width, height):
            image.info["source_size"] = (width, height)
        return image
    except HslDemoError:
        raise
    except FileNotFoundError:
        raise HslDemoError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise HslDemoError(f"{name}: is a folder, not an image") from None
    except UnidentifiedImageError:
        raise HslDemoError(f"{name}: not an image (or a format Pillow cannot read)") from None
    except Image.DecompressionBombError:
        raise HslDemoError(f"{name}: too many pixels (decompression-bomb guard)") from None
    except MemoryError:
        raise HslDemoError(f"{name}: too large to decode in the memory available") from None
    except OSError as e:
        if e.errno is not None:  # the file system's refusal (permissions...), without the full path
            raise HslDemoError(f"{name}: unreadable ({e.strerror})") from None
        raise HslDemoError(f"{name}: corrupt or truncated image ({e})") from None
    except (ValueError, SyntaxError) as e:
        raise HslDemoError(f"{name}: corrupt or truncated image ({e})") from None
    finally:
        if opened is not None:  # what is returned is always a converted copy
            opened.close()


def _check_size(name: str, width: int, height: int) -> None:
    if width < 1 or height < 1:
        raise HslDemoError(f"{name}: an empty image ({width}x{height} pixels)")
    if width * height > MAX_PIXELS:
        raise HslDemoError(f"{name}: {width}x{height} pixels is too large (limit {MAX_PIXELS // 1_000_000} megapixels)")
    if max(width, height) > MAX_ASPECT_RATIO * max(1, min(width, height)):
        raise HslDemoError(f"{name}: {width}x{height} pixels is too thin to be a photo (aspect ratio beyond "
                           f"{MAX_ASPECT_RATIO}:1)")


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit and float greyscale: stretch to 8 bits instead of clipping to white.
        arr = np.asarray(image, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        image = Image.fromarray(arr.astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def list_images(folder: str | Path) -> list[Path]:
    """Image files below `folder` (subfolders too), sorted, by suffix."""
    folder = Path(folder)
    if not folder.is_dir():
        raise HslDemoError(f"{folder}: no such folder")
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
