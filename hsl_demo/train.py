"""Training: the demo backbone from scratch (contrastive, attribute-aware positives).

`hsl-demo train backbone` trains a small open_clip-architecture model on freshly rendered
photos of the demo catalog's *training* combinations only; held-out combinations stay unseen.
"""

from __future__ import annotations

import itertools
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
from .errors import HslDemoError
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

    Rectangular logits work too (extra negative columns): the column direction then averages
    over the columns that have a positive.
    """
    pos = positives.float()
    rows = pos / pos.sum(1, keepdim=True).clamp_min(1)
    cols = pos.t() / pos.t().sum(1, keepdim=True).clamp_min(1)
    has_pos = pos.sum(0) > 0
    row_loss = -(rows * F.log_softmax(logits, 1)).sum(1).mean()
    col_loss = -(cols * F.log_softmax(logits.t(), 1)).sum(1)[has_pos].mean()
    return 0.5 * (row_loss + col_loss)


def warmup_cosine(opt: torch.optim.Optimizer, warmup: int, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then cosine decay to zero at `steps`."""
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))),
    )


def optimizer_step(opt: torch.optim.Optimizer, sched, loss: torch.Tensor, model: torch.nn.Module) -> None:
    """One update: backward, clip the gradient norm at 1, step the optimizer and the schedule."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()


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
        optimizer_step(opt, sched, loss, model)
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
    from .features import dequantize, grid_regions, quantize

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
        optimizer_step(opt, sched, total, head)
        if step % 10 == 0 or step == 1:
            losses.append(round(loss.item(), 4))
        if step % 100 == 0 or step == 1:
            w = ", ".join(f"{n} {v:.2f}" for n, v in zip(head.term_names(), head.weights.tolist()))
            log(f"step {step}/{cfg.steps} loss {loss.item():.3f} terms {term_loss.item():.3f} "
                f"{time.time() - start:.0f}s weights: {w}")
    head.eval()
    info = {"trained_by": "hsl-demo train hsl", "backbone": backbone.portable_id, "config": asdict(cfg),
            "losses": losses, "train_seconds": round(time.time() - start)}
    save_head(head, Path(out) / "hsl", info, card=HSL_CARD.format(
        backbone=backbone.portable_id, levels=cfg.levels, dim=cfg.dim, steps=cfg.steps, batch=cfg.batch_size,
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
    adaptive: bool = True  # False: the "combiner without weights" ablation (w_image = w_text = 0.5)
    weight_loss_weight: float = 0.5  # the self-supervised image/text weight target
    hard_negatives: bool = True  # look-alikes of each target join the gallery as negatives
    seed: int = 0
    catalog_seed: int = 0
    limit_combos: int = 0
    dataset: str | None = None  # "fashioniq" or "shoes": train on its train split, not the demo catalog
    data_root: str | None = None  # the data set's folder (its published layout)


@dataclass
class TripletBatch:
    """One training batch of composed queries over a pool of encoded photos (row numbers)."""

    refs: list[int]  # the reference photo of each query
    texts: list[str]  # its modification text
    gallery: list[int]  # the batch's targets (query i's own target at column i), then extra negatives
    positives: torch.Tensor  # (queries, gallery) bool: which gallery photos answer which query


class DemoTriplets:
    """Triplets made on the fly from rendered photos of the demo catalog's combinations.

    With `hard_negatives`, each query also brings look-alikes of its target into the gallery:
    the target's colour and pattern on another product, the target's product in another
    pattern, and the reference photo itself. Those are what a composed query confuses most
    ("make it blue and striped" on a t-shirt must not find blue striped gloves).
    """

    def __init__(self, attrs: list[Attributes], kinds: tuple[str, ...], hard_negatives: bool = True):
        self.attrs, self.kinds, self.hard_negatives = attrs, kinds, hard_negatives
        self.by_combo: dict[Attributes, list[int]] = {}
        self.by_key: dict[tuple, list[int]] = {}
        for i, a in enumerate(attrs):
            self.by_combo.setdefault(a, []).append(i)
            for key in (("op", a.color, a.pattern), ("cc", a.category, a.color)):
                self.by_key.setdefault(key, []).append(i)

    def sample(self, size: int, rng: random.Random) -> TripletBatch:
        from .data.triplets import modify

        refs, targets, texts, target_attrs = [], [], [], []
        while len(refs) < size:
            i = rng.randrange(len(self.attrs))
            target, text = modify(self.attrs[i], rng.choice(self.kinds), rng)
            candidates = [j for j in self.by_combo.get(target, []) if j != i]
            if not candidates:  # a held-out (or, in quick runs, absent) target combination
                continue
            refs.append(i)
            targets.append(rng.choice(candidates))
            texts.append(text)
            target_attrs.append(target)
        extra = []
        if self.hard_negatives:
            for ref, t in zip(refs, target_attrs):
                for key in (("op", t.color, t.pattern), ("cc", t.category, t.color)):
                    extra.append(rng.choice(self.by_key[key]))
                extra.append(ref)
        gallery = targets + extra
        gallery_attrs = [self.attrs[j] for j in gallery]
        positives = torch.tensor([[t == g for g in gallery_attrs] for t in target_attrs])
        return TripletBatch(refs, texts, gallery, positives)


class DatasetTriplets:
    """The published triplets of a data set's splits (Fashion-IQ, Shoes) over a pool of its photos.

    The pool is every reference and target image, in the order of `ids` (and `paths`): encode
    it once and index the embeddings by row. A query's text is its captions joined in random
    order (CLIP4Cir's augmentation). A gallery column answers a query when it is the query's
    target image. With `hard_negatives`, the batch's reference photos join the gallery as
    negatives: the published protocols keep the reference in the gallery, and an image-led
    query finds it first.
    """

    def __init__(self, splits: list, hard_negatives: bool = True):
        from .data.composed_datasets import join_captions

        images = {i: p for s in splits for i, p in s.images.items()}
        triplets = [t for s in splits for t in s.triplets if t.target is not None and join_captions(t.captions)]
        if not triplets:
            raise HslDemoError("no training triplets (each needs a target and a non-empty caption)")
        self.ids = list(dict.fromkeys(i for t in triplets for i in (t.reference, t.target)))
        self.paths = [images[i] for i in self.ids]
        row = {i: r for r, i in enumerate(self.ids)}
        self.triplets = [(row[t.reference], t.captions, row[t.target]) for t in triplets]
        self.hard_negatives = hard_negatives

    def sample(self, size: int, rng: random.Random) -> TripletBatch:
        from .data.composed_datasets import join_captions

        picked = [self.triplets[k] for k in rng.sample(range(len(self.triplets)), min(size, len(self.triplets)))]
        refs = [ref for ref, _, _ in picked]
        texts = [join_captions(captions, rng) for _, captions, _ in picked]
        targets = [target for _, _, target in picked]
        gallery = targets + (refs if self.hard_negatives else [])
        positives = torch.tensor([[t == g for g in gallery] for t in targets])
        return TripletBatch(refs, texts, gallery, positives)


def _check_resumable_adaptive(folder: Path, cfg: ComposedTrainConfig) -> None:
    """A hybrid stage resumes the head in `folder`: it must be the same kind (adaptive or not)."""
    if cfg.stage != "hybrid" or not (folder / "config.json").is_file():
        return
    try:
        adaptive = json.loads((folder / "config.json").read_text()).get("adaptive", True)
    except json.JSONDecodeError:
        return  # load_head reports it
    if adaptive != cfg.adaptive:
        kind = "adaptive" if adaptive else "fixed-weight"
        raise HslDemoError(f"the head in {folder} is {kind}; this run asks for "
                           f"{'adaptive' if cfg.adaptive else 'fixed'} weights: give another --out "
                           "(and train its domain stage first)")


def train_composed(out: str | Path, model: str | None, cfg: ComposedTrainConfig, log=print) -> dict:
    """Train the composed-query head on a frozen backbone and save it to `out`/composed.

    Stage "domain" starts from the untrained head (the equal-weight sum); stage "hybrid"
    resumes from `out`/composed when a domain-stage head is there.

    With `cfg.dataset` (fashioniq or shoes) the triplets are that data set's train split at
    `cfg.data_root` instead of the demo catalog. Only the hybrid stage runs there: the domain
    stage is the demo catalog's attribute-text matching, and relative captions ("is blue")
    do not describe a target on their own. A hybrid run on a data set resumes from the head
    in `out`/composed as on the demo catalog.
    """
    from .backbone import Backbone
    from .models import load_head
    from .models.composed import ComposedHead, weight_loss, weight_targets

    if cfg.stage not in COMPOSED_STAGES:
        raise ValueError(f"unknown stage {cfg.stage!r} (one of {', '.join(COMPOSED_STAGES)})")
    splits = None
    if cfg.dataset is not None:
        from .data.composed_datasets import load_composed_dataset

        if cfg.stage != "hybrid":
            raise HslDemoError(f"the {cfg.stage} stage is the demo catalog's attribute-text matching; on "
                               f"{cfg.dataset} train the hybrid stage (it resumes from a domain head in OUT/composed)")
        if cfg.data_root is None:
            raise HslDemoError(f"training on {cfg.dataset} needs its folder (data_root, --data-root)")
        splits = load_composed_dataset(cfg.dataset, cfg.data_root, "train")  # fail before loading the model
    folder = Path(out) / "composed"
    _check_resumable_adaptive(folder, cfg)  # fail before the photos are rendered and encoded
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    backbone = Backbone.load(model)
    if splits is None:
        attrs, embeds, _ = frozen_training_pool(backbone, cfg, cfg.seed + 5, log)
        triplets = DemoTriplets(attrs, COMPOSED_STAGES[cfg.stage], cfg.hard_negatives)
    else:
        from .evaluate import encode_image_files

        triplets = DatasetTriplets(splits, cfg.hard_negatives)
        log(f"encoding {len(triplets.paths)} {cfg.dataset} train photos with the frozen backbone "
            f"({len(triplets.triplets)} triplets)")
        embeds = torch.from_numpy(encode_image_files(backbone, triplets.paths, desc=f"{cfg.dataset} train"))

    resumed = None
    if cfg.stage == "hybrid" and (folder / "training.json").is_file():
        previous = json.loads((folder / "training.json").read_text())
        if previous.get("config", {}).get("stage") in ("domain", "hybrid"):
            head = load_head(ComposedHead, folder)
            resumed = previous["config"]["stage"]
            if head.embed_dim != embeds.shape[1]:
                raise HslDemoError(f"the {resumed}-stage head in {folder} is for {head.embed_dim}-d embeddings, "
                                   f"this backbone gives {embeds.shape[1]}-d; give another --out")
            log(f"resuming from the {resumed}-stage head in {folder}")
    if resumed is None:
        head = ComposedHead(embed_dim=embeds.shape[1], hidden=cfg.hidden, adaptive=cfg.adaptive)
    head.train()
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = warmup_cosine(opt, cfg.warmup, cfg.steps)
    losses, start = [], time.time()
    for step in range(1, cfg.steps + 1):
        batch = triplets.sample(cfg.batch_size, rng)
        image, gallery = embeds[batch.refs], embeds[batch.gallery]
        text = torch.from_numpy(backbone.encode_text(batch.texts))
        query = head(image, text)
        scale = head.logit_scale.exp().clamp(max=100)
        contrastive = multi_positive_infonce(scale * query.embeds @ gallery.t(), batch.positives)
        weights = weight_loss(query, weight_targets(image, text, gallery[:len(batch.refs)]))
        loss = contrastive + (cfg.weight_loss_weight * weights if cfg.adaptive else 0.0)
        optimizer_step(opt, sched, loss, head)
        if step % 10 == 0 or step == 1:
            losses.append(round(contrastive.item(), 4))
        if step % 100 == 0 or step == 1:
            log(f"[{cfg.stage}] step {step}/{cfg.steps} contrastive {contrastive.item():.3f} "
                f"weights {weights.item():.3f} mean w_text {query.w_text.mean().item():.2f} "
                f"{time.time() - start:.0f}s")
    head.eval()
    trained_by = f"hsl-demo train composed --stage {cfg.stage}" + (f" --dataset {cfg.dataset}" if cfg.dataset else "")
    info = {"trained_by": trained_by, "backbone": backbone.portable_id, "resumed_from": resumed,
            "config": asdict(cfg), "losses": losses, "train_seconds": round(time.time() - start)}
    save_head(head, folder, info, card=COMPOSED_CARD.format(
        trained_by=trained_by, steps=cfg.steps, batch=cfg.batch_size, backbone=backbone.portable_id,
        weights="adaptive, self-supervised" if cfg.adaptive else "fixed at 0.5 / 0.5 (ablation)"))
    log(f"saved the {cfg.stage}-stage composed head to {folder}")
    return info


COMPOSED_CARD = """---
library_name: hsl-demo
tags: [hsl-demo, composed-image-retrieval, open_clip, model_hub_mixin]
---
# Composed-query head (hsl-demo)

A reference image plus a modification text ("make it blue and striped") composed into one
query, after "Progressive Learning for Image Retrieval with Hybrid-Modality Queries" (Zhao,
Song, Jin; SIGIR 2022) with a CLIP4Cir-style combiner: normalize(w_image * image + w_text *
text + residual). Image/text weights: {weights}.

Trained by `{trained_by}` ({steps} steps, batch {batch}) on the frozen backbone
`{backbone}`. hsl-demo loads it from the `composed/` subfolder of a model folder.
"""


# ---- the HMRN head (drill-down rounds over the looks) ------------------------------------------
@dataclass
class HMRNTrainConfig:
    steps: int = 1500
    batch_size: int = 48  # looks; every round of each is a query set, so ~170 query sets a step
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup: int = 50
    looks: int = 3000  # freshly rendered training looks (training combinations only)
    dim: int = 128
    sim_dim: int = 32  # the reasoning graph runs on every (query set, look) pair: keep it narrow
    reasoning_steps: int = 3
    # How drill-down users name a product: mostly colour and category ("a red handbag"), often
    # in the plural ("white sneakers"). Weights over MENTIONS: both, colour only, pattern only, neither.
    mention_weights: tuple[float, ...] = (0.4, 0.4, 0.1, 0.1)
    plural: float = 0.25
    # the seed's loss: 0.6 local + 0.3 reasoning + 0.1 global, each a symmetric InfoNCE
    local_loss: float = 0.6
    reasoning_loss: float = 0.3
    global_loss: float = 0.1
    seed: int = 0
    catalog_seed: int = 0
    limit_combos: int = 0


@dataclass
class LookPool:
    """Rendered looks encoded once by the frozen backbone, with catalog-identical box regions."""

    items: list[list[Attributes]]
    embeds: torch.Tensor  # (N, D)
    regions: torch.Tensor  # (N, R, D)
    mask: torch.Tensor  # (N, R)


@torch.no_grad()
def render_look_pool(backbone, count: int, seed: int, catalog_seed: int = 0, limit_combos: int = 0,
                     batch: int = 64) -> LookPool:
    """`count` looks of 2 to 5 products of the training combinations (one of each category),
    rendered and encoded as `hsl-demo index` would (box-crop embeddings, int8 round trip)."""
    from tqdm.auto import tqdm

    from .data.demo import render_look
    from .features import dequantize, quantize, region_features_for

    rng = random.Random(seed)
    held = held_out_combinations(catalog_seed)
    combos = [a for a in all_combinations() if a not in held]
    if limit_combos:
        combos = rng.sample(combos, min(limit_combos, len(combos)))
    looks, embeds, regions = [], [], []
    for start in tqdm(range(0, count, batch), desc="render looks"):
        images, boxes = [], []
        categories = len({a.category for a in combos})
        for _ in range(min(batch, count - start)):
            n = min(rng.randint(2, 5), categories)  # one product of each category per look
            items: list[Attributes] = []
            while len(items) < n:
                a = rng.choice(combos)
                if a.category not in {b.category for b in items}:
                    items.append(a)
            image, placed = render_look(items, rng)
            looks.append(items)
            images.append(image)
            boxes.append(placed)
        feats, per_image = region_features_for(backbone, images, boxes)
        embeds.append(feats.embeds.cpu().float())
        regions.extend(dequantize(*quantize(r)) for r in per_image)
    r_max = max(len(r) for r in regions)
    region_arr = torch.zeros(len(regions), r_max, regions[0].shape[-1])
    mask = torch.zeros(len(regions), r_max, dtype=torch.bool)
    for i, r in enumerate(regions):
        region_arr[i, :len(r)], mask[i, :len(r)] = r, True
    return LookPool(looks, torch.cat(embeds), region_arr, mask)


def _query_key(a: Attributes, mention: tuple[bool, bool]) -> tuple:
    return (a.category, a.color if mention[0] else None, a.pattern if mention[1] else None)


def _look_keys(items: list[Attributes]) -> set[tuple]:
    """Every query key a look answers (each item under every mention)."""
    return {_query_key(a, m) for a in items for m in MENTIONS}


def train_hmrn(out: str | Path, model: str | None, cfg: HMRNTrainConfig, log=print) -> dict:
    """Train the HMRN head on a frozen backbone and save it to `out`/hmrn.

    Each training look gives one query per product (its caption, with colour and pattern
    mentioned as users do), in a shuffled order; the loss covers every round: at round n the
    first n queries are scored against every look of the batch. Another look counts as a
    positive when it answers every query so far.
    """
    from .backbone import Backbone
    from .models.hmrn import TERMS, HMRNHead

    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    backbone = Backbone.load(model)
    pool = render_look_pool(backbone, cfg.looks, cfg.seed + 7, cfg.catalog_seed, cfg.limit_combos)
    keys = [_look_keys(items) for items in pool.items]
    head = HMRNHead(embed_dim=pool.embeds.shape[1], dim=cfg.dim, sim_dim=cfg.sim_dim,
                    reasoning_steps=cfg.reasoning_steps)
    head.train()
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = warmup_cosine(opt, cfg.warmup, cfg.steps)
    max_items = pool.mask.shape[1]
    losses, start = [], time.time()
    for step in range(1, cfg.steps + 1):
        idx = rng.sample(range(len(pool.items)), min(cfg.batch_size, len(pool.items)))
        texts, query_keys, counts = [], [], []
        for i in idx:
            items = list(pool.items[i])
            rng.shuffle(items)
            mentions = rng.choices(MENTIONS, cfg.mention_weights, k=len(items))
            texts.extend(describe(a, rng, m, rng.random() < cfg.plural) for a, m in zip(items, mentions))
            query_keys.append([_query_key(a, m) for a, m in zip(items, mentions)])
            counts.append(len(items))
        # One row per (look, round): round n of a look is its first n queries. Every round of
        # every look is scored against every look of the batch in one pass.
        flat = torch.from_numpy(backbone.encode_text(texts))
        offsets = [0, *itertools.accumulate(counts)]
        rows = [(b, n) for b, c in enumerate(counts) for n in range(1, c + 1)]
        queries = torch.zeros(len(rows), max_items, flat.shape[1])
        query_mask = torch.zeros(len(rows), max_items, dtype=torch.bool)
        for r, (b, n) in enumerate(rows):
            queries[r, :n] = flat[offsets[b]:offsets[b] + n]
            query_mask[r, :n] = True
        positives = torch.tensor([[all(k in keys[j] for k in query_keys[b][:n]) for j in idx] for b, n in rows])
        s = head.scores(queries, query_mask, head.encode_images(pool.embeds[idx], pool.regions[idx], pool.mask[idx]))
        scale = head.logit_scale.exp().clamp(max=100)
        parts = torch.stack([multi_positive_infonce(scale * t, positives) for t in (s.local, s.global_, s.reasoning)])
        loss = cfg.local_loss * parts[0] + cfg.global_loss * parts[1] + cfg.reasoning_loss * parts[2]
        optimizer_step(opt, sched, loss, head)
        if step % 10 == 0 or step == 1:
            losses.append(round(loss.item(), 4))
        if step % 100 == 0 or step == 1:
            log(f"[hmrn] step {step}/{cfg.steps} loss {loss.item():.3f} (local {parts[0]:.3f}, "
                f"global {parts[1]:.3f}, reasoning {parts[2]:.3f}) {time.time() - start:.0f}s")
    head.eval()
    info = {"trained_by": "hsl-demo train hmrn", "backbone": backbone.portable_id, "config": asdict(cfg),
            "losses": losses, "train_seconds": round(time.time() - start)}
    save_head(head, Path(out) / "hmrn", info, card=HMRN_CARD.format(
        backbone=backbone.portable_id, steps=cfg.steps, batch=cfg.batch_size, looks=cfg.looks,
        weights=", ".join(f"{n} {w}" for n, w in zip(TERMS, head.term_weights))))
    log(f"saved HMRN head to {Path(out) / 'hmrn'}")
    return info


HMRN_CARD = """---
library_name: hsl-demo
tags: [hsl-demo, multi-query-image-retrieval, open_clip, model_hub_mixin]
---
# HMRN head (hsl-demo)

Hierarchical Matching and Reasoning head for drill-down search: region queries added round
by round are matched against an image's regions at the local level (query-to-region
attention), at the context-aware global level (attention-pooled queries vs attention-pooled
image), and by graph reasoning over query-region similarity vectors. Final score weights:
{weights}, the reasoning weight growing with the round.

Trained by `hsl-demo train hmrn` ({steps} steps, batch {batch}, {looks} rendered looks) on the
frozen backbone `{backbone}`. hsl-demo loads it from the `hmrn/` subfolder of a model folder.
"""
