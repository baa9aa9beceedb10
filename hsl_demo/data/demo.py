"""The embedded demo catalogs, rendered from the Noto Color Emoji artwork.

Two catalogs come out of `make_demo_catalogs`:
- products: one product per photo, recoloured and patterned, with attributes and descriptions;
- looks: flat-lay photos of 2 to 5 products, with a box and a caption per product.

Held-out attribute combinations (category, colour, pattern) form the test split: the model
never sees them in training, so test queries measure composition, not memory.
Everything is deterministic given the seed.
"""

from __future__ import annotations

import colorsys
import itertools
import os
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from ..errors import HslDemoError
from ..fileio import atomic_dir, write_jsonl
from .attributes import (
    CATEGORIES,
    CATEGORY_BY_NAME,
    COLOR_BY_NAME,
    COLORS,
    PATTERNS,
    Attributes,
    describe,
    descriptions,
    title,
)
from .triplets import plan_triplets

# The subset shipped with the package first (pip alone renders the demo world), then the system's.
PACKAGED_EMOJI_FONT = Path(__file__).resolve().parent / "fonts" / "NotoColorEmoji-demo.ttf"
EMOJI_FONT_CANDIDATES = (
    str(PACKAGED_EMOJI_FONT),
    "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf",
    "/usr/share/fonts/noto/NotoColorEmoji.ttf",
    "/usr/local/share/fonts/NotoColorEmoji.ttf",
)
EMOJI_BITMAP_SIZE = 109  # the only size the CBDT bitmaps of Noto Color Emoji come in
PRODUCT_IMAGE_SIZE = 128
LOOK_IMAGE_SIZE = 256
HELD_OUT_FRACTION = 0.15
PRODUCTS_PER_COMBINATION = 2  # clean studio shots
# Product photos with context (render_scene) per combination, after every studio shot. The
# shipped catalog has none yet: `make-demo-catalog --scenes 1` makes the world with context.
SCENES_PER_COMBINATION = 0


def emoji_font_path() -> str:
    override = os.environ.get("HSL_DEMO_EMOJI_FONT")
    for path in ([override] if override else []) + list(EMOJI_FONT_CANDIDATES):
        if path and os.path.isfile(path):
            return path
    raise HslDemoError(
        f"Noto Color Emoji font not found ({PACKAGED_EMOJI_FONT} is missing from this install): reinstall "
        "hsl-demo, install the Debian package fonts-noto-color-emoji, or set HSL_DEMO_EMOJI_FONT to NotoColorEmoji.ttf"
    )


