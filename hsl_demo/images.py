"""Opening user images safely: one place for format quirks and hostile files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import HslDemoError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
# Far above any product photo, far below what would exhaust memory (a decompression bomb).
MAX_PIXELS = 40_000_000


def open_image(source: str | Path | bytes | Image.Image) -> Image.Image:
    """An RGB image from a path, raw bytes or a PIL image.

    Transparent images are flattened on white, CMYK/16-bit/greyscale/palette images are
    converted, EXIF rotation is applied; anything unreadable is a one-line HslDemoError.
    """
    name = "image" if isinstance(source, (bytes, Image.Image)) else str(source)
    opened = None  # closed below: a refused file must not keep its descriptor open
    try:
        if isinstance(source, Image.Image):
            image = source
        else:
            image = opened = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise HslDemoError(
                f"{name}: {width}x{height} pixels is too large (limit {MAX_PIXELS // 1_000_000} megapixels)"
            )
        image.load()
        image = ImageOps.exif_transpose(image)
        return _to_rgb(image)
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
    except (OSError, ValueError, SyntaxError) as e:
        raise HslDemoError(f"{name}: corrupt or truncated image ({e})") from None
    finally:
        if opened is not None:  # what is returned is always a converted copy
            opened.close()


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
