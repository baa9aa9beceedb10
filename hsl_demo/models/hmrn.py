"""HMRN: Hierarchical Matching and Reasoning for multi-query (drill-down) image retrieval.

After Li et al., Neural Networks 2024 (public code LZH-053/HMRN, built on Drill-down and
SGRAF). A user describes regions of the wanted image one query per round; the image is
scored against all the queries so far. Reads top to bottom:

  inputs     the backbone's region features of each image (patch tokens pooled per box, or
             on a grid) plus its global embedding; one backbone text embedding per query.
             Both are projected to `dim` (identity at init) and unit-normalised.
  local      scalar matching: each query attends over the regions (SCAN attention), and its
             score is the cosine with its attended context; averaged over the queries so far.
  global     scalar matching in context: the regions (with the global embedding) pooled by
             attention vs the queries pooled by attention; cosine.
  reasoning  vector matching: one similarity *vector* per query (its squared difference with
             its attended context, through a linear map) and one for the global pair; a few
             steps of graph reasoning over these nodes; the global node's output -> Linear ->
             sigmoid is the reasoning similarity.
  final      w_local * local + w_global * global + w_reasoning * f(n) * reasoning, where
             f(n) = (1 + ... + n) / (1 + ... + max_rounds) grows with the round n (the seed's
             released code: 0.6, 0.1, 0.3 and max_rounds 10). All in the config.

Differences from the released code, and why:
- queries are the backbone's sentence embeddings (not a bi-GRU over words), and regions are
  the backbone's pooled patch tokens (not Faster R-CNN boxes): both come with any open_clip
  model, and the catalog already stores the regions;
- the local level keeps only the query-to-region branch: it is the one whose per-query
  scores can be shown to a user round by round.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from .similarity import AttentionPool, GraphReasoning, cross_attend, identity_linear

TERMS = ("local", "global", "reasoning")
VARIANTS = ("full", "local+global", "local")  # the rankings variant_weights knows (the mode's too)


@dataclass
class HMRNImages:
    """The query-independent image side of N images."""

    regions: torch.Tensor  # (N, R, dim) unit region vectors
    pooled: torch.Tensor  # (N, dim) the attention-pooled image vector
    mask: torch.Tensor  # (N, R) True where a region exists

    def take(self, rows) -> HMRNImages:
        return HMRNImages(self.regions[rows].float(), self.pooled[rows].float(), self.mask[rows])


@dataclass
class HMRNScores:
    """Scores of every query set against every image: each (Q, N)."""

    local: torch.Tensor
    global_: torch.Tensor
    reasoning: torch.Tensor
    per_query: torch.Tensor  # (Q, N, T) the local score of each query alone


# The model card save_pretrained writes (the Hub mixin's card support): filled by the trainer.
HMRN_CARD = """---
{{ card_data }}
---
# HMRN head (hsl-demo)

Hierarchical Matching and Reasoning head for drill-down search: region queries added round
by round are matched against an image's regions at the local level (query-to-region
attention), at the context-aware global level (attention-pooled queries vs attention-pooled
image), and by graph reasoning over query-region similarity vectors. Final score weights:
{{ weights }}, the reasoning weight growing with the round.

