"""Describe: a text query, re-ranked by Hierarchical Similarity Learning (HSL).

Stage 1 takes the top `candidates` by the backbone's global cosine from FAISS; stage 2
re-ranks them with the HSL head (hsl_demo/models/hsl.py). The head's image side does not
depend on the query, so `hsl-demo index` stores it (HslStore, int8) and a search only encodes
the text.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..catalog import HSL_FILES
from ..defaults import HSL_VARIANTS
from ..errors import HslDemoError
from ..features import dequantize, quantize
from ..models.hsl import GRANULARITIES, HSLHead, ImageSide
from ..results import SearchResponse, Term, rounded
from . import Mode, register

if TYPE_CHECKING:
    from ..catalog import Catalog
    from ..search import Retriever

log = logging.getLogger(__name__)
BEST_REGION = "object match"  # the label of the region marked on each result


@dataclass
class HslBreakdown:
    """The backbone's global cosine and, per level, the object- and image-granularity terms,
    each with its weight; `final` is their weighted sum. A global-only ranking (no head, or the
    `global` variant) has no levels and weight 1."""

    global_: Term
    levels: list[dict[str, Term]]  # level 1, 2, ...: {"object": Term, "image": Term}
    final: float

    def to_dict(self) -> dict:
        out: dict = {"global": self.global_.to_dict()}
        for n, level in enumerate(self.levels, 1):
            out[f"level{n}"] = {g: term.to_dict() for g, term in level.items()}
        out["final"] = rounded(self.final)
        return out

    @classmethod
    def global_only(cls, similarity: float) -> HslBreakdown:
        return cls(Term(similarity, 1.0), [], similarity)

    @classmethod
    def of_terms(cls, head: HSLHead, terms: list[float], weights: list[float] | None = None) -> HslBreakdown:
        """From one item's (1 + 2L) term similarities, in `head.term_names()` order (`weights`:
        the head's, when the caller has them already)."""
        weights = weights if weights is not None else head.weights.tolist()
        levels = [{g: Term(terms[1 + 2 * lv + i], weights[1 + 2 * lv + i]) for i, g in enumerate(GRANULARITIES)}
                  for lv in range(head.levels)]
        return cls(Term(terms[0], weights[0]), levels, sum(s * w for s, w in zip(terms, weights)))


@dataclass
class HslStore:
    """The query-independent half of the HSL score for N items, int8 with float16 scales."""

    hsl_objects: np.ndarray  # (N, L, R, d) int8
    hsl_object_scale: np.ndarray  # (N, L, R) float16
    hsl_pooled: np.ndarray  # (N, L, d) int8
    hsl_pooled_scale: np.ndarray  # (N, L) float16
    hsl_mask: np.ndarray  # (N, R) bool

    def take(self, rows: np.ndarray) -> ImageSide:
        """The float image side of the given rows (what a re-rank of candidates reads)."""
        rows = np.asarray(rows)
        return ImageSide(
            objects=dequantize(np.asarray(self.hsl_objects[rows]), np.asarray(self.hsl_object_scale[rows])),
            pooled=dequantize(np.asarray(self.hsl_pooled[rows]), np.asarray(self.hsl_pooled_scale[rows])),
            mask=torch.from_numpy(np.asarray(self.hsl_mask[rows])),
        )

    def bytes_per_item(self) -> int:
        return int(sum(getattr(self, k)[0].nbytes for k in HSL_FILES))

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in HSL_FILES}


@torch.no_grad()
def encode_hsl_store(head: HSLHead, embeds: torch.Tensor, regions: torch.Tensor, mask: torch.Tensor,
                     batch: int = 1024, progress: bool = False) -> HslStore:
    """Run the image side of `head` over every item and quantise the result."""
    from tqdm.auto import tqdm

    parts: dict[str, list[np.ndarray]] = {k: [] for k in HSL_FILES}
    for i in tqdm(range(0, len(embeds), batch), desc="HSL image side", disable=not progress):
        side = head.encode_image_side(embeds[i:i + batch].float(), regions[i:i + batch].float(), mask[i:i + batch])
        for name, value in zip(HSL_FILES, (*quantize(side.objects), *quantize(side.pooled), side.mask.numpy())):
            parts[name].append(value)
    return HslStore(**{k: np.concatenate(v) for k, v in parts.items()})


