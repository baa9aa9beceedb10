"""Small copies of catalog photos, the only catalog files the web app serves.

The app hands Gradio exactly one folder to serve, this one: every file in it was written
here, by re-encoding a catalog photo that opened as an image. So a catalog whose photos sit
in several trees, behind symbolic links or next to other files never exposes anything but
its photos' thumbnails (and a catalog entry that points at a non-image serves a placeholder).
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import shutil
import tempfile
import threading
import weakref
from collections import deque
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .errors import HslDemoError
from .fileio import atomic_file
from .images import open_image
from .query import shorten
from .results import RegionMark

THUMBNAIL_SIDE = 256  # pixels, the longest side: a gallery cell, and the reference preview
MAX_MARKED = 5000  # marked thumbnails kept (about 10 KB each); the oldest go first
PLACEHOLDER_GREY = (235, 235, 235)


class Thumbnails:
    """Thumbnails made on first use, in a folder of their own (a fresh temporary folder,
    removed with this object, unless `folder` is given)."""

    def __init__(self, folder: str | Path | None = None, side: int = THUMBNAIL_SIDE, max_marked: int = MAX_MARKED):
        if folder is None:
            folder = tempfile.mkdtemp(prefix="hsl-demo-thumbnails-")
            weakref.finalize(self, shutil.rmtree, folder, True)
        self.folder = Path(folder).resolve()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.side, self.max_marked = side, max_marked
        self._marked: deque[Path] = deque()  # marked thumbnails this object wrote, oldest first

    def of(self, image: str | Path) -> str:
        """The thumbnail of a catalog photo (made now if it is new or the photo changed)."""
        path = self.folder / f"{self._key(image)}.webp"
        if not path.is_file():
            self._save(self._thumbnail(image)[0], path)
        return str(path)

    def marked(self, image: str | Path, marks: list[RegionMark]) -> str:
        """The thumbnail with `marks` drawn on it: a labelled box per region. Made once per photo
        and set of marks; the oldest marked thumbnails are removed past `max_marked` of them."""
        if not marks:
            return self.of(image)
        key = self._key(image, repr([(m.label, m.box, m.cell) for m in marks]))
        path = self.folder / f"{key}.webp"
        if not path.is_file():
            thumb, source_size = self._thumbnail(image)
            self._save(draw_marks(thumb, source_size, marks), path)
            self._marked.append(path)
            while len(self._marked) > self.max_marked:
                try:
                    oldest = self._marked.popleft()
                except IndexError:  # another request emptied it first
                    break
                oldest.unlink(missing_ok=True)  # one this object wrote
        return str(path)

    @staticmethod
    def _key(image: str | Path, extra: str = "") -> str:
        path = os.path.abspath(image)  # not resolve(): a link to a photo may have a thumbnail of its own
        try:
            stat = os.stat(path)
            version = f"{stat.st_mtime_ns}:{stat.st_size}"
        except OSError:
            version = "missing"
        return hashlib.sha256(f"{path}|{version}|{extra}".encode()).hexdigest()[:32]

    def _thumbnail(self, image: str | Path) -> tuple[Image.Image, tuple[int, int]]:
        """The photo reduced to `side`, and the size of the photo it came from (in which region
        boxes are given)."""
        try:
            thumb = open_image(image)
            source_size = thumb.info.get("source_size", thumb.size)
        except HslDemoError:  # gone or unreadable since indexing: a grey square, never the file
            thumb = Image.new("RGB", (self.side, self.side), PLACEHOLDER_GREY)
            source_size = thumb.size
        thumb.thumbnail((self.side, self.side))
        return thumb, source_size

    @staticmethod
    def _save(thumb: Image.Image, path: Path) -> None:
        with atomic_file(path, "wb") as f:  # concurrent requests for one photo: one complete file
            thumb.convert("RGB").save(f, "WEBP", quality=85)


MARK_COLOURS = ["#ff2d55", "#ffcc00", "#34c759", "#0a84ff", "#bf5af2", "#ff9f0a"]


Box = tuple[float, float, float, float]


def mark_box(mark: RegionMark, size: tuple[int, int], source_size: tuple[int, int]) -> Box | None:
    """The mark's box in the pixels of an image of `size` made from a photo of `source_size`
    (None for a mark with no area: a hand-edited catalog may hold one)."""
    w, h = size
    if mark.box is not None:
        if min(source_size) <= 0:
            return None
        sx, sy = w / source_size[0], h / source_size[1]
        x0, y0, x1, y1 = mark.box
        box = x0 * sx, y0 * sy, x1 * sx, y1 * sy
        return box if all(map(math.isfinite, box)) and box[0] < box[2] and box[1] < box[3] else None
    row, col, n = mark.cell or (0, 0, 1)
    if n <= 0:
        return None
    side = min(w, h)  # the backbone saw the centred square (resize, then centre crop)
    left, top, cell = (w - side) / 2, (h - side) / 2, side / n
    return left + col * cell, top + row * cell, left + (col + 1) * cell, top + (row + 1) * cell


_fonts = threading.local()  # per thread: PIL's FreeType faces are not safe to share between threads
MAX_TAGS = 512  # rendered labels kept (each at most LABEL_CHARS wide: a few MB in all)
LABEL_CHARS = 32  # a label is a visitor's query: drawn cut to this, so its size is bounded


def _label_tag(label: str, size: int, colour: str) -> Image.Image:
    """The label, cut to LABEL_CHARS, on its coloured tag."""
    return _rendered_tag(shorten(label, LABEL_CHARS), size, colour)


@functools.lru_cache(maxsize=MAX_TAGS)  # text rendering is most of the cost of marking a thumbnail
def _rendered_tag(label: str, size: int, colour: str) -> Image.Image:
    fonts = _fonts.__dict__.setdefault("by_size", {})
    font = fonts.get(size) or fonts.setdefault(size, ImageFont.load_default(size=size))
    left, top, right, bottom = font.getbbox(label)
    tag = Image.new("RGB", (right - left + 4, bottom - top + 4), colour)
    ImageDraw.Draw(tag).text((2 - left, 2 - top), label, fill="black", font=font)
    return tag  # shared by every thread: only ever read once made


def draw_marks(thumb: Image.Image, source_size: tuple[int, int], marks: list[RegionMark]) -> Image.Image:
    """A copy of `thumb` with each mark as a coloured box and its label on a tag above it."""
    out = thumb.convert("RGB")
    draw = ImageDraw.Draw(out)
    for i, mark in enumerate(marks):
        colour = MARK_COLOURS[i % len(MARK_COLOURS)]
        box = mark_box(mark, out.size, source_size)
        if box is None:
            continue
        x0, y0, x1, y1 = box
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=max(2, out.width // 100))
        tag = _label_tag(mark.label, max(8, out.width // 22), colour)
        tag_y = y0 - tag.height if y0 - tag.height >= 0 else y0
        tag_x = min(max(x0, 0), max(out.width - tag.width, 0))
        out.paste(tag, (round(tag_x), round(tag_y)))
    return out
