"""Training: the demo backbone from scratch (contrastive, attribute-aware positives).

`hsl-demo train backbone` trains a small open_clip-architecture model on freshly rendered
photos of the demo catalog's *training* combinations only; held-out combinations stay unseen.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F

from .backbone import save_backbone
from .data.attributes import Attributes, describe
from .data.demo import all_combinations, held_out_combinations, render_product
from .models import save_head

MENTIONS = ((True, True), (True, False), (False, True), (False, False))
MENTION_WEIGHTS = (0.7, 0.1, 0.1, 0.1)


@dataclass
class BackboneTrainConfig:
    architecture: str = "hsl-demo-tiny"
    steps: int = 2000
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup: int = 100
    variants: int = 6  # rendered photos per training combination
    seed: int = 0
    catalog_seed: int = 0  # which held-out split to respect
    eval_every: int = 250
    limit_combos: int = 0  # >0: use only this many combinations (quick runs and tests)


def multi_positive_infonce(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE where every pair marked in `positives` counts as a match.

    Products that share all the attributes a text mentions are positives for it, so a
    "red t-shirt" text never pushes away a second red t-shirt in the batch.
    """
    pos = positives.float()
    rows = pos / pos.sum(1, keepdim=True).clamp_min(1)
    cols = pos.t() / pos.t().sum(1, keepdim=True).clamp_min(1)
    return 0.5 * (
        -(rows * F.log_softmax(logits, 1)).sum(1).mean()
        + -(cols * F.log_softmax(logits.t(), 1)).sum(1).mean()
    )


