"""`hsl-demo train backbone`: the demo backbone from scratch (contrastive, attribute-aware
positives), on freshly rendered photos of the demo catalog's *training* combinations only."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path

import open_clip
import torch

from ..backbone import build_random, model_config, save_backbone
from ..data import phrasing
from ..data.attributes import Attributes, describe
from ..data.demo import all_combinations, held_out_combinations
from .common import (
    MENTION_WEIGHTS,
    MENTIONS,
    hard_batch,
    lookalike_index,
    mentions_match,
    multi_positive_infonce,
    render_pool,
    text_writer,
)
from .loop import CHECKPOINT_DIR, Step, TrainConfig, fit, seed_everything


@dataclass
class BackboneTrainConfig(TrainConfig):
    architecture: str = "hsl-demo-tiny"
    steps: int = 2000
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup: int = 100
    eval_every: int = 250
    log_every: int = 50
    # "grammar": the phrasing grammar (data/phrasing.py: synonyms, fillers, word order, plurals,
    # misspellings); "templates": the first demo model's templates (attributes.describe).
    texts: str = "templates"
    plural: float = 0.2  # share of texts naming the category in the plural
    # Share of each batch that are category-hard negatives of the rest: the same colour and
    # pattern on another product, so the model must tell a t-shirt from gloves by its shape.
    hard_negatives: float = 0.0
    look_crops: int = 0  # rendered flat-lays whose product crops join the training photos
    scene_crops: bool = True  # with `scenes`: each scene's crop around its product joins too


def render_look_crops(combos: list[Attributes], looks: int, seed: int, preprocess) -> tuple[torch.Tensor, list]:
    """The square box crops of `looks` rendered flat-lays (2 to 5 products of `combos` each),
    preprocessed: products as they appear in a look (smaller, beside others, on a table), which
    is what drill-down region queries are matched against."""
    from tqdm.auto import tqdm

    from ..data.demo import render_look
    from ..features import box_crops

    rng = random.Random(seed)
    tensors, attrs = [], []
    for _ in tqdm(range(looks), desc="render look crops"):
        items: list[Attributes] = []
        for a in rng.sample(combos, min(len(combos), 12)):
            if len(items) < rng.randint(2, 5) and a.category not in {b.category for b in items}:
                items.append(a)
        image, boxes = render_look(items, rng)
        for a, crop in zip(items, box_crops(image, boxes)):
            tensors.append(preprocess(crop).half())
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
    return {"R@1": hits1 / len(queries), "R@10": hits10 / len(queries)}


def train_backbone(out: str | Path, cfg: BackboneTrainConfig, log=print, resume: bool = False) -> dict:
    rng = seed_everything(cfg.seed)
    model_cfg = model_config(cfg.architecture)
    model, preprocess = build_random(model_cfg)
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=model_cfg["text_cfg"].get("context_length", 77))

    held = held_out_combinations(cfg.catalog_seed)
    combos = all_combinations()
    if cfg.limit_combos:
        combos = random.Random(cfg.seed).sample(combos, cfg.limit_combos)
    train_combos = [a for a in combos if a not in held]
    pool, pool_attrs = render_pool(train_combos, cfg.variants, cfg.seed + 1, preprocess, "render train",
                                   scenes=cfg.scenes, scene_crops=cfg.scene_crops)
    if cfg.look_crops:
        crops, crop_attrs = render_look_crops(train_combos, cfg.look_crops, cfg.seed + 3, preprocess)
        pool, pool_attrs = torch.cat([pool, crops]), pool_attrs + crop_attrs
    by_key = lookalike_index(pool_attrs)
    write_text = text_writer(cfg.texts, rng)
    # Monitoring gallery: one fresh photo of every combination; queries: the held-out ones.
    gallery, gallery_attrs = render_pool(combos, 1, cfg.seed + 2, preprocess, "render eval")
    held_queries = sorted((a for a in combos if a in held), key=lambda a: a.as_tuple()) or combos[:1]

    def step(_: int) -> Step:
        if cfg.hard_negatives:
            idx = torch.tensor(hard_batch(pool_attrs, by_key, cfg.batch_size, rng, keys=("op",),
                                          share=cfg.hard_negatives))
        else:
            idx = torch.randint(len(pool), (cfg.batch_size,))
        images = pool[idx].float()
        flip = torch.rand(len(idx)) < 0.5
        images[flip] = images[flip].flip(-1)
        batch_attrs = [pool_attrs[i] for i in idx.tolist()]
        mentions = rng.choices(MENTIONS, MENTION_WEIGHTS, k=len(idx))
        texts = [write_text(a, m, rng.random() < cfg.plural) for a, m in zip(batch_attrs, mentions)]
        positives = torch.tensor([[mentions_match(a, b, m) for b, m in zip(batch_attrs, mentions)]
                                  for a in batch_attrs])
        img = model.encode_image(images, normalize=True)
        txt = model.encode_text(tokenizer(texts), normalize=True)
        logits = model.logit_scale.exp().clamp(max=100) * img @ txt.t()
        loss = multi_positive_infonce(logits, positives)
        return Step(loss, {"loss": loss.item()})

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    result = fit(model, step, cfg, name="backbone", rng=rng, log=log, betas=(0.9, 0.98), eps=1e-6,
                 param_groups=[{"params": decay, "weight_decay": cfg.weight_decay},
                               {"params": no_decay, "weight_decay": 0.0}],
                 status=lambda: f"scale {model.logit_scale.exp().item():.1f}",
                 evaluate=lambda: text_recall(model, tokenizer, gallery, gallery_attrs, held_queries, cfg.seed),
                 eval_every=cfg.eval_every, checkpoint_dir=Path(out) / CHECKPOINT_DIR / "backbone", resume=resume)
    info = {"trained_by": "hsl-demo train backbone", "config": asdict(cfg), "history": result.history,
            "losses": result.losses, "train_seconds": round(result.seconds)}
    save_backbone(model, model_cfg, out, info)
    from .vocabulary import demo_vocabulary, write_vocabulary

    words = demo_vocabulary() | (phrasing.vocabulary() if cfg.texts == "grammar" else set())
    write_vocabulary(out, words, f"hsl-demo train backbone ({cfg.texts}) and the demo head trainers")
    log(f"saved backbone to {out}")
    return info
