"""HSL: Hierarchical Similarity Learning for language-based product image retrieval.

Reads top to bottom:
  image side  [global embedding; region features] -> L stacked encoder blocks; at each level
              every region becomes an *object* vector and an attention pool gives the *image*
              vector. Query-independent, so catalogs store it at index time.
  text side   token features -> L stacked encoder blocks; at each level the valid tokens are
              mean-pooled, and two heads give a query vector for objects and one for images.
  score       at each level, object granularity = query . every region (aggregated: max by
              default) and image granularity = query . pooled image; these 2L similarities
              and the backbone's global cosine are summed with learned non-negative weights.

Untrained, every weight but the global one is zero (and every encoder block is an identity),
so the head ranks exactly as the backbone's global cosine: any open_clip backbone works
zero-shot, and training can only add to it.

Differences from the released HSL code (liufh1/HSL), and why:
- regions are the backbone's pooled patch tokens (or patch tokens pooled per box), not
  Faster R-CNN boxes, because they come with every open_clip model;
- the level weights are learned and shown (the paper fixed them at 0.5 and 1);
- the backbone's global cosine is kept as one more term, which is what makes "untrained =
  backbone" exact and lets the first stage's FAISS score carry into the final score.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from .similarity import AttentionPool, ResidualEncoderBlock, aggregate, identity_linear, masked_mean, non_negative

GRANULARITIES = ("object", "image")


@dataclass
class ImageSide:
    """Per-level image features of N items, as a catalog stores them."""

    objects: torch.Tensor  # (N, L, R, d) unit vectors, one per region and level
    pooled: torch.Tensor  # (N, L, d) unit vectors, one per level
    mask: torch.Tensor  # (N, R) True where a region exists


@dataclass
class TextSide:
    objects: torch.Tensor  # (B, L, d) query vectors for object granularity
    images: torch.Tensor  # (B, L, d) query vectors for image granularity


# The model card save_pretrained writes (the Hub mixin's card support): filled by the trainer.
HSL_CARD = """---
{{ card_data }}
---
# HSL head (hsl-demo)

Hierarchical Similarity Learning re-ranking head: {{ levels }} stacked encoder levels (width
{{ dim }}) over the backbone's region and text-token features; at each level an object- and an
image-granularity similarity, combined with the backbone's global cosine by learned
non-negative weights ({{ weights }}).