def image_side(catalog: Catalog, head: HSLHead) -> HslStore:
    """The HSL image side of every item for `head`: precomputed at index time when the catalog
    was built with this very head, otherwise computed now (logged: re-index to skip it)."""
    from ..models import head_fingerprint

    stored = catalog.manifest.get("heads", {}).get("hsl", {})
    if catalog.hsl is not None and stored.get("fingerprint") == head_fingerprint(head):
        return HslStore(**{k: np.asarray(v) for k, v in catalog.hsl.items()})  # still mapped; faster to index
    log.warning("catalog %r has no HSL features precomputed for this head; computing them for %d items now "
                "(re-index with `hsl-demo index` to skip this)", catalog.name, len(catalog))
    from tqdm.auto import tqdm

    chunk = 8192  # the catalog's float features are read a chunk at a time (an int8 store is kept)
    parts = [encode_hsl_store(head, torch.from_numpy(catalog.vectors(rows)), *catalog.region_features(rows))
             for rows in tqdm([np.arange(a, min(a + chunk, len(catalog))) for a in range(0, len(catalog), chunk)],
                              desc="HSL image side", unit="chunk", disable=len(catalog) <= 10_000)]
    return HslStore(**{k: np.concatenate([getattr(p, k) for p in parts]) for k in HSL_FILES})


@torch.no_grad()
def search(retriever: Retriever, text: str, k: int, variant: str) -> SearchResponse:
    """The k best items for a description. `variant` ranks by only some HSL terms (ablations):
    full, image or object (one granularity, its levels summed), or global (stage 1 alone)."""
    head = retriever.hsl
    notices = retriever.backbone.unknown_words_notice(text)
    feats = retriever.backbone.text_features([text])
    scores, rows = retriever.catalog.search(feats.embeds.cpu().numpy(), max(k, retriever.candidates))
    keep = rows[0] >= 0
    rows, scores = rows[0][keep], scores[0][keep]
    if head is None or variant == "global":
        return SearchResponse(retriever.results(rows[:k], scores[:k],
                                                [HslBreakdown.global_only(float(s)) for s in scores[:k]]), notices)
    side = retriever.hsl_store.take(rows)
    used = int(feats.mask.any(0).nonzero().max()) + 1  # drop the trailing padding: faster, same result
    query = head.encode_text_side(feats.tokens[:, :used].cpu(), feats.mask[:, :used].cpu())
    terms = head.similarities(query, side, torch.from_numpy(scores)[None])[0]  # (n, terms)
    final = head.combine(terms, variant)
    order = torch.argsort(final, descending=True, stable=True)[:k]
    weights = head.weights.tolist()
    breakdowns = [HslBreakdown.of_terms(head, row, weights) for row in terms[order].tolist()]
    top = ImageSide(side.objects[order], side.pooled[order], side.mask[order])
    marks = [[(region, BEST_REGION)] for region in head.best_regions(query, top)[0].tolist()]
    return SearchResponse(retriever.results(rows[order.numpy()], final[order].numpy(), breakdowns, marks), notices)


def validate(query: dict, where: str) -> None:
    if not isinstance(query.get("text"), str) or not query["text"].strip():
        raise HslDemoError(f"{where}: \"text\" must be a non-empty string")


def rank(retriever: Retriever, query: dict, k: int, variant: str) -> list[SearchResponse]:
    return [retriever.search_text(query["text"], k=k, variant=variant)]


MODE = register(Mode(
    name="describe", title="Describe", head="hsl", head_class=lambda: HSLHead,
    head_summary="HSL re-ranking head (hierarchical similarity over levels and object/image granularity)",
    variants=HSL_VARIANTS, breakdown=lambda: HslBreakdown, validate=validate, rank=rank,
    aliases=("text",),
))
