"""`hsl-demo train composed`: the composed-query head on a frozen backbone, saved to
`OUT/composed`. Progressive: stage 1 is the backbone, stage 2 ("domain") attribute-text
matching, stage 3 ("hybrid") every kind of modification, resuming from stage 2."""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..data.attributes import Attributes
from ..errors import HslDemoError
from ..model_folder import save_model_head
from .common import TEXT_STYLES, frozen_training_pool, multi_positive_infonce
from .loop import CHECKPOINT_DIR, Step, TrainConfig, fit, seed_everything

COMPOSED_STAGES = {
    # stage 2, domain pre-training: attribute-text matching. The text fully describes the
    # target (or asks for the reference itself), so each query has one dominant modality.
    "domain": ("redescribe", "this-one"),
    # stage 3, hybrid queries: every kind of modification.
    "hybrid": ("color", "pattern", "category", "color+pattern", "redescribe", "this-one"),
}


@dataclass
class ComposedTrainConfig(TrainConfig):
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
    dataset: str | None = None  # "fashioniq" or "shoes": train on its train split, not the demo catalog
    data_root: str | None = None  # the data set's folder (its published layout)
    texts: str = "templates"  # or "grammar": modification texts from the phrasing grammar
    eval_every: int = 100  # with a catalog: held-out evaluation, early stopping (see HSLTrainConfig)
    eval_items: int = 2000
    patience: int = 5


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

    def __init__(self, attrs: list[Attributes], kinds: tuple[str, ...], hard_negatives: bool = True,
                 grammar: bool = False):
        self.attrs, self.kinds, self.hard_negatives, self.grammar = attrs, kinds, hard_negatives, grammar
        self.by_combo: dict[Attributes, list[int]] = {}
        self.by_key: dict[tuple, list[int]] = {}
        for i, a in enumerate(attrs):
            self.by_combo.setdefault(a, []).append(i)
            for key in (("op", a.color, a.pattern), ("cc", a.category, a.color)):
                self.by_key.setdefault(key, []).append(i)

    def sample(self, size: int, rng: random.Random) -> TripletBatch:
        from ..data.triplets import modify

        refs, targets, texts, target_attrs = [], [], [], []
        while len(refs) < size:
            i = rng.randrange(len(self.attrs))
            target, text = modify(self.attrs[i], rng.choice(self.kinds), rng, self.grammar)
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
        from ..data.composed_datasets import join_captions

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
        from ..data.composed_datasets import join_captions

        picked = [self.triplets[k] for k in rng.sample(range(len(self.triplets)), min(size, len(self.triplets)))]
        refs = [ref for ref, _, _ in picked]
        texts = [join_captions(captions, rng) for _, captions, _ in picked]
        targets = [target for _, _, target in picked]
        gallery = targets + (refs if self.hard_negatives else [])
        positives = torch.tensor([[t == g for g in gallery] for t in targets])
        return TripletBatch(refs, texts, gallery, positives)


class CatalogTriplets:
    """Triplets over an indexed catalog's items (rows of its embeddings): from a triplet file or
    from items that share attributes (training/catalog_data.py). A gallery column answers a
    query when it is one of the query's targets; with `hard_negatives` the batch's references
    join the gallery as negatives, as for the public data sets."""

    def __init__(self, triplets: list, hard_negatives: bool = True):
        self.triplets, self.hard_negatives = triplets, hard_negatives

    def sample(self, size: int, rng: random.Random) -> TripletBatch:
        picked = [self.triplets[k] for k in rng.sample(range(len(self.triplets)), min(size, len(self.triplets)))]
        refs = [t.reference for t in picked]
        targets = [rng.choice(t.targets) for t in picked]
        gallery = targets + (refs if self.hard_negatives else [])
        positives = torch.tensor([[g in t.target_set for g in gallery] for t in picked])
        return TripletBatch(refs, [t.text for t in picked], gallery, positives)