@cache
def _glyph(emoji: str) -> np.ndarray:
    """The emoji's artwork as float RGBA in [0, 1], cropped to its bounding box."""
    font = ImageFont.truetype(emoji_font_path(), EMOJI_BITMAP_SIZE)
    canvas = Image.new("RGBA", (160, 160), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((0, 0), emoji, font=font, embedded_color=True)
    box = canvas.getbbox()
    if box is None:
        raise HslDemoError(f"the emoji font has no artwork for {emoji!r}")
    return np.asarray(canvas.crop(box), dtype=np.float32) / 255.0


def _pattern_mask(pattern: str, height: int, width: int, rng: random.Random) -> np.ndarray:
    """How much contrast colour goes where (0..1), in glyph pixels (~120 px across).

    Every pattern covers well under half of the product, so the product's own colour
    dominates: a white shirt with black checks never looks like a black one with white checks.
    """
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    if pattern == "plain":
        return np.zeros((height, width), dtype=np.float32)
    period = rng.uniform(11.0, 16.0)
    phase_x, phase_y = rng.uniform(0, period), rng.uniform(0, period)
    if pattern == "striped":
        coord = rng.choice([y, x, (x + y) / np.sqrt(2), (x - y) / np.sqrt(2)])
        return (((coord + phase_y) / period) % 1.0 < rng.uniform(0.3, 0.38)).astype(np.float32)
    if pattern == "dotted":
        row = np.floor((y + phase_y) / period)
        shifted_x = x + phase_x + (row % 2) * period / 2  # staggered rows, like printed polka dots
        dy = ((y + phase_y) % period) - period / 2
        dx = (shifted_x % period) - period / 2
        return (dx**2 + dy**2 < (period * rng.uniform(0.24, 0.3)) ** 2).astype(np.float32)
    if pattern == "checked":
        # Gingham: translucent bands both ways, solid where they cross.
        duty = rng.uniform(0.3, 0.36)
        bands_x = ((x + phase_x) / period) % 1.0 < duty
        bands_y = ((y + phase_y) / period) % 1.0 < duty
        return np.where(bands_x & bands_y, 1.0, np.where(bands_x | bands_y, 0.6, 0.0)).astype(np.float32)
    raise ValueError(f"unknown pattern {pattern!r}")


def product_sprite(attrs: Attributes, rng: random.Random) -> Image.Image:
    """The product alone (RGBA, transparent around it): recoloured, patterned and shaded."""
    angle = rng.uniform(-10, 10)  # drawn first: the same seed gives the same silhouette for any pattern
    glyph = _glyph(CATEGORY_BY_NAME[attrs.category].emoji)
    rgb, alpha = glyph[..., :3], glyph[..., 3]
    # Keep the artwork's shading (folds, seams, outlines) but none of its colours.
    lum = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    inside = alpha > 0.5
    lo, hi = np.percentile(lum[inside], [2, 98])
    shade = np.clip((lum - lo) / max(hi - lo, 1e-3), 0.0, 1.0)[..., None]

    color = COLOR_BY_NAME[attrs.color]
    base = np.array(color.rgb, dtype=np.float32)
    contrast = np.array((246, 246, 242) if color.luminance < 0.55 else (34, 34, 40), dtype=np.float32)
    mask = _pattern_mask(attrs.pattern, *alpha.shape, rng)[..., None]
    paint = base * (1.0 - mask) + contrast * mask
    out = np.clip(paint * (0.62 + 0.38 * shade) + 38.0 * shade**2, 0, 255)
    rgba = np.concatenate([out, alpha[..., None] * 255.0], axis=-1).astype(np.uint8)
    sprite = Image.fromarray(rgba, "RGBA")
    return sprite.rotate(angle, resample=Image.BICUBIC, expand=True)


def _background(size: tuple[int, int], avoid_luminance: float, rng: random.Random) -> Image.Image:
    """A soft studio backdrop whose brightness stays away from the product's colour."""
    for _ in range(100):
        value = rng.uniform(0.25, 0.98)
        sat = rng.uniform(0.0, 0.22)
        hue = rng.random()
        r, g, b = colorsys.hsv_to_rgb(hue, sat, value)
        lum = 0.299 * r + 0.587 * g + 0.114 * b
        if abs(lum - avoid_luminance) > 0.28:
            break
    top = np.array([r, g, b], dtype=np.float32) * 255
    bottom = top * rng.uniform(0.85, 1.0)
    t = np.linspace(0, 1, size[1], dtype=np.float32)[:, None, None]
    grad = top * (1 - t) + bottom * t
    img = np.broadcast_to(grad, (size[1], size[0], 3)).copy()
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def _paste_with_shadow(canvas: Image.Image, sprite: Image.Image, xy: tuple[int, int]) -> None:
    alpha = sprite.getchannel("A")
    shadow = Image.new("RGBA", sprite.size, (0, 0, 0, 0))
    shadow.putalpha(alpha.point(lambda a: a * 0.28).filter(ImageFilter.GaussianBlur(3)))
    canvas.paste(shadow, (xy[0] + 3, xy[1] + 4), shadow)
    canvas.paste(sprite, xy, sprite)


def render_product(attrs: Attributes, rng: random.Random, size: int = PRODUCT_IMAGE_SIZE) -> Image.Image:
    """A product photo: the product at a varied size and place on a varied backdrop."""
    sprite = product_sprite(attrs, rng)
    scale = rng.uniform(0.55, 0.92) * size / max(sprite.size)
    sprite = sprite.resize(
        (max(1, round(sprite.width * scale)), max(1, round(sprite.height * scale))), Image.LANCZOS
    )
    canvas = _background((size, size), COLOR_BY_NAME[attrs.color].luminance, rng)
    x = rng.randint(0, max(0, size - sprite.width))
    y = rng.randint(0, max(0, size - sprite.height))
    _paste_with_shadow(canvas, sprite, (x, y))
    return canvas


# The things a scene puts around a product (natural colours, never a product category):
# what shares a real product photo's frame, so that the product is one object among several.
SCENE_PROPS = ("\U0001fab4", "\U0001f4e6", "\U0001f6cd", "\U0001fa9e", "\U0001fa91", "\U0001f4da", "\U0001f3fa",
               "\U0001f576", "\U0001f453", "\U0001f484", "\U0001f48d", "\u231a", "\U0001f4f1", "\U0001f4bb",
               "\u2615", "\U0001f34e", "\U0001f338", "\U0001f9f8", "\U0001f5bc", "\U0001f56f", "\U0001f9f4",
               "\U0001f9fa", "\U0001f381", "\U0001f4f7", "\U0001f3a7", "\U0001f33f", "\U0001f34b")
MANNEQUIN = "\U0001f9cd"  # a standing person, drawn as a neutral silhouette


@dataclass
class Scene:
    """A product photo with context: the image, the product's box, and every other object's."""

    image: Image.Image
    box: list[int]  # the product's tight box (x0, y0, x1, y1), in pixels
    objects: list[dict]  # {"box", "kind": "prop" | "mannequin" | "product", ...} of everything else


def _textured_background(size: int, avoid_luminance: float, rng: random.Random) -> Image.Image:
    """A backdrop with texture (blotchy low-frequency noise) and, half the time, a table or
    floor: a darker or lighter band across the lower part of the frame."""
    base = np.asarray(_background((size, size), avoid_luminance, rng), dtype=np.float32)
    cells = rng.randint(3, 8)
    noise = np.asarray(Image.fromarray(np.uint8(np.random.default_rng(rng.randrange(2**32)).integers(
        0, 256, (cells, cells)))).resize((size, size), Image.BICUBIC), dtype=np.float32)
    img = base + (noise[..., None] - 128) * rng.uniform(0.08, 0.2)
    if rng.random() < 0.5:
        horizon = rng.randint(size // 2, size - size // 6)
        img[horizon:] *= rng.choice((0.72, 0.82, 1.12))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def _sized(sprite: Image.Image, side: float) -> Image.Image:
    scale = side / max(sprite.size)
    return sprite.resize((max(1, round(sprite.width * scale)), max(1, round(sprite.height * scale))), Image.LANCZOS)


def _natural_sprite(emoji: str, rng: random.Random, tint: tuple[int, int, int] | None = None) -> Image.Image:
    """A prop in its own colours (or, with `tint`, a flat silhouette of that colour, shaded)."""
    glyph = _glyph(emoji)
    rgba = glyph * 255.0
    if tint is not None:
        lum = glyph[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        rgba[..., :3] = np.array(tint, dtype=np.float32) * (0.8 + 0.2 * lum[..., None])
    sprite = Image.fromarray(np.clip(rgba, 0, 255).astype(np.uint8), "RGBA")
    return sprite.rotate(rng.uniform(-12, 12), resample=Image.BICUBIC, expand=True)


def _tight_box(sprite: Image.Image, xy: tuple[int, int]) -> list[int]:
    x0, y0, x1, y1 = sprite.getchannel("A").point(lambda a: 255 if a > 40 else 0).getbbox()
    return [xy[0] + x0, xy[1] + y0, xy[0] + x1, xy[1] + y1]


def render_scene(attrs: Attributes, rng: random.Random, others: list[Attributes] = (),
                 size: int = PRODUCT_IMAGE_SIZE) -> Scene:
    """A product photo with context: the product (38-62 % of the frame) among props, often a
    mannequin behind it, sometimes a second, smaller product (one of `others`) and a prop in
    front that hides part of it, on a textured backdrop."""
    canvas = _textured_background(size, COLOR_BY_NAME[attrs.color].luminance, rng).convert("RGBA")
    objects: list[dict] = []

    def place(sprite: Image.Image, kind: str, **extra) -> list[int]:
        xy = (rng.randint(-sprite.width // 4, max(0, size - sprite.width * 3 // 4)),
              rng.randint(-sprite.height // 6, max(0, size - sprite.height * 5 // 6)))
        _paste_with_shadow(canvas, sprite, xy)
        box = [max(0, v) if i < 2 else min(size, v) for i, v in enumerate(_tight_box(sprite, xy))]
        objects.append({"box": box, "kind": kind, **extra})
        return box

    if rng.random() < 0.4:
        grey = rng.randint(150, 215)
        tint = (grey, grey - rng.randint(0, 20), grey - rng.randint(0, 40))
        place(_sized(_natural_sprite(MANNEQUIN, rng, tint), size * rng.uniform(0.75, 0.98)), "mannequin")
    for emoji in rng.sample(SCENE_PROPS, rng.randint(1, 3)):
        place(_sized(_natural_sprite(emoji, rng), size * rng.uniform(0.2, 0.38)), "prop", emoji=emoji)
    second = [a for a in others if a.category != attrs.category]
    if second and rng.random() < 0.35:
        other = rng.choice(second)
        place(_sized(product_sprite(other, rng), size * rng.uniform(0.24, 0.36)), "product",
              category=other.category, color=other.color, pattern=other.pattern)

    sprite = _sized(product_sprite(attrs, rng), size * rng.uniform(0.38, 0.62))
    xy = (rng.randint(0, size - sprite.width), rng.randint(0, size - sprite.height))
    _paste_with_shadow(canvas, sprite, xy)
    box = _tight_box(sprite, xy)
    if rng.random() < 0.35:  # a prop in front, over one corner of the product
        emoji = rng.choice(SCENE_PROPS)
        front = _sized(_natural_sprite(emoji, rng), (box[2] - box[0]) * rng.uniform(0.35, 0.55))
        fx = box[0] - front.width // 3 if rng.random() < 0.5 else box[2] - front.width * 2 // 3
        fy = box[1] - front.height // 3 if rng.random() < 0.5 else box[3] - front.height * 2 // 3
        _paste_with_shadow(canvas, front, (fx, fy))
        front_box = [max(0, v) if i < 2 else min(size, v) for i, v in enumerate(_tight_box(front, (fx, fy)))]
        objects.append({"box": front_box, "kind": "prop", "emoji": emoji, "in_front": True})
    return Scene(canvas.convert("RGB"), box, objects)


def all_combinations() -> list[Attributes]:
    return [
        Attributes(cat.name, col.name, pat.name)
        for cat, col, pat in itertools.product(CATEGORIES, COLORS, PATTERNS)
    ]


def held_out_combinations(seed: int, fraction: float = HELD_OUT_FRACTION) -> set[Attributes]:
    """A random set of combinations for the test split such that every pair of attribute
    values (category+colour, category+pattern, colour+pattern) is still seen in training."""
    rng = random.Random(seed * 7919 + 1)
    combos = all_combinations()
    rng.shuffle(combos)
    held: set[Attributes] = set()
    pair_counts: dict[tuple, int] = {}
    for a in combos:
        for pair in _pairs(a):
            pair_counts[pair] = pair_counts.get(pair, 0) + 1
    target = round(fraction * len(combos))
    for a in combos:
        if len(held) >= target:
            break
        if all(pair_counts[p] > 1 for p in _pairs(a)):
            held.add(a)
            for p in _pairs(a):
                pair_counts[p] -= 1
    return held


def _pairs(a: Attributes) -> tuple[tuple, ...]:
    return (("cc", a.category, a.color), ("cp", a.category, a.pattern), ("op", a.color, a.pattern))


@dataclass
class Product:
    id: str
    attrs: Attributes
    split: str
    descriptions: list[str]
    scene: bool = False  # a photo with context (render_scene), not a studio shot

    def record(self, image: str, scene: Scene | None = None) -> dict:
        """Its metadata line; a scene's also holds the product's box and the other objects
        (`scene_objects`: not `items`, which `hsl-demo index` would read as regions)."""
        record = {
            "id": self.id,
            "image": image,
            "title": title(self.attrs),
            "category": self.attrs.category,
            "color": self.attrs.color,
            "pattern": self.attrs.pattern,
            "split": self.split,
            "descriptions": self.descriptions,
        }
        if scene is not None:
            record |= {"scene": True, "box": scene.box, "scene_objects": scene.objects}
        return record


def plan_products(seed: int, scenes: int = SCENES_PER_COMBINATION) -> list[Product]:
    rng = random.Random(seed)
    held = held_out_combinations(seed)
    products = []
    for attrs in all_combinations():
        for _ in range(PRODUCTS_PER_COMBINATION):
            products.append(
                Product(
                    id=f"p{len(products):05d}",
                    attrs=attrs,
                    split="test" if attrs in held else "train",
                    descriptions=descriptions(attrs, rng, 3),
                )
            )
    # Scenes come after every studio shot, from their own random stream: the studio shots
    # (ids, photos, descriptions) are what they were before scenes existed.
    scene_rng = random.Random(seed + 5)
    for attrs in all_combinations():
        for _ in range(scenes):
            products.append(Product(f"p{len(products):05d}", attrs, "test" if attrs in held else "train",
                                    descriptions(attrs, scene_rng, 3), scene=True))
    return products


def text_queries(products: list[Product], seed: int, split: str = "test") -> list[dict]:
    """One text query per combination in `split`; its targets are every product that matches."""
    rng = random.Random(seed + 17)
    by_combo: dict[Attributes, list[str]] = {}
    for p in products:
        if p.split == split:
            by_combo.setdefault(p.attrs, []).append(p.id)
    return [
        {"mode": "text", "text": describe(attrs, rng), "targets": ids}
        for attrs, ids in by_combo.items()
    ]


def _look_layout(n: int, rng: random.Random, size: int) -> list[tuple[int, int, int, int]]:
    """Non-overlapping cells for n products in a flat-lay, jittered so looks differ."""
    cols = 2 if n <= 4 else 3
    rows = (n + cols - 1) // cols
    cells = [(c, r) for r in range(rows) for c in range(cols)]
    rng.shuffle(cells)
    cw, ch = size / cols, size / rows
    boxes = []
    for c, r in cells[:n]:
        w = h = int(min(cw, ch) * rng.uniform(0.72, 0.92))
        x0 = int(c * cw + rng.uniform(0, cw - w))
        y0 = int(r * ch + rng.uniform(0, ch - h))
        boxes.append((x0, y0, x0 + w, y0 + h))
    return boxes


def render_look(items: list[Attributes], rng: random.Random, size: int = LOOK_IMAGE_SIZE):
    """A flat-lay photo of several products; returns the image and each product's tight box."""
    # Flat-lays sit on a neutral table so that every product colour stays visible.
    canvas = _background((size, size), avoid_luminance=-1.0, rng=rng)
    placed = []
    for attrs, (x0, y0, x1, y1) in zip(items, _look_layout(len(items), rng, size)):
        sprite = product_sprite(attrs, rng)
        scale = min((x1 - x0) / sprite.width, (y1 - y0) / sprite.height)
        sprite = sprite.resize(
            (max(1, round(sprite.width * scale)), max(1, round(sprite.height * scale))), Image.LANCZOS
        )
        _paste_with_shadow(canvas, sprite, (x0, y0))
        bx0, by0, bx1, by1 = sprite.getchannel("A").point(lambda a: 255 if a > 40 else 0).getbbox()
        placed.append([x0 + bx0, y0 + by0, x0 + bx1, y0 + by1])
    return canvas, placed


def plan_looks(seed: int, count: int, held: set[Attributes]) -> Iterator[tuple[str, str, list[Attributes]]]:
    """(id, split, items) per look. Test looks contain at least one held-out combination;
    train looks contain none, so drill-down test queries are unseen too."""
    rng = random.Random(seed + 101)
    held_list = sorted(held, key=lambda a: a.as_tuple())
    train_combos = [a for a in all_combinations() if a not in held]
    for i in range(count):
        split = "test" if i % 5 == 4 else "train"
        n = min(rng.randint(2, 5), len({a.category for a in train_combos}))
        items: list[Attributes] = []
        if split == "test":
            items.append(rng.choice(held_list))
        while len(items) < n:
            a = rng.choice(train_combos)
            if a.category not in {b.category for b in items}:  # one of each kind per look
                items.append(a)
        rng.shuffle(items)
        yield f"l{i:04d}", split, items


# Looks the walkthrough uses ("a red handbag", then "white sneakers"), beside near misses that
# match only one of the two, so a drill-down has something to sharpen. They come after the
# random looks, from their own random stream, so adding them left the others unchanged.
SHOWCASE_LOOKS = (
    (("handbag", "red", "plain"), ("sneaker", "white", "plain"), ("cap", "blue", "plain")),
    (("handbag", "red", "dotted"), ("sneaker", "white", "striped"), ("jeans", "black", "plain")),
    (("sneaker", "white", "plain"), ("handbag", "red", "checked")),
    (("handbag", "red", "plain"), ("sneaker", "black", "plain"), ("scarf", "green", "plain")),
    (("handbag", "pink", "plain"), ("sneaker", "white", "plain")),
)


def _render_look_record(folder: Path, look_id: str, split: str, items: list[Attributes],
                        rng: random.Random) -> dict:
    """Render one look into `folder` and return its metadata record."""
    image, boxes = render_look(items, rng)
    image.save(folder / f"{look_id}.jpg", quality=90)
    entries = [
        {"box": box, "caption": describe(a, rng), "category": a.category, "color": a.color, "pattern": a.pattern}
        for a, box in zip(items, boxes)
    ]
    return {
        "id": look_id,
        "image": f"{look_id}.jpg",
        "title": "Look: " + ", ".join(title(a).lower() for a in items),
        "split": split,
        "items": entries,
    }


def render_showcase_looks(folder: Path, first: int, held: set[Attributes], seed: int) -> list[dict]:
    """Render SHOWCASE_LOOKS as looks number `first`, `first` + 1, ..."""
    rng = random.Random(seed + 3)
    records = []
    for i, spec in enumerate(SHOWCASE_LOOKS):
        items = [Attributes(*a) for a in spec]
        split = "test" if any(a in held for a in items) else "train"
        records.append(_render_look_record(folder, f"l{first + i:04d}", split, items, rng))
    return records


def multi_queries(looks: list[dict], seed: int = 0, split: str = "test") -> list[dict]:
    """Drill-down query lines: per look of `split`, one short query per product ("a red
    handbag": colour and category, as people name things in a picture), in the order listed
    (fixed in test). Several looks often match the first rounds; targets are every look
    holding a product of each named colour and category, so later rounds must narrow it down."""
    rng = random.Random(seed + 29)

    def keys(look: dict) -> set[tuple]:
        return {(it["category"], it["color"]) for it in look["items"]}

    out = []
    for look in looks:
        if look["split"] != split:
            continue
        items = [Attributes(it["category"], it["color"], it["pattern"]) for it in look["items"]]
        wanted = keys(look)
        out.append({
            "mode": "multi",
            "regions": [describe(a, rng, (True, False)) for a in items],
            "targets": [other["id"] for other in looks if wanted <= keys(other)],
        })
    return out


def make_demo_catalogs(out: str | Path, seed: int = 0, looks: int = 400, progress: bool = True,
                       scenes: int = SCENES_PER_COMBINATION) -> dict:
    """Render both demo catalogs under `out` (products/ and looks/), atomically; `scenes`
    product photos with context per combination join the studio shots."""
    from tqdm.auto import tqdm

    emoji_font_path()  # fail early with the install hint
    out = Path(out)
    for name, image_name in (("products", r"p\d{5}\.jpg"), ("looks", r"l\d{4}\.jpg")):
        _check_replaceable(out / name, image_name)
    if (out / "README.md").exists() and not (out / "README.md").read_text(errors="replace").startswith(
            _CREDIT.splitlines()[0]):
        raise HslDemoError(f"{out / 'README.md'} exists and was not written by hsl-demo: choose another --out")
    counts = {}
    products = plan_products(seed, scenes)
    with atomic_dir(out / "products") as tmp:
        (tmp / "images").mkdir()
        rng, scene_rng = random.Random(seed + 1), random.Random(seed + 6)
        held = held_out_combinations(seed)
        train_combos = [a for a in all_combinations() if a not in held]  # a scene's second product
        records = []
        for p in tqdm(products, desc="products", disable=not progress):
            scene = render_scene(p.attrs, scene_rng, train_combos) if p.scene else None
            image = scene.image if scene else render_product(p.attrs, rng)
            image.save(tmp / "images" / f"{p.id}.jpg", quality=90)
            records.append(p.record(f"{p.id}.jpg", scene))
        write_jsonl(tmp / "metadata.jsonl", records)
        write_jsonl(tmp / "queries.test.jsonl", text_queries(products, seed))
        write_jsonl(tmp / "queries.composed.test.jsonl",
                    plan_triplets(records, held_out_combinations(seed), seed, split="test"))
        counts["products"] = len(records)

    held = held_out_combinations(seed)
    with atomic_dir(out / "looks") as tmp:
        (tmp / "images").mkdir()
        rng = random.Random(seed + 2)
        records = []
        for look_id, split, items in tqdm(list(plan_looks(seed, looks, held)), desc="looks", disable=not progress):
            records.append(_render_look_record(tmp / "images", look_id, split, items, rng))
        records.extend(render_showcase_looks(tmp / "images", len(records), held, seed))
        write_jsonl(tmp / "metadata.jsonl", records)
        write_jsonl(tmp / "queries.multi.test.jsonl", multi_queries(records, seed))
        counts["looks"] = len(records)
    from .phrasing_heldout import heldout_query_files

    heldout_query_files(out, seed)  # the same test queries in held-out sentence shapes
    (out / "README.md").write_text(_CREDIT)
    return counts


DEMO_FILES = frozenset({"images", "metadata.jsonl", "queries.test.jsonl", "queries.composed.test.jsonl",
                        "queries.multi.test.jsonl", "queries.test.heldout.jsonl",
                        "queries.composed.test.heldout.jsonl", "queries.multi.test.heldout.jsonl"})


def _check_replaceable(folder: Path, image_name: str) -> None:
    """A demo catalog folder is replaced whole: refuse one holding anything this generator does
    not write (never delete a file the tool did not create)."""
    if not folder.exists():
        return
    entries = list(folder.iterdir()) if folder.is_dir() else [folder]
    foreign = [p.name for p in entries if p.name not in DEMO_FILES or p.is_symlink()]
    images = folder / "images"
    if images.is_dir() and not images.is_symlink():
        foreign += [f"images/{p.name}" for p in images.iterdir() if not re.fullmatch(image_name, p.name)]
    if foreign or not folder.is_dir():
        raise HslDemoError(f"{folder} exists and is not a demo catalog written by hsl-demo (it holds "
                           f"{', '.join(sorted(foreign)[:3]) or 'a file'}): choose another --out")


_CREDIT = """# Demo catalogs

Rendered by `hsl-demo make-demo-catalog` from the artwork of Noto Color Emoji
(a subset ships in `hsl_demo/data/fonts/`). The emoji artwork is licensed under the
Apache License 2.0 and the font under the SIL Open Font License 1.1; see
https://github.com/googlefonts/noto-emoji. The products are recoloured, patterned and
composed versions of that artwork.

- `products/`: one product per photo; `metadata.jsonl` (id, image, title, category, color,
  pattern, split, descriptions), `queries.test.jsonl` (held-out text queries) and
  `queries.composed.test.jsonl` (held-out composed queries: reference, text, targets, kind).
- `looks/`: flat-lay photos of 2 to 5 products; `metadata.jsonl` with `items`
  (box, caption, category, color, pattern).
"""

