"""`hsl-demo train hsl`: the HSL head on a frozen backbone, saved to `OUT/hsl`.

The backbone stays frozen: its global cosine is the first stage (the FAISS index), so
changing it would invalidate every catalog; and a head on a frozen backbone can be added to
any open_clip model from the Hub. Freezing also lets the photos be encoded once.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..model_folder import save_model_head, start_model_folder
from .catalog_data import (
    heldout_table,
    item_texts,
    neighbours,
    open_training_catalog,
    recall_figures,
    text_positives,
    text_rows,
)
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
    # with --catalog: evaluate on held-out items every so many steps, keep the best, stop after
    # `patience` evaluations without improvement
    eval_every: int = 200
    eval_items: int = 1000
    patience: int = 5


def train_hsl(out: str | Path, model: str | None, cfg: HSLTrainConfig, log=print, resume: bool = False,
              catalog: str | Path | None = None) -> dict:
    """Train an HSL head on a frozen backbone and save it to `out`/hsl (Hub mixin format).

    Without `catalog`: on freshly rendered demo photos and generated queries. With `catalog`
    (an indexed catalog folder): on its items' features and texts, scored on its held-out items
    and kept at its best evaluation (`cfg.eval_every`, `cfg.patience`); `out` becomes a complete
    model folder (training/catalog_data.py says what is read)."""
    from ..hub import load_backbone
    from ..models.hsl import HSLHead

    rng = seed_everything(cfg.seed)
    pool = None
    if catalog is None:
        backbone = load_backbone(model)
        attrs, embeds, regions = frozen_training_pool(backbone, cfg, cfg.seed + 3, log)
        region_mask = torch.ones(regions.shape[:2], dtype=torch.bool)
        sample = _demo_batches(attrs, cfg, rng)

        def features(idx):
            return embeds[idx], regions[idx], region_mask[idx]
    else:
        backbone, pool = open_training_catalog(catalog, model, log)
        embeds = pool.embeds
        sample = _catalog_batches(pool, cfg, rng)

        def features(idx):
            return (pool.embeds[idx], *pool.regions(idx))
    head = HSLHead(embed_dim=embeds.shape[1], dim=cfg.dim, levels=cfg.levels, heads=cfg.heads,
                   object_aggregation=cfg.object_aggregation, dropout=cfg.dropout)

    def step(_: int) -> Step:
        idx, texts, positives = sample()  # positives: (image, text)
        text_feats = backbone.text_features(texts)
        global_embeds, regions_, mask = features(idx)
        img = head.encode_image_side(global_embeds, regions_, mask)
        txt = head.encode_text_side(text_feats.tokens.cpu(), text_feats.mask.cpu())
        global_cos = text_feats.embeds.cpu() @ global_embeds.t()
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
    evaluate = None if pool is None else _heldout_evaluation(pool, backbone, head, cfg)
    baseline = evaluate() if evaluate else None  # the untrained head ranks as the global cosine
    if baseline:
        log("[hsl] untrained (global cosine) on held-out items: "
            + " ".join(f"{k} {v:.3f}" for k, v in baseline.items()))
        start_model_folder(backbone, out, "hsl")
    folder = Path(out) / "hsl"
    checkpoint = "hsl" if pool is None else "hsl-catalog"
    result = fit(head, step, cfg, name="hsl", rng=rng, log=log, param_groups=groups,
                 status=lambda: f"weights: {weights()}", checkpoint_dir=Path(out) / CHECKPOINT_DIR / checkpoint,
                 resume=resume, evaluate=evaluate, eval_every=cfg.eval_every if evaluate else 0,
                 keep_best="score" if evaluate else None, patience=cfg.patience, baseline=baseline,
                 identity={"catalog": pool.fingerprint} if pool else None)
    trained_by = "hsl-demo train hsl" + (" --catalog" if pool else "")
    info = {"trained_by": trained_by, "backbone": backbone.portable_id, "config": asdict(cfg),
            "losses": result.losses, "train_seconds": round(result.seconds)}
    card = {"backbone": backbone.portable_id, "levels": cfg.levels, "dim": cfg.dim, "steps": cfg.steps,
            "batch": cfg.batch_size, "weights": weights()}
    if pool is not None:
        info.update(catalog=pool.describe(), evaluation=heldout_table(baseline, result))
        card.update(catalog=pool.describe(), evaluation=info["evaluation"])
    save_model_head(head, folder, info, card=card)
    log(f"saved HSL head to {folder}")
    return info


def _demo_batches(attrs, cfg: HSLTrainConfig, rng):
    """Look-alike batches of rendered photos, with generated queries mentioning some attributes."""
    by_key = lookalike_index(attrs)
    write_text = text_writer(cfg.texts, rng)

    def sample():
        idx = hard_batch(attrs, by_key, min(cfg.batch_size, len(attrs)), rng)
        batch_attrs = [attrs[i] for i in idx]
        mentions = rng.choices(MENTIONS, MENTION_WEIGHTS, k=len(idx))
        texts = [write_text(a, m) for a, m in zip(batch_attrs, mentions)]
        positives = torch.tensor([[mentions_match(a, b, m) for b, m in zip(batch_attrs, mentions)]
                                  for a in batch_attrs])
        return idx, texts, positives

    return sample


def _catalog_batches(pool, cfg: HSLTrainConfig, rng):
    """Training items, half of them drawn at random and half among their nearest neighbours in the
    catalog's index (what the FAISS candidates of a query hold), each with one of its texts."""
    rows = text_rows(pool, heldout=False)
    allowed = set(rows)
    texts_of = {r: item_texts(pool.items[r]) for r in rows}

    def sample():
        size = min(cfg.batch_size, len(rows))
        first = rng.sample(rows, size - size // 2)
        near = [n for n in neighbours(pool, first[:size // 2], 4, allowed) if n]
        idx = first + [rng.choice(n) for n in near]
        texts = [rng.choice(texts_of[r]) for r in idx]
        positives = text_positives(texts, [texts_of[r] for r in idx], idx, idx).t()
        return idx, texts, positives

    return sample


def _heldout_evaluation(pool, backbone, head, cfg: HSLTrainConfig):
    """R@1 / R@10 of each held-out item's first text among the held-out items (at most
    `cfg.eval_items`, a fixed sample), ranked by the head's combined score."""
    rows = text_rows(pool, heldout=True)
    rows = sorted(random.Random(0).sample(rows, min(cfg.eval_items, len(rows))))
    texts = [item_texts(pool.items[r])[0] for r in rows]
    positives = text_positives(texts, [item_texts(pool.items[r]) for r in rows], rows, rows)
    feats = [backbone.text_features(texts[i:i + 256]) for i in range(0, len(texts), 256)]
    global_cos = torch.cat([f.embeds.cpu() for f in feats]) @ pool.embeds[rows].t()

    @torch.no_grad()
    def evaluate() -> dict:
        head.eval()
        image = head.encode_image_side(pool.embeds[rows], *pool.regions(rows))
        scores = []
        for f, start in zip(feats, range(0, len(texts), 256)):
            text = head.encode_text_side(f.tokens.cpu(), f.mask.cpu())
            scores.append(head.combine(head.similarities(text, image, global_cos[start:start + len(f.embeds)])))
        return recall_figures(torch.cat(scores), positives)

    return evaluate
