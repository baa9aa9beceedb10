"""Small copies of catalog photos, the only catalog files the web app serves.

The app hands Gradio exactly one folder to serve, this one: every file in it was written
here, by re-encoding a catalog photo that opened as an image. So a catalog whose photos sit
in several trees, behind symbolic links or next to other files never exposes anything but
its photos' thumbnails (and a catalog entry that points at a non-image serves a placeholder).
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import weakref
from pathlib import Path

from PIL import Image

from .errors import HslDemoError
from .fileio import atomic_file
from .images import open_image

THUMBNAIL_SIDE = 256  # pixels, the longest side: a gallery cell, and the reference preview
PLACEHOLDER_GREY = (235, 235, 235)


class Thumbnails:
    """Thumbnails made on first use, in a folder of their own (a fresh temporary folder,
    removed with this object, unless `folder` is given)."""

    def __init__(self, folder: str | Path | None = None, side: int = THUMBNAIL_SIDE):
        if folder is None:
            folder = tempfile.mkdtemp(prefix="hsl-demo-thumbnails-")
            weakref.finalize(self, shutil.rmtree, folder, True)
        self.folder = Path(folder).resolve()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.side = side

    def of(self, image: str | Path) -> str:
        """The thumbnail of a catalog photo (made now if it is new or the photo changed)."""
        image = Path(image)
        try:
            stat = image.stat()
            version = f"{stat.st_mtime_ns}:{stat.st_size}"
        except OSError:
            version = "missing"
        key = hashlib.sha256(f"{image.resolve()}|{version}".encode()).hexdigest()[:32]
        path = self.folder / f"{key}.webp"
        if not path.is_file():
            try:
                thumb = open_image(image)
            except HslDemoError:  # gone or unreadable since indexing: a grey square, never the file
                thumb = Image.new("RGB", (self.side, self.side), PLACEHOLDER_GREY)
            thumb.thumbnail((self.side, self.side))
            with atomic_file(path, "wb") as f:  # concurrent requests for one photo: one complete file
                thumb.save(f, "WEBP", quality=85)
        return str(path)
