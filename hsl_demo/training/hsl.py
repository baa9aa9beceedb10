"""`hsl-demo train hsl`: the HSL head on a frozen backbone, saved to `OUT/hsl`.

The backbone stays frozen: its global cosine is the first stage (the FAISS index), so
changing it would invalidate every catalog; and a head on a frozen backbone can be added to
any open_clip model from the Hub. Freezing also lets the photos be encoded once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..models import save_head
from .common import (
    MENTION_WEIGHTS,
    MENTIONS,
    frozen_training_pool,
    hard_batch,
    lookalike_index,
    mentions_match,
    multi_positive_infonce,
    text_writer,
)
from .loop import CHECKPOINT_DIR, Step, TrainConfig, fit, seed_everything


@dataclass
class HSLTrainConfig(TrainConfig):
    steps: int = 3000
    batch_size: int = 256
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup: int = 100
    dim: int = 128
    levels: int = 2
    heads: int = 4
    dropout: float = 0.1
    object_aggregation: str = "max"
    weight_lr_factor: float = 10.0  # learning-rate multiplier of the combination weights
    term_loss_weight: float = 0.5  # each term alone must rank too (keeps the ablations meaningful)
    texts: str = "templates"  # or "grammar": the phrasing grammar (training/common.py TEXT_STYLES)


def train_hsl(out: str | Path, model: str | None, cfg: HSLTrainConfig, log=print, resume: bool = False) -> dict:
    """Train an HSL head on a frozen backbone and save it to `out`/hsl (Hub mixin format)."""
    from ..backbone import Backbone
    from ..models.hsl import HSLHead

    rng = seed_everything(cfg.seed)
    backbone = Backbone.load(model)
    attrs, embeds, regions = frozen_training_pool(backbone, cfg, cfg.seed + 3, log)
    region_mask = torch.ones(regions.shape[:2], dtype=torch.bool)
    by_key = lookalike_index(attrs)
    write_text = text_writer(cfg.texts, rng)
    head = HSLHead(embed_dim=embeds.shape[1], dim=cfg.dim, levels=cfg.levels, heads=cfg.heads,
                   object_aggregation=cfg.object_aggregation, dropout=cfg.dropout)

    def step(_: int) -> Step:
        idx = hard_batch(attrs, by_key, min(cfg.batch_size, len(attrs)), rng)
        batch_attrs = [attrs[i] for i in idx]
        mentions = rng.choices(MENTIONS, MENTION_WEIGHTS, k=len(idx))
        texts = [write_text(a, m) for a, m in zip(batch_attrs, mentions)]
        positives = torch.tensor([[mentions_match(a, b, m) for b, m in zip(batch_attrs, mentions)]
                                  for a in batch_attrs])  # (image, text)
        text_feats = backbone.text_features(texts)
        img = head.encode_image_side(embeds[idx], regions[idx], region_mask[idx])
        txt = head.encode_text_side(text_feats.tokens.cpu(), text_feats.mask.cpu())
        global_cos = text_feats.embeds.cpu() @ embeds[idx].t()
        terms = head.similarities(txt, img, global_cos)  # (text, image, terms)
        scale = head.logit_scale.exp().clamp(max=100)
        loss = multi_positive_infonce(scale * head.combine(terms).t(), positives)
        term_loss = sum(multi_positive_infonce(scale * terms[..., t].t(), positives)
                        for t in range(1, terms.shape[-1])) / (terms.shape[-1] - 1)
        return Step(loss + cfg.term_loss_weight * term_loss, {"loss": loss.item(), "terms": term_loss.item()})

    def weights() -> str:
        return ", ".join(f"{n} {v:.2f}" for n, v in zip(head.term_names(), head.weights.tolist()))

    scalars = [head.raw_weights, head.logit_scale]
    groups = [{"params": [p for p in head.parameters() if p.ndim >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in head.parameters() if p.ndim < 2 and all(p is not s for s in scalars)],
               "weight_decay": 0.0},
              # The combination weights must travel ~1 in a few thousand steps.
              {"params": scalars, "weight_decay": 0.0, "lr": cfg.lr * cfg.weight_lr_factor}]
    folder = Path(out) / "hsl"
    result = fit(head, step, cfg, name="hsl", rng=rng, log=log, param_groups=groups,
                 status=lambda: f"weights: {weights()}", checkpoint_dir=Path(out) / CHECKPOINT_DIR / "hsl",
                 resume=resume)
    info = {"trained_by": "hsl-demo train hsl", "backbone": backbone.portable_id, "config": asdict(cfg),
            "losses": result.losses, "train_seconds": round(result.seconds)}
    save_head(head, folder, info, card={
        "backbone": backbone.portable_id, "levels": cfg.levels, "dim": cfg.dim, "steps": cfg.steps,
        "batch": cfg.batch_size, "weights": weights()})
    log(f"saved HSL head to {folder}")
    return info
