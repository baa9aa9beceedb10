"""What the trainers share: the multi-positive contrastive loss, how a text's mentions
match a photo, and the demo photos rendered and encoded once by a frozen backbone."""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F

from ..data.attributes import Attributes
from ..data.demo import all_combinations, held_out_combinations, render_product, render_scene

TEXT_STYLES = ("templates", "grammar")  # the first demo model's templates; the phrasing grammar
MENTIONS = ((True, True), (True, False), (False, True), (False, False))
MENTION_WEIGHTS = (0.7, 0.1, 0.1, 0.1)


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


def mentions_match(image: Attributes, text: Attributes, mention: tuple[bool, bool]) -> bool:
    say_color, say_pattern = mention
    return (
        image.category == text.category
        and (not say_color or image.color == text.color)
        and (not say_pattern or image.pattern == text.pattern)
    )


def render_pool(combos: list[Attributes], variants: int, seed: int, preprocess, desc: str, scenes: int = 0,
                scene_crops: bool = False):
    """Preprocessed photos (float16 tensor) of every combination: `variants` studio shots each,
    then `scenes` photos with context each (data.demo.render_scene: the product among props,
    a mannequin, a second product of another kind), and with `scene_crops` each scene's square
    crop around its product too (the product as a detector would hand it over)."""
    from tqdm.auto import tqdm

    from ..features import box_crops

    rng = random.Random(seed)
    attrs, tensors = [], []
    for a in tqdm([a for a in combos for _ in range(variants)], desc=desc):
        tensors.append(preprocess(render_product(a, rng)).half())
        attrs.append(a)
    scene_rng = random.Random(seed + 7)
    for a in tqdm([a for a in combos for _ in range(scenes)], desc=f"{desc} (scenes)", disable=not scenes):
        scene = render_scene(a, scene_rng, combos)
        tensors.append(preprocess(scene.image).half())
        attrs.append(a)
        if scene_crops:
            tensors.append(preprocess(box_crops(scene.image, [scene.box])[0]).half())
            attrs.append(a)
    return torch.stack(tensors), attrs


@torch.no_grad()
def encode_pool(backbone, images: torch.Tensor, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Global embeddings (N, D) and catalog-identical region features (N, R, D) of a photo pool.

    Regions go through the same grid pooling and int8 round trip as `hsl-demo index`, so the
    head trains on exactly what it will see at search time.
    """
    from ..features import dequantize, grid_regions, quantize

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
    photos, attrs = render_pool(combos, cfg.variants, render_seed, backbone.preprocess, "render train",
                                scenes=cfg.scenes)
    log(f"encoding {len(photos)} training photos with the frozen backbone")
    embeds, regions = encode_pool(backbone, photos)
    return attrs, embeds, regions


LOOKALIKE_KEYS = ("cc", "cp", "op")  # same category+colour, category+pattern, colour+pattern


def lookalike_index(attrs: list[Attributes]) -> dict[tuple, list[int]]:
    """Photo rows by each pair of attributes they share (what `hard_batch` draws look-alikes from)."""
    by_key: dict[tuple, list[int]] = {}
    for i, a in enumerate(attrs):
        for key in (("cc", a.category, a.color), ("cp", a.category, a.pattern), ("op", a.color, a.pattern)):
            by_key.setdefault(key, []).append(i)
    return by_key


def hard_batch(attrs: list[Attributes], by_key: dict, size: int, rng: random.Random,
               keys: tuple[str, ...] = LOOKALIKE_KEYS, share: float = 0.5) -> list[int]:
    """Random photos, then look-alikes of them (`share` of the batch; two of three attributes
    shared, the pair drawn from `keys`), so the model learns what the FAISS candidates of a
    query actually confuse. keys=("op",): same colour and pattern, another category."""
    hard = int(size * share)
    first = [rng.randrange(len(attrs)) for _ in range(size - hard)]
    rest = []
    for i in (rng.choice(first) for _ in range(hard)):
        a = attrs[i]
        key = rng.choice(keys)
        values = {"cc": (a.category, a.color), "cp": (a.category, a.pattern), "op": (a.color, a.pattern)}[key]
        rest.append(rng.choice(by_key[(key, *values)]))
    return first + rest


def text_writer(style: str, rng: random.Random, region: bool = False):
    """How training texts name a product, `(attrs, mention, plural) -> text`: the first
    templates (attributes.describe) or the phrasing grammar (a query, or with `region`, a
    drill-down region phrase)."""
    from ..data import phrasing
    from ..data.attributes import describe

    if style not in TEXT_STYLES:
        raise ValueError(f"texts must be one of {', '.join(TEXT_STYLES)}, not {style!r}")
    if style == "templates":
        return lambda a, mention, plural=False: describe(a, rng, mention, plural)
    write = phrasing.region_phrase if region else phrasing.describe_query
    return lambda a, mention, plural=False: write(a, rng, mention, plural_form=plural)
