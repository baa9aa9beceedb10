"""Modify's query and the breakdown of each result's score (no torch)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import HslDemoError
from ...results import rounded


@dataclass(frozen=True)
class ComposedQuery:
    """A reference (catalog item id, image file or PIL image) and how the wanted product
    differs from it ("" for an image-only query)."""

    reference: str | Path | Any
    text: str

    @classmethod
    def parse(cls, record: dict, where: str) -> ComposedQuery:
        """A query-file line: {"reference": ID_OR_FILE, "text": "..."}."""
        if not isinstance(record.get("text"), str):
            raise HslDemoError(f"{where}: \"text\" must be a string")
        if not (isinstance(record.get("reference"), str) and record["reference"]):
            raise HslDemoError(f"{where}: a modify query needs a \"reference\" (item id or image)")
        return cls(record["reference"], record["text"])


@dataclass
class ComposedBreakdown:
    """The query's image and text weights, and this result's cosine to the reference image
    and to the text; `final` is its cosine to the composed query."""

    w_image: float
    w_text: float
    image_similarity: float
    text_similarity: float
    final: float

    def to_dict(self) -> dict:
        return {"w_image": rounded(self.w_image), "w_text": rounded(self.w_text),
                "image_similarity": rounded(self.image_similarity), "text_similarity": rounded(self.text_similarity),
                "final": rounded(self.final)}