def warmup_cosine(opt: torch.optim.Optimizer, warmup: int, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then cosine decay to zero at `steps`."""
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))),
    )


def mentions_match(image: Attributes, text: Attributes, mention: tuple[bool, bool]) -> bool:
    say_color, say_pattern = mention
    return (
        image.category == text.category
        and (not say_color or image.color == text.color)
        and (not say_pattern or image.pattern == text.pattern)
    )


def render_pool(combos: list[Attributes], variants: int, seed: int, preprocess, desc: str):
    """Preprocessed photos (float16 tensor) of every combination, `variants` times each."""
    from tqdm.auto import tqdm

    rng = random.Random(seed)
    attrs, tensors = [], []
    for a in tqdm([a for a in combos for _ in range(variants)], desc=desc):
        tensors.append(preprocess(render_product(a, rng)).half())
        attrs.append(a)
    return torch.stack(tensors), attrs


@torch.no_grad()
def text_recall(model, tokenizer, gallery: torch.Tensor, gallery_attrs: list[Attributes],
                queries: list[Attributes], seed: int) -> dict[str, float]:
    """R@1/R@10 of full-description queries over a gallery (hit: same combination)."""
    model.eval()
    rng = random.Random(seed)
    img = torch.cat([model.encode_image(gallery[i:i + 256].float(), normalize=True)
                     for i in range(0, len(gallery), 256)])
    txt = model.encode_text(tokenizer([describe(q, rng) for q in queries]), normalize=True)
    order = (txt @ img.t()).argsort(dim=1, descending=True)[:, :10].tolist()
    hits1 = hits10 = 0
    for q, top in zip(queries, order):
        matches = [gallery_attrs[i] == q for i in top]
        hits1 += matches[0]
        hits10 += any(matches)
    model.train()
    return {"R@1": hits1 / len(queries), "R@10": hits10 / len(queries)}


def train_backbone(out: str | Path, cfg: BackboneTrainConfig, log=print) -> dict:
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    model, _, preprocess = open_clip.create_model_and_transforms(cfg.architecture)
    tokenizer = open_clip.get_tokenizer(cfg.architecture)
    model_cfg = open_clip.get_model_config(cfg.architecture)

    held = held_out_combinations(cfg.catalog_seed)
    combos = all_combinations()
    if cfg.limit_combos:
        combos = random.Random(cfg.seed).sample(combos, cfg.limit_combos)
    train_combos = [a for a in combos if a not in held]
    pool, pool_attrs = render_pool(train_combos, cfg.variants, cfg.seed + 1, preprocess, "render train")
    # Monitoring gallery: one fresh photo of every combination; queries: the held-out ones.
    gallery, gallery_attrs = render_pool(combos, 1, cfg.seed + 2, preprocess, "render eval")
    held_queries = sorted((a for a in combos if a in held), key=lambda a: a.as_tuple()) or combos[:1]

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6,
    )
    sched = warmup_cosine(opt, cfg.warmup, cfg.steps)
    model.train()
    history, losses = [], []
    start = time.time()
    for step in range(1, cfg.steps + 1):
        idx = torch.randint(len(pool), (cfg.batch_size,))
        images = pool[idx].float()
        flip = torch.rand(len(idx)) < 0.5
        images[flip] = images[flip].flip(-1)
        batch_attrs = [pool_attrs[i] for i in idx.tolist()]
        mentions = rng.choices(MENTIONS, MENTION_WEIGHTS, k=len(idx))
        texts = [describe(a, rng, m) for a, m in zip(batch_attrs, mentions)]
        positives = torch.tensor(
            [[mentions_match(a, b, m) for b, m in zip(batch_attrs, mentions)] for a in batch_attrs]
        )
        img = model.encode_image(images, normalize=True)
        txt = model.encode_text(tokenizer(texts), normalize=True)
        logits = model.logit_scale.exp().clamp(max=100) * img @ txt.t()
        loss = multi_positive_infonce(logits, positives)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 10 == 0 or step == 1:
            losses.append(round(loss.item(), 4))
        if step % 50 == 0 or step == 1:
            log(f"step {step}/{cfg.steps} loss {loss.item():.3f} "
                f"scale {model.logit_scale.exp().item():.1f} {time.time() - start:.0f}s")
        if step % cfg.eval_every == 0 or step == cfg.steps:
            recall = text_recall(model, tokenizer, gallery, gallery_attrs, held_queries, cfg.seed)
            history.append({"step": step, **recall})
            log(f"step {step}: held-out text R@1 {recall['R@1']:.3f} R@10 {recall['R@10']:.3f}")

    info = {"trained_by": "hsl-demo train backbone", "config": asdict(cfg), "history": history, "losses": losses,
            "train_seconds": round(time.time() - start)}
    save_backbone(model, model_cfg, out, info)
    log(f"saved backbone to {out}")
    return info



# ---- the HSL head ----------------------------------------------------------------------------
HSL_CARD = """---
library_name: hsl-demo
tags: [hsl-demo, image-retrieval, open_clip, model_hub_mixin]
---
# HSL head (hsl-demo)

Hierarchical Similarity Learning re-ranking head: {levels} stacked encoder levels (width
{dim}) over the backbone's region and text-token features; at each level an object- and an
image-granularity similarity, combined with the backbone's global cosine by learned
non-negative weights ({weights}).

Trained by `hsl-demo train hsl` ({steps} steps, batch {batch}) on the frozen backbone
`{backbone}`. Load with `hsl_demo.models.hsl.HSLHead.from_pretrained(folder)`; hsl-demo loads
it from the `hsl/` subfolder of a model folder.
"""


@dataclass
class HSLTrainConfig:
    steps: int = 3000
    batch_size: int = 256
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup: int = 100
    variants: int = 6  # rendered photos per training combination
    dim: int = 128
    levels: int = 2
    heads: int = 4
    dropout: float = 0.1
    object_aggregation: str = "max"
    weight_lr_factor: float = 10.0  # learning-rate multiplier of the combination weights
    term_loss_weight: float = 0.5  # each term alone must rank too (keeps the ablations meaningful)
    seed: int = 0
    catalog_seed: int = 0
    limit_combos: int = 0


@torch.no_grad()
def encode_pool(backbone, images: torch.Tensor, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Global embeddings (N, D) and catalog-identical region features (N, R, D) of a photo pool.

    Regions go through the same grid pooling and int8 round trip as `hsl-demo index`, so the
    head trains on exactly what it will see at search time.
    """
    from .catalog import dequantize, grid_regions, quantize

    embeds, regions = [], []
    for i in range(0, len(images), batch):
        feats = backbone.image_features(images[i:i + batch].to(backbone.device, backbone.dtype))
        embeds.append(feats.embeds.cpu())
        regions.append(dequantize(*quantize(grid_regions(feats.tokens.cpu(), feats.grid))))
    return torch.cat(embeds), torch.cat(regions)


def frozen_training_pool(backbone, cfg, render_seed: int, log) -> tuple[list[Attributes], torch.Tensor, torch.Tensor]:
    """Photos of the training combinations (`cfg.variants` each; `cfg.limit_combos` of them in
    quick runs), encoded once by the frozen backbone: (attributes, embeddings, regions)."""
    held = held_out_combinations(cfg.catalog_seed)
    combos = [a for a in all_combinations() if a not in held]
    if cfg.limit_combos:
        combos = random.Random(cfg.seed).sample(combos, min(cfg.limit_combos, len(combos)))
    photos, attrs = render_pool(combos, cfg.variants, render_seed, backbone.preprocess, "render train")
    log(f"encoding {len(photos)} training photos with the frozen backbone")
    embeds, regions = encode_pool(backbone, photos)
    return attrs, embeds, regions


def hard_batch(attrs: list[Attributes], by_key: dict, size: int, rng: random.Random) -> list[int]:
    """Half random photos, half look-alikes of them (two of three attributes shared), so the
    head learns what the FAISS candidates of a query actually confuse."""
    first = [rng.randrange(len(attrs)) for _ in range(size // 2)]
    rest = []
    for i in first:
        a = attrs[i]
        key = rng.choice([("cc", a.category, a.color), ("cp", a.category, a.pattern), ("op", a.color, a.pattern)])
        rest.append(rng.choice(by_key[key]))
    return first + rest


def train_hsl(out: str | Path, model: str | None, cfg: HSLTrainConfig, log=print) -> dict:
    """Train an HSL head on a frozen backbone and save it to `out`/hsl (Hub mixin format).

    The backbone stays frozen: its global cosine is the first stage (the FAISS index), so
    changing it would invalidate every catalog; and a head on a frozen backbone can be added
    to any open_clip model from the Hub. Freezing also lets the photos be encoded once.
    """
    from .backbone import Backbone
    from .models.hsl import HSLHead

    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    backbone = Backbone.load(model)
    attrs, embeds, regions = frozen_training_pool(backbone, cfg, cfg.seed + 3, log)
    region_mask = torch.ones(regions.shape[:2], dtype=torch.bool)
    by_key: dict[tuple, list[int]] = {}
    for i, a in enumerate(attrs):
        for key in (("cc", a.category, a.color), ("cp", a.category, a.pattern), ("op", a.color, a.pattern)):
            by_key.setdefault(key, []).append(i)

    head = HSLHead(embed_dim=embeds.shape[1], dim=cfg.dim, levels=cfg.levels, heads=cfg.heads,
                   object_aggregation=cfg.object_aggregation, dropout=cfg.dropout)
    head.train()
    scalars = [head.raw_weights, head.logit_scale]
    decay = [p for p in head.parameters() if p.ndim >= 2]
    rest = [p for p in head.parameters() if p.ndim < 2 and all(p is not s for s in scalars)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": rest, "weight_decay": 0.0},
                             # The combination weights must travel ~1 in a few thousand steps.
                             {"params": scalars, "weight_decay": 0.0, "lr": cfg.lr * cfg.weight_lr_factor}],
                            lr=cfg.lr)
    sched = warmup_cosine(opt, cfg.warmup, cfg.steps)
    losses, start = [], time.time()
    for step in range(1, cfg.steps + 1):
        idx = hard_batch(attrs, by_key, min(cfg.batch_size, len(attrs)), rng)
        batch_attrs = [attrs[i] for i in idx]
        mentions = rng.choices(MENTIONS, MENTION_WEIGHTS, k=len(idx))
        texts = [describe(a, rng, m) for a, m in zip(batch_attrs, mentions)]
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
        total = loss + cfg.term_loss_weight * term_loss
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 10 == 0 or step == 1:
            losses.append(round(loss.item(), 4))
        if step % 100 == 0 or step == 1:
            w = ", ".join(f"{n} {v:.2f}" for n, v in zip(head.term_names(), head.weights.tolist()))
            log(f"step {step}/{cfg.steps} loss {loss.item():.3f} terms {term_loss.item():.3f} "
                f"{time.time() - start:.0f}s weights: {w}")
    head.eval()
    info = {"trained_by": "hsl-demo train hsl", "backbone": backbone.model_id, "config": asdict(cfg),
            "losses": losses, "train_seconds": round(time.time() - start)}
    save_head(head, Path(out) / "hsl", info, card=HSL_CARD.format(
        backbone=backbone.model_id, levels=cfg.levels, dim=cfg.dim, steps=cfg.steps, batch=cfg.batch_size,
        weights=", ".join(f"{n} {v:.3f}" for n, v in zip(head.term_names(), head.weights.tolist()))))
    log(f"saved HSL head to {Path(out) / 'hsl'}")
    return info


# ---- the composed-query head (progressive: stage 1 is the backbone) --------------------------
COMPOSED_STAGES = {
    # stage 2, domain pre-training: attribute-text matching. The text fully describes the
    # target (or asks for the reference itself), so each query has one dominant modality.
    "domain": ("redescribe", "this-one"),
    # stage 3, hybrid queries: every kind of modification.
    "hybrid": ("color", "pattern", "category", "color+pattern", "redescribe", "this-one"),
}


@dataclass
class ComposedTrainConfig:
    stage: str = "hybrid"
    steps: int = 1500
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 50
    variants: int = 8
    hidden: int = 256  # 0.5 MB in float16: the repo ships it
    weight_loss_weight: float = 0.5  # the self-supervised image/text weight target
    seed: int = 0
    catalog_seed: int = 0
    limit_combos: int = 0


def train_composed(out: str | Path, model: str | None, cfg: ComposedTrainConfig, log=print) -> dict:
    """Train the composed-query head on a frozen backbone and save it to `out`/composed.

    Stage "domain" starts from the untrained head (the equal-weight sum); stage "hybrid"
    resumes from `out`/composed when a domain-stage head is there.
    """
    from .backbone import Backbone
    from .data.triplets import modify
    from .models import load_head
    from .models.composed import ComposedHead, weight_loss, weight_targets

    if cfg.stage not in COMPOSED_STAGES:
        raise ValueError(f"unknown stage {cfg.stage!r} (one of {', '.join(COMPOSED_STAGES)})")
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    backbone = Backbone.load(model)
    attrs, embeds, _ = frozen_training_pool(backbone, cfg, cfg.seed + 5, log)
    by_combo: dict[Attributes, list[int]] = {}
    for i, a in enumerate(attrs):
        by_combo.setdefault(a, []).append(i)

    folder = Path(out) / "composed"
    resumed = None
    if cfg.stage == "hybrid" and (folder / "training.json").is_file():
        previous = json.loads((folder / "training.json").read_text())
        if previous.get("config", {}).get("stage") in ("domain", "hybrid"):
            head = load_head(ComposedHead, folder)
            resumed = previous["config"]["stage"]
            log(f"resuming from the {resumed}-stage head in {folder}")
    if resumed is None:
        head = ComposedHead(embed_dim=embeds.shape[1], hidden=cfg.hidden)
    head.train()
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = warmup_cosine(opt, cfg.warmup, cfg.steps)
    kinds = COMPOSED_STAGES[cfg.stage]
    losses, start = [], time.time()
    for step in range(1, cfg.steps + 1):
        refs, targets, texts, target_attrs = [], [], [], []
        while len(refs) < cfg.batch_size:
            i = rng.randrange(len(attrs))
            target, text = modify(attrs[i], rng.choice(kinds), rng)
            candidates = [j for j in by_combo.get(target, []) if j != i]
            if not candidates:  # a held-out (or, in quick runs, absent) target combination
                continue
            refs.append(i)
            targets.append(rng.choice(candidates))
            texts.append(text)
            target_attrs.append(target)
        image, target_emb = embeds[refs], embeds[targets]
        text = torch.from_numpy(backbone.encode_text(texts))
        query = head(image, text)
        positives = torch.tensor([[a == b for b in target_attrs] for a in target_attrs])
        scale = head.logit_scale.exp().clamp(max=100)
        contrastive = multi_positive_infonce(scale * query.embeds @ target_emb.t(), positives)
        weights = weight_loss(query, weight_targets(image, text, target_emb))
        loss = contrastive + cfg.weight_loss_weight * weights
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 10 == 0 or step == 1:
            losses.append(round(contrastive.item(), 4))
        if step % 100 == 0 or step == 1:
            log(f"[{cfg.stage}] step {step}/{cfg.steps} contrastive {contrastive.item():.3f} "
                f"weights {weights.item():.3f} mean w_text {query.w_text.mean().item():.2f} "
                f"{time.time() - start:.0f}s")
    head.eval()
    info = {"trained_by": f"hsl-demo train composed --stage {cfg.stage}", "backbone": backbone.model_id,
            "resumed_from": resumed, "config": asdict(cfg), "losses": losses,
            "train_seconds": round(time.time() - start)}
    save_head(head, folder, info)
    log(f"saved the {cfg.stage}-stage composed head to {folder}")
    return info