Trained by `hsl-demo train hsl` ({{ steps }} steps, batch {{ batch }}) on the frozen backbone
`{{ backbone }}`. Load with `hsl_demo.models.hsl.HSLHead.from_pretrained(folder)`; hsl-demo loads
it from the `hsl/` subfolder of a model folder.
"""


class HSLHead(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="hsl-demo",
    tags=["hsl-demo", "image-retrieval", "open_clip"],
    model_card_template=HSL_CARD,
):
    def __init__(
        self,
        embed_dim: int = 512,
        dim: int = 128,
        levels: int = 2,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        object_aggregation: str = "max",
        topk: int = 3,
        dropout: float = 0.0,
    ):
        super().__init__()
        if levels < 1:
            raise ValueError("HSL needs at least one level")
        aggregate(torch.zeros(1, 1), torch.ones(1, 1, dtype=torch.bool), object_aggregation)  # validates the name
        self.embed_dim, self.dim, self.levels = embed_dim, dim, levels
        self.object_aggregation, self.topk = object_aggregation, topk

        self.image_in = identity_linear(embed_dim, dim)
        self.image_blocks = nn.ModuleList(ResidualEncoderBlock(dim, heads, mlp_ratio, dropout) for _ in range(levels))
        self.object_out = nn.ModuleList(identity_linear(dim, dim) for _ in range(levels))
        self.image_pool = nn.ModuleList(AttentionPool(dim) for _ in range(levels))

        self.text_in = identity_linear(embed_dim, dim)
        self.text_blocks = nn.ModuleList(ResidualEncoderBlock(dim, heads, mlp_ratio, dropout) for _ in range(levels))
        self.query_object = nn.ModuleList(identity_linear(dim, dim) for _ in range(levels))
        self.query_image = nn.ModuleList(identity_linear(dim, dim) for _ in range(levels))

        # Combination weights: [global, level1 object, level1 image, level2 object, ...].
        raw = torch.zeros(1 + 2 * levels)
        raw[0] = 1.0
        self.raw_weights = nn.Parameter(raw)
        self.logit_scale = nn.Parameter(torch.tensor(2.7))  # exp -> ~15; training only

    # ---- the two sides ---------------------------------------------------------------------
    def encode_image_side(self, global_embeds: torch.Tensor, regions: torch.Tensor, mask: torch.Tensor) -> ImageSide:
        """global_embeds (N, D), regions (N, R, D), mask (N, R) -> per-level image features."""
        x = torch.cat([global_embeds[:, None], regions], 1)
        full_mask = torch.cat([torch.ones_like(mask[:, :1]), mask], 1)
        x = self.image_in(F.normalize(x.float(), dim=-1))
        objects, pooled = [], []
        for block, out, pool in zip(self.image_blocks, self.object_out, self.image_pool):
            x = block(x, full_mask)
            objects.append(F.normalize(out(x[:, 1:]), dim=-1))
            pooled.append(F.normalize(pool(x, full_mask), dim=-1))
        return ImageSide(torch.stack(objects, 1), torch.stack(pooled, 1), mask)

    def encode_text_side(self, tokens: torch.Tensor, mask: torch.Tensor) -> TextSide:
        """tokens (B, T, D), mask (B, T) -> per-level query vectors."""
        x = self.text_in(F.normalize(tokens.float(), dim=-1))
        objects, images = [], []
        for block, to_object, to_image in zip(self.text_blocks, self.query_object, self.query_image):
            x = block(x, mask)
            sentence = masked_mean(x, mask)
            objects.append(F.normalize(to_object(sentence), dim=-1))
            images.append(F.normalize(to_image(sentence), dim=-1))
        return TextSide(torch.stack(objects, 1), torch.stack(images, 1))

    # ---- scoring ---------------------------------------------------------------------------
    @property
    def weights(self) -> torch.Tensor:
        """The non-negative combination weights, in `term_names` order."""
        return non_negative(self.raw_weights)

    def term_names(self) -> list[str]:
        return ["global"] + [f"level{lv}/{g}" for lv in range(1, self.levels + 1) for g in GRANULARITIES]

    def similarities(self, text: TextSide, image: ImageSide, global_cos: torch.Tensor) -> torch.Tensor:
        """Every query against every item: (B, N, 1 + 2L) in `term_names` order.

        global_cos is the backbone's (B, N) cosine of the global embeddings.
        """
        n, n_levels, n_regions, dim = image.objects.shape
        # One batched matmul per level (einsum picks a path ~6x slower on CPU for one query).
        flat = image.objects.transpose(0, 1).reshape(n_levels, n * n_regions, dim)
        per_region = torch.bmm(flat, text.objects.permute(1, 2, 0)).reshape(n_levels, n, n_regions, -1)
        per_region = per_region.permute(3, 1, 0, 2)  # (B, N, L, R)
        objects = aggregate(per_region, image.mask[None, :, None, :], self.object_aggregation, self.topk)
        images = torch.einsum("bld,nld->bnl", text.images, image.pooled)
        per_level = torch.stack([objects, images], -1).flatten(2)  # (B, N, 2L): l1 obj, l1 img, ...
        return torch.cat([global_cos[..., None].to(per_level.dtype), per_level], -1)

    def best_regions(self, text: TextSide, image: ImageSide) -> torch.Tensor:
        """(B, N) the region that gives each item its object-granularity match: the argmax of
        the query-region similarities, the levels summed by their object weights (equally
        when every object weight is zero, as in a head that learned to rank by image terms)."""
        per_region = torch.einsum("bld,nlrd->bnlr", text.objects, image.objects)
        level_weights = self.weights[1::2].detach()
        if float(level_weights.sum()) <= 0:
            level_weights = torch.ones_like(level_weights)
        scores = torch.einsum("bnlr,l->bnr", per_region, level_weights.to(per_region))
        return scores.masked_fill(~image.mask[None], float("-inf")).argmax(-1)

    def combine(self, terms: torch.Tensor, variant: str = "full") -> torch.Tensor:
        """The score a variant ranks by: the weighted sum of the terms (see `variant_weights`)."""
        return terms @ self.variant_weights(variant).to(terms)

    def variant_weights(self, which: str = "full") -> torch.Tensor:
        """Term weights of a variant. full: the learned weights (the real score). global: the
        backbone's cosine alone. object / image: that granularity alone, its levels summed
        with equal weights (the learned weight of a granularity can be zero, and each term
        was trained to rank on its own, so this is the fair single-granularity ranking)."""
        names = self.term_names()
        if which == "full":
            return self.weights
        if which == "global":
            return torch.tensor([float(n == "global") for n in names])
        if which in GRANULARITIES:
            return torch.tensor([float(n.endswith("/" + which)) for n in names])
        raise ValueError(f"unknown HSL variant {which!r} (full, object, image, global)")
