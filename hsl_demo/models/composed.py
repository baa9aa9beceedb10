"""Composed queries: a reference image plus a modification text, with adaptive weights.

After "Progressive Learning for Image Retrieval with Hybrid-Modality Queries" (Zhao, Song,
Jin; SIGIR 2022); the composition follows the closest public anchor, CLIP4Cir's Combiner:

  image, text embeddings -> Linear-ReLU-Dropout projections, concatenated
  weigher   the concatenation -> MLP -> sigmoid = w_text, and w_image = 1 - w_text
  residual  the concatenation -> MLP -> a correction vector
  query     normalize(w_image * image + w_text * text + residual)

Unlike the Combiner, the weights are also *self-supervised*: `weight_targets` turns how well
the image alone and the text alone match the target into a soft target for w_text, trained
beside the contrastive loss. And they are returned with every query, so the app can show them.

Untrained, the residual branch and the weigher's last layer are zero: w_image = w_text = 0.5
and the query is the normalised equal-weight sum of the two embeddings (a known zero-shot
baseline).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn


@dataclass
class ComposedQuery:
    embeds: torch.Tensor  # (B, D) unit query vectors
    w_image: torch.Tensor  # (B,) how much the reference image counts
    w_text: torch.Tensor  # (B,) how much the modification text counts (w_image + w_text = 1)


# The model card save_pretrained writes (the Hub mixin's card support): filled by the trainer.
COMPOSED_CARD = """---
{{ card_data }}
---
# Composed-query head (hsl-demo)

A reference image plus a modification text ("make it blue and striped") composed into one
query, after "Progressive Learning for Image Retrieval with Hybrid-Modality Queries" (Zhao,
Song, Jin; SIGIR 2022) with a CLIP4Cir-style combiner: normalize(w_image * image + w_text *
text + residual). Image/text weights: {{ weights }}.

Trained by `{{ trained_by }}` ({{ steps }} steps, batch {{ batch }}) on the frozen backbone
`{{ backbone }}`. hsl-demo loads it from the `composed/` subfolder of a model folder.
"""


class ComposedHead(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="hsl-demo",
    tags=["hsl-demo", "composed-image-retrieval", "open_clip"],
    model_card_template=COMPOSED_CARD,
):
    def __init__(self, embed_dim: int = 512, hidden: int = 512, dropout: float = 0.1, adaptive: bool = True):
        super().__init__()
        # adaptive=False is the ablation "combiner without weights": w_image = w_text = 0.5 always.
        self.embed_dim, self.hidden, self.adaptive = embed_dim, hidden, adaptive
        self.image_proj = nn.Sequential(nn.Linear(embed_dim, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.text_proj = nn.Sequential(nn.Linear(embed_dim, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.weigher = nn.Sequential(nn.Linear(2 * hidden, hidden // 4), nn.ReLU(), nn.Linear(hidden // 4, 1))
        self.residual = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
                                      nn.Linear(hidden, embed_dim))
        for last in (self.weigher[-1], self.residual[-1]):  # untrained = equal-weight sum
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        self.logit_scale = nn.Parameter(torch.tensor(2.7))  # exp -> ~15; training only

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> ComposedQuery:
        """image, text: (B, D) backbone embeddings (normalised here) -> the composed query."""
        image, text = F.normalize(image.float(), dim=-1), F.normalize(text.float(), dim=-1)
        both = torch.cat([self.image_proj(image), self.text_proj(text)], -1)
        logit = self.weigher(both).squeeze(-1)
        w_text = torch.sigmoid(logit if self.adaptive else torch.zeros_like(logit))
        w_image = 1.0 - w_text
        query = w_image[:, None] * image + w_text[:, None] * text + self.residual(both)
        return ComposedQuery(F.normalize(query, dim=-1), w_image, w_text)


FIXED_IMAGE_WEIGHT = {"sum": 0.5, "image": 1.0, "text": 0.0}


@torch.no_grad()
def compose_query(head: ComposedHead, image: torch.Tensor, text: torch.Tensor,
                  variant: str = "adaptive") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(query embeds, w_image, w_text) of B composed queries. image, text: (B, D) embeddings.

    adaptive: the head's query and weights. sum, image, text: the normalised weighted sum with
    fixed weights 0.5/0.5, 1/0, 0/1 (the baselines of the ablation).
    """
    if variant == "adaptive":
        query = head(image, text)
        return query.embeds, query.w_image, query.w_text
    if variant not in FIXED_IMAGE_WEIGHT:
        raise ValueError(f"unknown composed variant {variant!r} (adaptive, {', '.join(FIXED_IMAGE_WEIGHT)})")
    w_image = torch.full((len(image),), FIXED_IMAGE_WEIGHT[variant])
    embeds = F.normalize(w_image[:, None] * image.float() + (1 - w_image[:, None]) * text.float(), dim=-1)
    return embeds, w_image, 1 - w_image


def weight_targets(image: torch.Tensor, text: torch.Tensor, target: torch.Tensor,
                   temperature: float = 0.05) -> torch.Tensor:
    """The self-supervised target for w_text: a softmax over how well the text alone and the
    image alone match the target (cosine similarities of unit vectors)."""
    sims = torch.stack([(F.normalize(text, dim=-1) * target).sum(-1),
                        (F.normalize(image, dim=-1) * target).sum(-1)], -1)
    return (sims / temperature).softmax(-1)[:, 0]


def weight_loss(query: ComposedQuery, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the predicted w_text against its soft target."""
    return F.binary_cross_entropy(query.w_text.clamp(1e-6, 1 - 1e-6), targets)
