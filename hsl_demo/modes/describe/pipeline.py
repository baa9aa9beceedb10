"""Describe's search: FAISS candidates by global cosine, then the HSL re-rank, and the head's
image side of a catalog (computed at index time and stored as int8, or now)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ...features import dequantize, quantize
from ...models.hsl import GRANULARITIES, HSLHead, ImageSide
from ...results import SearchResponse
from .types import HslBreakdown

if TYPE_CHECKING:
    from ...catalog import Catalog

log = logging.getLogger(__name__)
BEST_REGION = "object match"  # the label of the region marked on each result
HEAD = "hsl"


@dataclass
class HslStore:
    """The query-independent half of the HSL score for N items, int8 with float16 scales."""

    objects: np.ndarray  # (N, L, R, d) int8
    object_scale: np.ndarray  # (N, L, R) float16
    pooled: np.ndarray  # (N, L, d) int8
    pooled_scale: np.ndarray  # (N, L) float16
    mask: np.ndarray  # (N, R) bool

    def take(self, rows: np.ndarray) -> ImageSide:
        """The float image side of the given rows (what a re-rank of candidates reads)."""
        rows = np.asarray(rows)
        return ImageSide(
            objects=dequantize(np.asarray(self.objects[rows]), np.asarray(self.object_scale[rows])),
            pooled=dequantize(np.asarray(self.pooled[rows]), np.asarray(self.pooled_scale[rows])),
            mask=torch.from_numpy(np.asarray(self.mask[rows])),
        )

    def bytes_per_item(self) -> int:
        return int(sum(array[0].nbytes for array in self.arrays().values()))

    def arrays(self) -> dict[str, np.ndarray]:
        return {"objects": self.objects, "object_scale": self.object_scale, "pooled": self.pooled,
                "pooled_scale": self.pooled_scale, "mask": self.mask}

    @classmethod
    def concatenate(cls, parts: list[HslStore]) -> HslStore:
        return cls(**{k: np.concatenate([p.arrays()[k] for p in parts]) for k in parts[0].arrays()})


@torch.no_grad()
def encode_hsl_store(head: HSLHead, embeds: torch.Tensor, regions: torch.Tensor, mask: torch.Tensor,
                     batch: int = 1024, progress: bool = False) -> HslStore:
    """Run the image side of `head` over every item and quantise the result."""
    from tqdm.auto import tqdm

    parts = []
    for i in tqdm(range(0, len(embeds), batch), desc="HSL image side", disable=not progress):
        side = head.encode_image_side(embeds[i:i + batch].float(), regions[i:i + batch].float(), mask[i:i + batch])
        parts.append(HslStore(*quantize(side.objects), *quantize(side.pooled), side.mask.numpy()))
    return HslStore.concatenate(parts)


def image_side(catalog: Catalog, head: HSLHead) -> HslStore:
    """The HSL image side of every item for `head`: precomputed at index time when the catalog
    was built with this very head, otherwise computed now (logged: re-index to skip it)."""
    from ...models import head_fingerprint

    stored = catalog.stores.get(HEAD)
    if stored is not None and catalog.head_fingerprint(HEAD) == head_fingerprint(head):
        return _checked(catalog, HslStore(**{k: np.asarray(stored.get(k)) for k in HslStore.__dataclass_fields__}))
    log.warning("catalog %r has no HSL features precomputed for this head; computing them for %d items now "
                "(re-index with `hsl-demo index` to skip this)", catalog.name, len(catalog))
    from tqdm.auto import tqdm

    chunk = 8192  # the catalog's float features are read a chunk at a time (an int8 store is kept)
    parts = [encode_hsl_store(head, torch.from_numpy(catalog.vectors(rows)), *catalog.region_features(rows))
             for rows in tqdm([np.arange(a, min(a + chunk, len(catalog))) for a in range(0, len(catalog), chunk)],
                              desc="HSL image side", unit="chunk", disable=len(catalog) <= 10_000)]
    return HslStore.concatenate(parts)


def _checked(catalog: Catalog, store: HslStore) -> HslStore:
    """A stored image side read back: objects (N, L, R, d) int8 with (N, L, R) scales, pooled
    (N, L, d) int8 with (N, L) scales, mask (N, R) bool."""
    from ...catalog import check_array

    n = len(catalog)
    check_array(catalog.root, f"{HEAD}_objects.npy", store.objects, (n, None, None, None), "i")
    _, levels, regions, dim = store.objects.shape
    for name, array, shape, kind in (("object_scale", store.object_scale, (n, levels, regions), "f"),
                                     ("pooled", store.pooled, (n, levels, dim), "i"),
                                     ("pooled_scale", store.pooled_scale, (n, levels), "f"),
                                     ("mask", store.mask, (n, regions), "b")):
        check_array(catalog.root, f"{HEAD}_{name}.npy", array, shape, kind)
    return store


@torch.no_grad()
def search(retriever, text: str, k: int, variant: str) -> SearchResponse:
    """The k best items for a description. `variant` ranks by only some HSL terms (ablations):
    full, image or object (one granularity, its levels summed), or global (stage 1 alone)."""
    head: HSLHead | None = retriever.heads.get(HEAD)
    notices = retriever.backbone.unknown_words_notice(text)
    feats = retriever.backbone.text_features([text])
    scores, rows = retriever.catalog.search(feats.embeds.cpu().numpy(), max(k, retriever.candidates))
    keep = rows[0] >= 0
    rows, scores = rows[0][keep], scores[0][keep]
    if head is None or variant == "global":
        return SearchResponse(retriever.results(rows[:k], scores[:k],
                                                [HslBreakdown.global_only(float(s)) for s in scores[:k]]), notices)
    if not retriever.backbone.has_regions and variant in ("full", "object"):
        variant = "image"  # one region per photo: an object term would be the image term again, marks meaningless
    side = retriever.prepared("describe").take(rows)
    used = int(feats.mask.any(0).nonzero().max()) + 1  # drop the trailing padding: faster, same result
    query = head.encode_text_side(feats.tokens[:, :used].cpu(), feats.mask[:, :used].cpu())
    terms = head.similarities(query, side, torch.from_numpy(scores)[None])[0]  # (n, terms)
    final = head.combine(terms, variant)
    order = torch.argsort(final, descending=True, stable=True)[:k]
    weights = head.weights.tolist()
    breakdowns = [HslBreakdown.of_terms(head.levels, GRANULARITIES, row, weights) for row in terms[order].tolist()]
    top = ImageSide(side.objects[order], side.pooled[order], side.mask[order])
    marks = ([[(region, BEST_REGION)] for region in head.best_regions(query, top)[0].tolist()]
             if retriever.backbone.has_regions else None)
    return SearchResponse(retriever.results(rows[order.numpy()], final[order].numpy(), breakdowns, marks), notices)
