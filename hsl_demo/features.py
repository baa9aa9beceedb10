"""The mapper: what the backbone makes of a catalog photo, shared by indexing and training.

A photo becomes a global embedding and region features: its patch tokens pooled on a grid,
or, where the metadata gives boxes, the backbone embedding of each box's square crop. Region
features are stored unit-normalised as int8 with one float16 scale per vector.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .backbone import Backbone, ImageFeatures

REGION_GRID = 4  # patch tokens are average-pooled to at most 4x4 regions per image


def grid_regions(tokens: torch.Tensor, grid: tuple[int, int], cells: int = REGION_GRID) -> torch.Tensor:
    """(B, P, D) patch tokens -> (B, R, D) tokens average-pooled on a coarser grid."""
    b, p, d = tokens.shape
    rows, cols = grid
    if rows * cols != p:  # towers without a patch grid: one region, the image
        return tokens.mean(1, keepdim=True)
    fmap = tokens.transpose(1, 2).reshape(b, d, rows, cols)
    pooled = F.adaptive_avg_pool2d(fmap, (min(cells, rows), min(cells, cols)))
    return pooled.flatten(2).transpose(1, 2)


def box_crops(image: Image.Image, boxes: list[list[float]], margin: float = 0.1) -> list[Image.Image]:
    """One square crop per box (in image pixels), grown by `margin` on each side and clamped to
    the image: what the backbone encodes as that region's feature.

    Square, so the backbone's centre crop keeps the whole product; the backbone was trained on
    single-product photos, so a crop's embedding is a region feature aligned with text (where
    pooled patch tokens of a small ViT are not).
    """
    w, h = image.size
    source_w, source_h = image.info.get("source_size", image.size)  # open_image may have reduced it
    sx, sy = w / source_w, h / source_h
    crops = []
    for x0, y0, x1, y1 in ((b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy) for b in boxes):
        side = max(x1 - x0, y1 - y0, 1) * (1 + 2 * margin)
        side = min(side, w, h)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        left = min(max(cx - side / 2, 0), w - side)
        top = min(max(cy - side / 2, 0), h - side)
        crops.append(image.crop((round(left), round(top), round(left + side), round(top + side))))
    return crops


def region_features_for(backbone: Backbone, images: list[Image.Image], boxes: list[list[list[float]]],
                        times=None, pixels: torch.Tensor | None = None) -> tuple[ImageFeatures, list[torch.Tensor]]:
    """The backbone's features of a batch of images, and per image its (R, D) region features:
    the embeddings of its box crops, or, for an image without boxes, its patch tokens pooled on
    a grid. `pixels`: the images preprocessed already (else done here). `times` (an
    indexing.StageTimes) collects the seconds of preprocess, forward and regions."""
    times = times or _no_timing
    if pixels is None:
        with times("preprocess"):
            pixels = backbone.images_to_tensor(images)
    with times("forward"):
        feats = backbone.image_features(pixels)
    with times("regions"):
        grid_pooled = grid_regions(feats.tokens.float().cpu(), feats.grid)
        crops = [c for image, b in zip(images, boxes) for c in box_crops(image, b)]
        crop_embeds = torch.from_numpy(backbone.encode_images(crops)) if crops else None
    out, used = [], 0
    for i, b in enumerate(boxes):
        if b:
            out.append(crop_embeds[used:used + len(b)])
            used += len(b)
        else:
            out.append(grid_pooled[i])
    return feats, out


@contextmanager
def _no_timing(stage: str) -> Iterator[None]:
    yield


def quantize(regions: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Unit-normalise each vector (last axis) and store it as int8 with a float16 scale."""
    unit = F.normalize(regions.float(), dim=-1)
    scale = unit.abs().amax(-1).clamp_min(1e-8) / 127.0
    q = torch.round(unit / scale[..., None]).clamp(-127, 127).to(torch.int8)
    return q.numpy(), scale.half().numpy()


def dequantize(q: np.ndarray, scale: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(q).float() * torch.from_numpy(scale).float()[..., None]