def heldout_evaluation(pool, backbone, head, triplets: list, limit: int, chunk: int = 256):
    """R@1 / R@10 of held-out composed queries (a fixed sample of at most `limit`) over the whole
    catalog, the reference itself left out (unless it is a target), as CIRR's protocol does:
    the composed query against every item's embedding, `chunk` queries at a time."""
    from .catalog_data import recall_in_top

    picked = sorted(random.Random(0).sample(range(len(triplets)), min(limit, len(triplets))))
    triplets = [triplets[i] for i in picked]
    text = torch.from_numpy(backbone.encode_text([t.text for t in triplets]))
    refs = torch.tensor([t.reference for t in triplets])
    drop = torch.tensor([t.reference not in t.target_set for t in triplets])

    @torch.no_grad()
    def evaluate() -> dict:
        head.eval()
        hits: dict[str, float] = {}
        for start in range(0, len(triplets), chunk):
            part = slice(start, start + chunk)
            scores = head(pool.embeds[refs[part]], text[part]).embeds @ pool.embeds.t()
            rows = torch.arange(len(scores))[drop[part]]
            scores[rows, refs[part][drop[part]]] = float("-inf")
            figures = recall_in_top(scores, [t.target_set for t in triplets[part]])
            for k, v in figures.items():
                hits[k] = hits.get(k, 0.0) + v * len(scores)
        return {k: v / len(triplets) for k, v in hits.items()}

    return evaluate


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


def train_composed(out: str | Path, model: str | None, cfg: ComposedTrainConfig, log=print,
                   resume: bool = False, catalog: str | Path | None = None, triplets: str | Path | None = None) -> dict:
    """Train the composed-query head on a frozen backbone and save it to `out`/composed.

    Stage "domain" starts from the untrained head (the equal-weight sum); stage "hybrid"
    resumes from `out`/composed when a domain-stage head is there.

    With `cfg.dataset` (fashioniq or shoes) the triplets are that data set's train split at
    `cfg.data_root` instead of the demo catalog. Only the hybrid stage runs there: the domain
    stage is the demo catalog's attribute-text matching, and relative captions ("is blue")
    do not describe a target on their own. A hybrid run on a data set resumes from the head
    in `out`/composed as on the demo catalog.

    With `catalog` (an indexed catalog folder), the queries are that catalog's: from the
    `triplets` file, or pairs of items that differ in one or two attributes; the head starts
    untrained, is scored on held-out queries and kept at its best evaluation, and `out` becomes
    a complete model folder.
    """
    if catalog is not None:
        return _train_on_catalog(out, model, cfg, log, resume, catalog, triplets)
    from ..hub import load_backbone
    from ..models import load_head
    from ..models.composed import ComposedHead

    if cfg.stage not in COMPOSED_STAGES:
        raise ValueError(f"unknown stage {cfg.stage!r} (one of {', '.join(COMPOSED_STAGES)})")
    splits = None
    if cfg.dataset is not None:
        from ..data.composed_datasets import load_composed_dataset

        if cfg.stage != "hybrid":
            raise HslDemoError(f"the {cfg.stage} stage is the demo catalog's attribute-text matching; on "
                               f"{cfg.dataset} train the hybrid stage (it resumes from a domain head in OUT/composed)")
        if cfg.data_root is None:
            raise HslDemoError(f"training on {cfg.dataset} needs its folder (data_root, --data-root)")
        splits = load_composed_dataset(cfg.dataset, cfg.data_root, "train")  # fail before loading the model
    folder = Path(out) / "composed"
    _check_resumable_adaptive(folder, cfg)  # fail before the photos are rendered and encoded
    rng = seed_everything(cfg.seed)
    backbone = load_backbone(model)
    if splits is None:
        attrs, embeds, _ = frozen_training_pool(backbone, cfg, cfg.seed + 5, log)
        if cfg.texts not in TEXT_STYLES:
            raise ValueError(f"texts must be one of {', '.join(TEXT_STYLES)}, not {cfg.texts!r}")
        triplets = DemoTriplets(attrs, COMPOSED_STAGES[cfg.stage], cfg.hard_negatives, cfg.texts == "grammar")
    else:
        from ..evaluate import encode_image_files

        triplets = DatasetTriplets(splits, cfg.hard_negatives)
        log(f"encoding {len(triplets.paths)} {cfg.dataset} train photos with the frozen backbone "
            f"({len(triplets.triplets)} triplets)")
        embeds = torch.from_numpy(encode_image_files(backbone, triplets.paths, desc=f"{cfg.dataset} train"))

    resumed = None
    if cfg.stage == "hybrid" and (folder / "training.json").is_file():
        previous = json.loads((folder / "training.json").read_text())
        if previous.get("config", {}).get("stage") in ("domain", "hybrid") and "--catalog" not in str(
                previous.get("trained_by", "")):
            head = load_head(ComposedHead, folder)
            resumed = previous["config"]["stage"]
            if head.embed_dim != embeds.shape[1]:
                raise HslDemoError(f"the {resumed}-stage head in {folder} is for {head.embed_dim}-d embeddings, "
                                   f"this backbone gives {embeds.shape[1]}-d; give another --out")
            log(f"resuming from the {resumed}-stage head in {folder}")
    if resumed is None:
        head = ComposedHead(embed_dim=embeds.shape[1], hidden=cfg.hidden, adaptive=cfg.adaptive)

    step = _composed_step(head, backbone, embeds, triplets, cfg, rng)

    result = fit(head, step, cfg, name=f"composed {cfg.stage}", rng=rng, log=log,
                 checkpoint_dir=Path(out) / CHECKPOINT_DIR / f"composed-{cfg.stage}", resume=resume)
    trained_by = f"hsl-demo train composed --stage {cfg.stage}" + (f" --dataset {cfg.dataset}" if cfg.dataset else "")
    info = {"trained_by": trained_by, "backbone": backbone.portable_id, "resumed_from": resumed,
            "config": asdict(cfg), "losses": result.losses, "train_seconds": round(result.seconds)}
    save_model_head(head, folder, info, card={
        "trained_by": trained_by, "steps": cfg.steps, "batch": cfg.batch_size, "backbone": backbone.portable_id,
        "weights": "adaptive, self-supervised" if cfg.adaptive else "fixed at 0.5 / 0.5 (ablation)"})
    log(f"saved the {cfg.stage}-stage composed head to {folder}")
    return info