Trained by `hsl-demo train hmrn` ({{ steps }} steps, batch {{ batch }}, {{ looks }} rendered looks) on
the frozen backbone `{{ backbone }}`. hsl-demo loads it from the `hmrn/` subfolder of a model folder.
"""


class HMRNHead(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="hsl-demo",
    tags=["hsl-demo", "multi-query-image-retrieval", "open_clip"],
    model_card_template=HMRN_CARD,
):
    def __init__(
        self,
        embed_dim: int = 512,
        dim: int = 128,
        sim_dim: int = 64,
        reasoning_steps: int = 3,
        local_temperature: float = 15.0,
        local_weight: float = 0.6,
        global_weight: float = 0.1,
        reasoning_weight: float = 0.3,
        max_rounds: int = 10,
    ):
        super().__init__()
        self.embed_dim, self.dim, self.sim_dim = embed_dim, dim, sim_dim
        self.local_temperature, self.max_rounds = local_temperature, max_rounds
        self.term_weights = (local_weight, global_weight, reasoning_weight)

        self.region_in = identity_linear(embed_dim, dim)
        self.query_in = identity_linear(embed_dim, dim)
        self.image_pool = AttentionPool(dim)  # SGRAF's VisualSA, in the AttFlat form HSL uses
        self.query_pool = AttentionPool(dim)  # SGRAF's TextSA
        self.local_node = nn.Linear(dim, sim_dim)
        self.global_node = nn.Linear(dim, sim_dim)
        self.reasoning = nn.ModuleList(GraphReasoning(sim_dim) for _ in range(reasoning_steps))
        self.reasoning_out = nn.Linear(sim_dim, 1)
        self.logit_scale = nn.Parameter(torch.tensor(3.0))  # exp -> ~20; training only

    # ---- inputs ------------------------------------------------------------------------------
    def encode_images(self, global_embeds: torch.Tensor, regions: torch.Tensor, mask: torch.Tensor) -> HMRNImages:
        """(N, D) global embeddings, (N, R, D) regions, (N, R) mask -> the image side. It does not
        depend on the queries, so a search computes it once per catalog."""
        tokens = torch.cat([global_embeds[:, None], regions], 1).float()
        tokens = F.normalize(self.region_in(F.normalize(tokens, dim=-1)), dim=-1)
        full_mask = torch.cat([torch.ones_like(mask[:, :1]), mask], 1)
        return HMRNImages(tokens[:, 1:], F.normalize(self.image_pool(tokens, full_mask), dim=-1), mask)

    def encode_queries(self, queries: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(Q, T, D) query embeddings per set (T rounds, padded), (Q, T) mask -> unit queries
        (Q, T, dim) and the pooled query-set vector (Q, dim)."""
        q = F.normalize(self.query_in(F.normalize(queries.float(), dim=-1)), dim=-1)
        return q, F.normalize(self.query_pool(q, mask), dim=-1)

    # ---- scoring -------------------------------------------------------------------------------
    def scores(self, queries: torch.Tensor, query_mask: torch.Tensor, images: HMRNImages) -> HMRNScores:
        """Every query set (Q, T, D) against every image of `images` (N): local, global, reasoning."""
        q, q_pooled = self.encode_queries(queries, query_mask)
        r, r_pooled, region_mask = images.regions, images.pooled, images.mask
        n_sets, n_images = q.shape[0], r.shape[0]
        # (Q, N, T, dim): each query's attended region context in each image
        context = cross_attend(q[:, None], r[None], region_mask[None], self.local_temperature)
        per_query = (q[:, None] * F.normalize(context, dim=-1)).sum(-1)  # (Q, N, T)
        valid = query_mask[:, None, :].to(per_query.dtype)
        local = (per_query * valid).sum(-1) / valid.sum(-1).clamp_min(1.0)
        global_ = q_pooled @ r_pooled.t()

        local_nodes = F.normalize(self.local_node((context - q[:, None]) ** 2), dim=-1)  # (Q, N, T, s)
        global_nodes = F.normalize(self.global_node((r_pooled[None] - q_pooled[:, None]) ** 2), dim=-1)
        nodes = torch.cat([global_nodes[:, :, None], local_nodes], 2)  # the global node first
        node_mask = torch.cat([torch.ones_like(query_mask[:, :1]), query_mask], 1)[:, None].expand(
            n_sets, n_images, -1)
        for step in self.reasoning:
            nodes = step(nodes, node_mask)
        reasoning = torch.sigmoid(self.reasoning_out(nodes[:, :, 0])).squeeze(-1)
        return HMRNScores(local, global_, reasoning, per_query)

    def attended_regions(self, queries: torch.Tensor, query_mask: torch.Tensor, images: HMRNImages) -> torch.Tensor:
        """(Q, N, T) the region each query attends to most at the local level (the argmax of
        its attention, which is monotonic in the query-region cosine)."""
        q, _ = self.encode_queries(queries, query_mask)
        cosine = torch.einsum("qtd,nrd->qntr", q, images.regions.float())
        return cosine.masked_fill(~images.mask[None, :, None], float("-inf")).argmax(-1)

    def round_factor(self, rounds: int) -> float:
        """f(n) = (1 + ... + n) / (1 + ... + max_rounds): reasoning counts more as queries add up."""
        n = min(rounds, self.max_rounds)
        return n * (n + 1) / (self.max_rounds * (self.max_rounds + 1))

    def variant_weights(self, rounds: int, variant: str = "full") -> tuple[float, float, float]:
        """(w_local, w_global, w_reasoning) at round `rounds` for a ranking variant."""
        w_local, w_global, w_reasoning = self.term_weights
        if variant == "full":
            return w_local, w_global, w_reasoning * self.round_factor(rounds)
        if variant == "local+global":
            return w_local, w_global, 0.0
        if variant == "local":
            return w_local, 0.0, 0.0
        raise ValueError(f"unknown HMRN variant {variant!r} ({', '.join(VARIANTS)})")

    def combine(self, s: HMRNScores, rounds: int, variant: str = "full") -> torch.Tensor:
        w_local, w_global, w_reasoning = self.variant_weights(rounds, variant)
        return w_local * s.local + w_global * s.global_ + w_reasoning * s.reasoning
