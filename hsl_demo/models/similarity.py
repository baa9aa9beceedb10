"""Small building blocks shared by the heads (HSL, composed, HMRN).

Every block that sits on a residual path starts as the identity (its output projection is
zero-initialised), so a freshly built head leaves the backbone's features untouched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NEG_INF = -1e4  # large enough to vanish in a softmax, small enough for float16


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Mean of `x` over `dim`, counting only positions where `mask` is True."""
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(dim) / m.sum(dim).clamp_min(1.0)


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return scores.masked_fill(~mask, NEG_INF).softmax(dim)


def aggregate(scores: torch.Tensor, mask: torch.Tensor, how: str = "max", k: int = 3) -> torch.Tensor:
    """Reduce query-region scores (..., R) over valid regions: max, mean or mean of top-k."""
    mask = mask.expand_as(scores)
    if how == "max":
        return scores.masked_fill(~mask, NEG_INF).amax(-1)
    if how == "mean":
        m = mask.to(scores.dtype)
        return (scores * m).sum(-1) / m.sum(-1).clamp_min(1.0)
    if how == "topk":
        k = min(k, scores.shape[-1])
        top = scores.masked_fill(~mask, NEG_INF).topk(k, dim=-1).values
        valid = top > NEG_INF / 2
        return (top * valid).sum(-1) / valid.sum(-1).clamp_min(1)
    raise ValueError(f"unknown aggregation {how!r} (max, mean, topk)")


class AttentionPool(nn.Module):
    """Attention pooling (MCAN's AttFlat): an MLP scores each token, softmax, weighted sum.

    The scorer's last layer starts at zero, so an untrained pool is the masked mean.
    """

    def __init__(self, dim: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or dim
        self.score = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.score[-1].weight)
        nn.init.zeros_(self.score[-1].bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = masked_softmax(self.score(x).squeeze(-1), mask)
        return torch.einsum("...t,...td->...d", weights, x)


class SelfAttention(nn.Module):
    """Multi-head self-attention with a key padding mask.

    Same parameters (and names) as nn.MultiheadAttention, but a lean forward: for one short
    query on the CPU, MultiheadAttention's checks cost more than the arithmetic.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads, self.dropout = heads, dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).view(b, t, 3, self.heads, -1).unbind(2)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask[:, None, None, :],
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d))


class ResidualEncoderBlock(nn.Module):
    """A pre-norm transformer encoder block whose residual branches start at zero."""

    def __init__(self, dim: int, heads: int = 4, mlp_ratio: float = 2.0, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))
        nn.init.zeros_(self.attn.out_proj.weight)
        nn.init.zeros_(self.attn.out_proj.bias)
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, mask)
        return x + self.mlp(self.norm2(x))


def identity_linear(dim_in: int, dim_out: int) -> nn.Linear:
    """A linear layer that starts as (a truncated or zero-padded) identity."""
    layer = nn.Linear(dim_in, dim_out)
    with torch.no_grad():
        layer.weight.zero_()
        n = min(dim_in, dim_out)
        layer.weight[:n, :n] = torch.eye(n)
        layer.bias.zero_()
    return layer


def non_negative(raw: torch.Tensor) -> torch.Tensor:
    """Weights that are never negative and can be exactly zero (at init), yet keep learning.

    The forward pass clamps at zero; the gradient passes straight through, so a weight that
    was pushed below zero early in training can come back when its term becomes useful.
    """
    return raw + (raw.clamp_min(0.0) - raw).detach()


def cross_attend(queries: torch.Tensor, regions: torch.Tensor, mask: torch.Tensor,
                 temperature: float) -> torch.Tensor:
    """SCAN-style attention: each query attends over the valid regions of an image.

    queries (..., Q, d) and regions (..., R, d) are unit vectors; mask (..., R). The weights are
    softmax(temperature * LeakyReLU(0.1)(cosine)) over regions; returns the (..., Q, d)
    attended region context of every query.
    """
    scores = F.leaky_relu(queries @ regions.transpose(-1, -2), 0.1)
    weights = masked_softmax(temperature * scores, mask.unsqueeze(-2))
    return weights @ regions


class GraphReasoning(nn.Module):
    """One step of SGRAF's similarity graph reasoning over a set of similarity-vector nodes.

    Fully connected: edges are softmax(query(node) . key(node')) over the valid nodes, each node
    gathers its neighbours along the edges, then Linear + ReLU.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, nodes: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """nodes (..., K, s), mask (..., K) -> (..., K, s)."""
        edges = masked_softmax(self.query(nodes) @ self.key(nodes).transpose(-1, -2), mask.unsqueeze(-2))
        return F.relu(self.out(edges @ nodes))