def _composed_step(head, backbone, embeds: torch.Tensor, triplets, cfg: ComposedTrainConfig, rng: random.Random):
    from ..models.composed import weight_loss, weight_targets

    def step(_: int) -> Step:
        batch = triplets.sample(cfg.batch_size, rng)
        image, gallery = embeds[batch.refs], embeds[batch.gallery]
        text = torch.from_numpy(backbone.encode_text(batch.texts))
        query = head(image, text)
        scale = head.logit_scale.exp().clamp(max=100)
        contrastive = multi_positive_infonce(scale * query.embeds @ gallery.t(), batch.positives)
        weights = weight_loss(query, weight_targets(image, text, gallery[:len(batch.refs)]))
        loss = contrastive + (cfg.weight_loss_weight * weights if cfg.adaptive else 0.0)
        return Step(loss, {"contrastive": contrastive.item(), "weights": weights.item(),
                           "mean w_text": query.w_text.mean().item()})

    return step


def _train_on_catalog(out, model, cfg: ComposedTrainConfig, log, resume: bool, catalog, triplet_file) -> dict:
    from ..model_folder import start_model_folder
    from ..models.composed import ComposedHead
    from .catalog_data import attribute_triplets, heldout_table, open_training_catalog, read_triplet_file

    rng = seed_everything(cfg.seed)
    backbone, pool = open_training_catalog(catalog, model, log)
    found = read_triplet_file(triplet_file, pool) if triplet_file else attribute_triplets(pool, seed=cfg.seed)
    log(f"{len(found.train)} training and {len(found.heldout)} held-out composed queries ({found.source})")
    head = ComposedHead(embed_dim=pool.embeds.shape[1], hidden=cfg.hidden, adaptive=cfg.adaptive)
    step = _composed_step(head, backbone, pool.embeds, CatalogTriplets(found.train, cfg.hard_negatives), cfg, rng)
    evaluate = heldout_evaluation(pool, backbone, head, found.heldout, cfg.eval_items)
    baseline = evaluate()
    log("[composed] untrained (equal-weight sum) on held-out queries: "
        + " ".join(f"{k} {v:.3f}" for k, v in baseline.items()))
    start_model_folder(backbone, out, "composed")
    result = fit(head, step, cfg, name="composed", rng=rng, log=log,
                 checkpoint_dir=Path(out) / CHECKPOINT_DIR / "composed-catalog", resume=resume,
                 evaluate=evaluate, eval_every=cfg.eval_every, keep_best="score", patience=cfg.patience,
                 baseline=baseline, identity={"catalog": pool.fingerprint, "triplets": found.fingerprint()})
    info = {"trained_by": "hsl-demo train composed --catalog", "backbone": backbone.portable_id,
            "config": asdict(cfg), "catalog": pool.describe(), "triplets": found.source,
            "losses": result.losses, "train_seconds": round(result.seconds),
            "evaluation": heldout_table(baseline, result)}
    folder = Path(out) / "composed"
    save_model_head(head, folder, info, card={
        "trained_by": info["trained_by"], "steps": cfg.steps, "batch": cfg.batch_size,
        "backbone": backbone.portable_id,
        "weights": "adaptive, self-supervised" if cfg.adaptive else "fixed at 0.5 / 0.5 (ablation)",
        "catalog": pool.describe(), "evaluation": info["evaluation"]})
    log(f"saved the composed head to {folder}")
    return info
