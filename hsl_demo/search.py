"""Search in two stages: FAISS candidates by global cosine, then a re-rank by the head.

`Retriever` is the Python API behind the CLI and the app:

    r = Retriever.from_pretrained()                # embedded model + products catalog
    for hit in r.search_text("green dotted scarf", k=5):
        print(hit.rank, hit.id, hit.title, hit.score, hit.levels)

`levels` explains the score: for HSL, the backbone's global cosine and, per level, the
object- and image-granularity similarities, each with its weight, and the final sum.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .backbone import Backbone
from .catalog import Catalog
from .defaults import COMPOSED_VARIANTS, HSL_VARIANTS, default_catalog, default_model
from .errors import HslDemoError
from .images import open_image
from .models import load_head
from .models.composed import ComposedHead
from .models.hsl import HSLHead

DEFAULT_CANDIDATES = 200


@dataclass
class SearchResult:
    rank: int
    id: str
    title: str
    score: float  # the final score the ranking is sorted by
    image: Path
    levels: dict = field(default_factory=dict)  # the score's breakdown (filled by the heads)
    metadata: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "rank": self.rank,
            "id": self.id,
            "title": self.title,
            "score": round(self.score, 6),
            "image": str(self.image),
            "levels": self.levels,
        }


def clean_text(text: str | None) -> str:
    text = " ".join((text or "").split())
    if not text:
        raise HslDemoError("empty query: type a description of the product")
    return text


class Retriever:
    """A backbone, its heads and a catalog, checked to belong together."""

    def __init__(self, backbone: Backbone, catalog: Catalog, candidates: int = DEFAULT_CANDIDATES,
                 hsl: HSLHead | None = None, composed: ComposedHead | None = None):
        catalog.check_model(backbone)
        self.backbone = backbone
        self.catalog = catalog
        self.candidates = _check_k(candidates)
        self.hsl = hsl
        # Without a trained head, composed queries are the equal-weight sum (zero-shot baseline).
        self.composed = (composed or ComposedHead(embed_dim=backbone.embed_dim)).eval()
        self.hsl_store = None
        if hsl is not None:
            if hsl.embed_dim != backbone.embed_dim:
                raise HslDemoError(f"the HSL head expects {hsl.embed_dim}-d features, the backbone gives "
                                   f"{backbone.embed_dim}-d")
            self.hsl_store = catalog.hsl_image_side(hsl)

    @classmethod
    def from_pretrained(
        cls, model: str | None = None, catalog: str | Path | None = None, device: str | None = None,
        candidates: int = DEFAULT_CANDIDATES,
    ) -> Retriever:
        """Load a model (folder, Hub repo id or open_clip name; default: the embedded demo
        model, with its heads) and open a catalog (name or folder; default: the demo products)."""
        opened = Catalog.open(catalog or default_catalog())  # cheap checks first
        backbone = Backbone.load(model or default_model(), device=device)
        heads = load_heads(backbone)
        return cls(backbone, opened, candidates, hsl=heads.get("hsl"), composed=heads.get("composed"))

    def _results(self, rows: np.ndarray, scores: np.ndarray, levels: list[dict]) -> list[SearchResult]:
        out = []
        for i, (row, score) in enumerate(zip(rows.tolist(), scores.tolist())):
            item = self.catalog.items[row]
            out.append(SearchResult(
                rank=i + 1,
                id=item["id"],
                title=item.get("title", item["id"]),
                score=float(score),
                image=self.catalog.image_path(row),
                levels=levels[i],
                metadata={k: v for k, v in item.items() if k not in ("id", "title", "image")},
            ))
        return out

    @torch.no_grad()
    def search_text(self, text: str, k: int = 10, variant: str = "full") -> list[SearchResult]:
        """The k best items for a description, best first.

        Stage 1 takes the top `candidates` (at least k) by global cosine from FAISS; stage 2
        re-ranks them with the HSL head. `variant` ranks by only some HSL terms (ablations):
        full, image or object (one granularity, its levels summed), or global (stage 1 alone).
        """
        text = clean_text(text)
        k = _check_k(k)
        if variant not in HSL_VARIANTS:
            raise HslDemoError(f"unknown variant {variant!r} (one of {', '.join(HSL_VARIANTS)})")
        feats = self.backbone.text_features([text])
        scores, rows = self.catalog.search(feats.embeds.cpu().numpy(), max(k, self.candidates))
        keep = rows[0] >= 0
        rows, scores = rows[0][keep], scores[0][keep]
        if self.hsl is None or variant == "global":
            return self._results(rows[:k], scores[:k], [
                {"global": {"similarity": round(float(s), 6), "weight": 1.0}, "final": round(float(s), 6)}
                for s in scores[:k]])
        side = self.hsl_store.take(rows)
        used = int(feats.mask.any(0).nonzero().max()) + 1  # drop the trailing padding: faster, same result
        query = self.hsl.encode_text_side(feats.tokens[:, :used].cpu(), feats.mask[:, :used].cpu())
        terms = self.hsl.similarities(query, side, torch.from_numpy(scores)[None])[0]  # (n, terms)
        final = self.hsl.combine(terms, variant)
        order = torch.argsort(final, descending=True, stable=True)[:k]
        return self._results(rows[order.numpy()], final[order].numpy(), self.hsl.breakdown(terms[order]))


    @torch.no_grad()
    def search_composed(self, reference: str | Path | Image.Image, text: str | None, k: int = 10,
                        variant: str = "adaptive") -> list[SearchResult]:
        """The k best items for a reference (catalog id, image file or PIL image) changed as
        `text` says. Each result's `levels` carries the query's (w_image, w_text) and the
        result's similarity to the reference image and to the text.

        variant: adaptive (the head's weights), sum (equal weights), image or text alone.
        An empty text is an image-only query (with a warning).
        """
        k = _check_k(k)
        if variant not in COMPOSED_VARIANTS:
            raise HslDemoError(f"unknown variant {variant!r} (one of {', '.join(COMPOSED_VARIANTS)})")
        image, ref_row = self._reference(reference)
        text = " ".join((text or "").split())
        if not text:
            warnings.warn("no modification text: searching by the reference image alone", stacklevel=2)
            variant = "image"
            text_emb = torch.zeros_like(image)
        else:
            text_emb = torch.from_numpy(self.backbone.encode_text([text]))
        if variant == "adaptive":
            query = self.composed(image, text_emb)
            q, w_image, w_text = query.embeds, float(query.w_image), float(query.w_text)
        else:
            w_image = {"sum": 0.5, "image": 1.0, "text": 0.0}[variant]
            w_text = 1.0 - w_image
            q = torch.nn.functional.normalize(w_image * image + w_text * text_emb, dim=-1)
        scores, rows = self.catalog.search(q.numpy(), k + 1)  # +1: the reference itself is dropped
        keep = (rows[0] >= 0) & (rows[0] != ref_row)
        rows, scores = rows[0][keep][:k], scores[0][keep][:k]
        items = torch.from_numpy(self.catalog.embeddings[rows])
        image_sims, text_sims = (items @ image[0]).tolist(), (items @ text_emb[0]).tolist()
        levels = [{"w_image": round(w_image, 6), "w_text": round(w_text, 6), "image_similarity": round(a, 6),
                   "text_similarity": round(b, 6), "final": round(float(f), 6)}
                  for a, b, f in zip(image_sims, text_sims, scores)]
        return self._results(rows, scores, levels)

    def _reference(self, reference: str | Path | Image.Image) -> tuple[torch.Tensor, int]:
        """(1, D) unit embedding of the reference, and its catalog row (-1 for a file)."""
        if isinstance(reference, str) and reference in self.catalog:
            row = self.catalog.row(reference)
            return torch.from_numpy(self.catalog.embeddings[row:row + 1].copy()), row
        if isinstance(reference, (str, Path)) and not Path(reference).is_file():
            raise HslDemoError(f"reference {str(reference)!r}: not an item id in catalog {self.catalog.name!r} "
                               "and not an image file")
        image = open_image(reference)
        return torch.from_numpy(self.backbone.encode_images([image])), -1


def load_heads(backbone: Backbone) -> dict:
    """The trained heads in the backbone's model folder (none for a bare open_clip name)."""
    heads = {}
    folder = backbone.folder
    for name, cls in (("hsl", HSLHead), ("composed", ComposedHead)):
        if folder is not None and (folder / name).is_dir():
            heads[name] = load_head(cls, folder / name)
    return heads


def _check_k(k: int) -> int:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise HslDemoError(f"k must be a positive whole number, not {k!r}")
    return int(k)
