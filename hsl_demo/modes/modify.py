"""Modify: a reference product changed by a text (composed query), with adaptive weights.

The composed head (hsl_demo/models/composed.py) mixes the reference's and the text's
embeddings with a weight per query; the mix is searched in the catalog's global index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..defaults import COMPOSED_VARIANTS
from ..errors import HslDemoError
from ..models.composed import ComposedHead, compose_query
from ..results import SearchResponse, rounded
from . import Mode, register

if TYPE_CHECKING:
    from ..search import Retriever

IMAGE_ONLY = "no modification text: searching by the reference image alone"


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


@torch.no_grad()
def search(retriever: Retriever, image: torch.Tensor, ref_row: int, text: str, k: int, variant: str) -> SearchResponse:
    """The k best items for the (1, D) reference embedding changed as `text` says (the
    reference itself, catalog row `ref_row`, is never a result). An empty text is an
    image-only query, with a notice."""
    notices = []
    if not text:
        notices.append(IMAGE_ONLY)
        variant = "image"
        text_emb = torch.zeros_like(image)
    else:
        notices += retriever.backbone.unknown_words_notice(text)
        text_emb = torch.from_numpy(retriever.backbone.encode_text([text]))
    q, w_image, w_text = compose_query(retriever.composed, image, text_emb, variant)
    w_image, w_text = float(w_image[0]), float(w_text[0])
    scores, rows = retriever.catalog.search(q.numpy(), k + 1)  # +1: the reference itself is dropped
    keep = (rows[0] >= 0) & (rows[0] != ref_row)
    rows, scores = rows[0][keep][:k], scores[0][keep][:k]
    items = torch.from_numpy(retriever.catalog.vectors(rows))
    image_sims, text_sims = (items @ image[0]).tolist(), (items @ text_emb[0]).tolist()
    breakdowns = [ComposedBreakdown(w_image, w_text, a, b, float(f)) for a, b, f in zip(image_sims, text_sims, scores)]
    return SearchResponse(retriever.results(rows, scores, breakdowns), notices)


def validate(query: dict, where: str) -> None:
    if not isinstance(query.get("text"), str):
        raise HslDemoError(f"{where}: \"text\" must be a string")
    if not (isinstance(query.get("reference"), str) and query["reference"]):
        raise HslDemoError(f"{where}: a {MODE.name} query needs a \"reference\" (item id or image)")


def rank(retriever: Retriever, query: dict, k: int, variant: str) -> list[SearchResponse]:
    return [retriever.search_composed(query["reference"], query["text"], k=k, variant=variant)]


def mean_text_weight(queries: list[dict], rankings: list[list[SearchResponse]]) -> dict:
    """How much the text counted, on average, per kind of modification."""
    by_kind: dict[str, list[float]] = {}
    for query, rounds in zip(queries, rankings):
        if rounds and rounds[-1].results:
            by_kind.setdefault(query.get("kind", "all"), []).append(rounds[-1].results[0].breakdown.w_text)
    return {"mean_w_text": {kind: round(sum(v) / len(v), 3) for kind, v in by_kind.items()}} if by_kind else {}


MODE = register(Mode(
    name="modify", title="Modify", head="composed", head_class=lambda: ComposedHead,
    head_summary="composed-query head (reference image + modification text, adaptive weights)",
    variants=COMPOSED_VARIANTS, breakdown=lambda: ComposedBreakdown, validate=validate,
    rank=rank, aliases=("composed",), metrics=mean_text_weight,
))
