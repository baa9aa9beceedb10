"""`hsl-demo train hmrn`: the HMRN drill-down head on a frozen backbone, saved to `OUT/hmrn`,
trained on freshly rendered looks of the demo catalog's training combinations."""

from __future__ import annotations

import itertools
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..data.attributes import Attributes
from ..data.demo import all_combinations, held_out_combinations
from ..model_folder import save_model_head
from ..models.hmrn import TERMS, HMRNScores
from .common import MENTIONS, multi_positive_infonce, text_writer
from .loop import CHECKPOINT_DIR, Step, TrainConfig, fit, seed_everything


@dataclass
class HMRNTrainConfig(TrainConfig):
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
    texts: str = "templates"  # or "grammar": region phrases from the phrasing grammar
    eval_every: int = 100  # with a catalog: held-out evaluation, early stopping (see HSLTrainConfig)
    eval_items: int = 500  # every (query set, item) pair runs the reasoning graph: keep it modest
    patience: int = 5


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

    from ..data.demo import render_look
    from ..features import dequantize, quantize, region_features_for

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


def train_hmrn(out: str | Path, model: str | None, cfg: HMRNTrainConfig, log=print, resume: bool = False,
               catalog: str | Path | None = None) -> dict:
    """Train the HMRN head on a frozen backbone and save it to `out`/hmrn.

    Each training look gives one query per product (its caption, with colour and pattern
    mentioned as users do), in a shuffled order; the loss covers every round: at round n the
    first n queries are scored against every look of the batch. Another look counts as a
    positive when it answers every query so far.

    With `catalog` (an indexed catalog whose items have boxes with captions), the looks are its
    items and the queries their box captions; the head is scored on held-out items, kept at its
    best evaluation, and `out` becomes a complete model folder.
    """
    if catalog is not None:
        return _train_on_catalog(out, model, cfg, log, resume, catalog)
    from ..hub import load_backbone
    from ..models.hmrn import HMRNHead

    rng = seed_everything(cfg.seed)
    backbone = load_backbone(model)
    pool = render_look_pool(backbone, cfg.looks, cfg.seed + 7, cfg.catalog_seed, cfg.limit_combos)
    keys = [_look_keys(items) for items in pool.items]
    head = HMRNHead(embed_dim=pool.embeds.shape[1], dim=cfg.dim, sim_dim=cfg.sim_dim,
                    reasoning_steps=cfg.reasoning_steps)
    write_text = text_writer(cfg.texts, rng, region=True)

    def sample():
        idx = rng.sample(range(len(pool.items)), min(cfg.batch_size, len(pool.items)))
        sets, query_keys = [], []
        for i in idx:
            items = list(pool.items[i])
            rng.shuffle(items)
            mentions = rng.choices(MENTIONS, cfg.mention_weights, k=len(items))
            sets.append([write_text(a, m, rng.random() < cfg.plural) for a, m in zip(items, mentions)])
            query_keys.append([_query_key(a, m) for a, m in zip(items, mentions)])
        # a look answers the first n queries of another when it answers each of them
        answers = [[[all(k in keys[j] for k in qk[:n]) for j in idx] for n in range(1, len(qk) + 1)]
                   for qk in query_keys]
        return idx, sets, answers

    step = _hmrn_step(head, backbone, lambda idx: (pool.embeds[idx], pool.regions[idx], pool.mask[idx]),
                      pool.mask.shape[1], sample, cfg)

    result = fit(head, step, cfg, name="hmrn", rng=rng, log=log, checkpoint_dir=Path(out) / CHECKPOINT_DIR / "hmrn",
                 resume=resume)
    info = {"trained_by": "hsl-demo train hmrn", "backbone": backbone.portable_id, "config": asdict(cfg),
            "losses": result.losses, "train_seconds": round(result.seconds)}
    save_model_head(head, Path(out) / "hmrn", info, card={
        "backbone": backbone.portable_id, "steps": cfg.steps, "batch": cfg.batch_size, "looks": cfg.looks,
        "weights": ", ".join(f"{n} {w}" for n, w in zip(TERMS, head.term_weights))})
    log(f"saved HMRN head to {Path(out) / 'hmrn'}")
    return info


