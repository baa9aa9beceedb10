"""Modify's search: the reference and the text composed by the head, searched in the catalog's
global index (the reference itself is never a result)."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from ...errors import HslDemoError
from ...images import open_image
from ...models.composed import compose_query
from ...results import SearchResponse
from .types import ComposedBreakdown

HEAD = "composed"
IMAGE_ONLY = "no modification text: searching by the reference image alone"


@torch.no_grad()
def search(retriever, reference: str | Path | Image.Image, text: str, k: int, variant: str) -> SearchResponse:
    """The k best items for the reference changed as `text` says (the reference itself, when
    it is a catalog item, is never a result). An empty text is an image-only query, with a
    notice."""
    image, ref_row = reference_embedding(retriever, reference)
    notices = []
    if not text:
        notices.append(IMAGE_ONLY)
        variant = "image"
        text_emb = torch.zeros_like(image)
    else:
        notices += retriever.backbone.unknown_words_notice(text)
        text_emb = torch.from_numpy(retriever.backbone.encode_text([text]))
    q, w_image, w_text = compose_query(retriever.heads[HEAD], image, text_emb, variant)
    w_image, w_text = float(w_image[0]), float(w_text[0])
    scores, rows = retriever.catalog.search(q.numpy(), k + 1)  # +1: the reference itself is dropped
    keep = (rows[0] >= 0) & (rows[0] != ref_row)
    rows, scores = rows[0][keep][:k], scores[0][keep][:k]
    items = torch.from_numpy(retriever.catalog.vectors(rows))
    image_sims, text_sims = (items @ image[0]).tolist(), (items @ text_emb[0]).tolist()
    breakdowns = [ComposedBreakdown(w_image, w_text, a, b, float(f)) for a, b, f in zip(image_sims, text_sims, scores)]
    return SearchResponse(retriever.results(rows, scores, breakdowns), notices)




def reference_embedding(retriever, reference: str | Path | Image.Image) -> tuple[torch.Tensor, int]:
    """(1, D) unit embedding of the reference, and its catalog row (-1 for a file)."""
    if not isinstance(reference, (str, Path, Image.Image)):
        raise HslDemoError(f"reference must be a catalog item id, an image file or a PIL image, not "
                           f"{type(reference).__name__}")
    catalog = retriever.catalog
    if isinstance(reference, str) and reference in catalog:
        row = catalog.row(reference)
        return torch.from_numpy(catalog.vectors([row]).copy()), row
    if isinstance(reference, (str, Path)) and not Path(reference).is_file():
        raise HslDemoError(f"reference {str(reference)!r}: not an item id in catalog {catalog.name!r} "
                           "and not an image file")
    return torch.from_numpy(retriever.backbone.encode_images([open_image(reference)])), -1
