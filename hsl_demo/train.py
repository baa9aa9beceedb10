"""Training: the demo backbone from scratch (contrastive, attribute-aware positives).

`hsl-demo train backbone` trains a small open_clip-architecture model on freshly rendered
photos of the demo catalog's *training* combinations only; held-out combinations stay unseen.
"""

from __future__ import annotations

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
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: min(1.0, (s + 1) / cfg.warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / cfg.steps))),
    )
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