def pad_query_sets(flat: torch.Tensor, sets: list[tuple[int, int]],
                   max_items: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(Q, max_items, D) query sets and their (Q, max_items) mask: set q is the `n` rows of `flat`
    from `start`, for each (start, n) of `sets`."""
    queries = torch.zeros(len(sets), max_items, flat.shape[1])
    mask = torch.zeros(len(sets), max_items, dtype=torch.bool)
    for r, (start, n) in enumerate(sets):
        queries[r, :n] = flat[start:start + n]
        mask[r, :n] = True
    return queries, mask


def _hmrn_step(head, backbone, features, max_items: int, sample, cfg: HMRNTrainConfig):
    """The training step: `sample()` gives the batch's looks (rows), each look's queries in round
    order, and for each look and round which looks of the batch answer it; `features(rows)`
    gives their (embeddings, regions, mask)."""

    def step(_: int) -> Step:
        idx, sets, answers = sample()
        sets = [texts[:max_items] for texts in sets]
        counts = [len(texts) for texts in sets]
        # One row per (look, round): round n of a look is its first n queries. Every round of
        # every look is scored against every look of the batch in one pass.
        flat = torch.from_numpy(backbone.encode_text([t for texts in sets for t in texts]))
        offsets = [0, *itertools.accumulate(counts)]
        rows = [(b, n) for b, c in enumerate(counts) for n in range(1, c + 1)]
        queries, query_mask = pad_query_sets(flat, [(offsets[b], n) for b, n in rows], max_items)
        positives = torch.tensor([answers[b][n - 1] for b, n in rows])
        s = head.scores(queries, query_mask, head.encode_images(*features(idx)))
        scale = head.logit_scale.exp().clamp(max=100)
        parts = torch.stack([multi_positive_infonce(scale * t, positives) for t in (s.local, s.global_, s.reasoning)])
        loss = cfg.local_loss * parts[0] + cfg.global_loss * parts[1] + cfg.reasoning_loss * parts[2]
        return Step(loss, {"loss": loss.item(), "local": parts[0].item(), "global": parts[1].item(),
                           "reasoning": parts[2].item()})

    return step


def _catalog_sampler(pool, cfg: HMRNTrainConfig, rng: random.Random):
    """Training items with captioned boxes; each one's captions in a random order. Another item
    answers the first n queries when its captions include each of them."""
    from .catalog_data import caption_rows, region_captions

    rows = caption_rows(pool, heldout=False)
    captions = {r: region_captions(pool.items[r]) for r in rows}
    known = {r: {c.casefold() for c in cs} for r, cs in captions.items()}

    def sample():
        idx = rng.sample(rows, min(cfg.batch_size, len(rows)))
        sets = [rng.sample(captions[i], len(captions[i])) for i in idx]
        answers = [[[all(q.casefold() in known[j] for q in texts[:n]) or j == i for j in idx]
                    for n in range(1, len(texts) + 1)] for i, texts in zip(idx, sets)]
        return idx, sets, answers

    return sample


def _heldout_evaluation(pool, backbone, head, limit: int, chunk: int = 32):
    """Last-round R@1 / R@10 over held-out items (a fixed sample of at most `limit`): each item's
    captions, in order, are the rounds; the full score at that round. Query sets are scored in
    chunks: the reasoning graph runs on every (query set, item) pair."""
    from .catalog_data import caption_rows, recall_figures, region_captions

    rows = caption_rows(pool, heldout=True)
    rows = sorted(random.Random(0).sample(rows, min(limit, len(rows))))
    max_items = pool.catalog.region_mask.shape[1]
    sets = [region_captions(pool.items[r])[:max_items] for r in rows]
    flat = torch.from_numpy(backbone.encode_text([t for texts in sets for t in texts]))
    offsets = list(itertools.accumulate((len(t) for t in sets), initial=0))
    queries, query_mask = pad_query_sets(flat, [(offsets[r], len(t)) for r, t in enumerate(sets)], max_items)
    known = [{c.casefold() for c in region_captions(pool.items[r])} for r in rows]
    positives = torch.tensor([[a == b or all(t.casefold() in known[b] for t in sets[a]) for b in range(len(rows))]
                              for a in range(len(rows))])

    @torch.no_grad()
    def evaluate() -> dict:
        head.eval()
        images = head.encode_images(pool.embeds[rows], *pool.regions(rows))
        scores = torch.zeros(len(rows), len(rows))
        for start in range(0, len(rows), chunk):
            part = slice(start, start + chunk)
            s = head.scores(queries[part], query_mask[part], images)
            for n in query_mask[part].sum(1).unique().tolist():  # the full score at each set's own round
                same = (query_mask[part].sum(1) == n).nonzero().squeeze(1)
                scores[start + same] = head.combine(HMRNScores(s.local[same], s.global_[same], s.reasoning[same],
                                                               s.per_query[same]), n)
        return recall_figures(scores, positives)

    return evaluate


def _train_on_catalog(out, model, cfg: HMRNTrainConfig, log, resume: bool, catalog) -> dict:
    from ..model_folder import start_model_folder
    from ..models.hmrn import HMRNHead
    from .catalog_data import heldout_table, open_training_catalog

    rng = seed_everything(cfg.seed)
    backbone, pool = open_training_catalog(catalog, model, log)
    head = HMRNHead(embed_dim=pool.embeds.shape[1], dim=cfg.dim, sim_dim=cfg.sim_dim,
                    reasoning_steps=cfg.reasoning_steps)
    step = _hmrn_step(head, backbone, lambda idx: (pool.embeds[idx], *pool.regions(idx)),
                      pool.catalog.region_mask.shape[1], _catalog_sampler(pool, cfg, rng), cfg)
    evaluate = _heldout_evaluation(pool, backbone, head, cfg.eval_items)
    baseline = evaluate()
    log("[hmrn] untrained on held-out items: " + " ".join(f"{k} {v:.3f}" for k, v in baseline.items()))
    start_model_folder(backbone, out, "hmrn")
    result = fit(head, step, cfg, name="hmrn", rng=rng, log=log,
                 checkpoint_dir=Path(out) / CHECKPOINT_DIR / "hmrn-catalog", resume=resume, evaluate=evaluate,
                 eval_every=cfg.eval_every, keep_best="score", patience=cfg.patience, baseline=baseline,
                 identity={"catalog": pool.fingerprint})
    info = {"trained_by": "hsl-demo train hmrn --catalog", "backbone": backbone.portable_id, "config": asdict(cfg),
            "catalog": pool.describe(), "losses": result.losses, "train_seconds": round(result.seconds),
            "evaluation": heldout_table(baseline, result)}
    save_model_head(head, Path(out) / "hmrn", info, card={
        "backbone": backbone.portable_id, "steps": cfg.steps, "batch": cfg.batch_size, "looks": len(pool.items),
        "weights": ", ".join(f"{n} {w}" for n, w in zip(TERMS, head.term_weights)),
        "catalog": pool.describe(), "evaluation": info["evaluation"]})
    log(f"saved HMRN head to {Path(out) / 'hmrn'}")
    return info
