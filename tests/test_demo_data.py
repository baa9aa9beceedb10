import os
import random

import numpy as np
import pytest

from hsl_demo.data import demo
from hsl_demo.data.attributes import CATEGORIES, COLORS, PATTERNS, Attributes, describe, descriptions
from hsl_demo.defaults import DEMO_DATA_DIR
from hsl_demo.fileio import load_jsonl


def test_vocabulary_is_large_enough():
    assert len(CATEGORIES) >= 30
    assert len(COLORS) >= 10 and {"black", "white", "grey"} <= {c.name for c in COLORS}
    assert {p.name for p in PATTERNS} >= {"plain", "striped", "dotted", "checked"}
    assert len({c.emoji for c in CATEGORIES}) == len(CATEGORIES)


def test_held_out_combinations_leave_every_pair_in_training():
    held = demo.held_out_combinations(0)
    combos = demo.all_combinations()
    assert 0.1 * len(combos) < len(held) < 0.2 * len(combos)
    train = [a for a in combos if a not in held]
    seen = {p for a in train for p in demo._pairs(a)}
    for a in held:
        assert all(p in seen for p in demo._pairs(a)), a
    assert demo.held_out_combinations(0) == held  # deterministic
    assert demo.held_out_combinations(1) != held


def test_descriptions_are_varied_and_mention_every_attribute():
    a = Attributes("scarf", "grey", "checked")
    texts = descriptions(a, random.Random(0), 3)
    assert len(set(texts)) == 3
    for t in texts:
        assert any(w in t for w in ("scarf", "muffler", "neck scarf"))
        assert "grey" in t or "gray" in t
    assert describe(a, random.Random(1), (False, False)) in {"scarf", "muffler", "neck scarf", "a scarf",
                                                              "a muffler", "a neck scarf"}


def test_rendering_is_deterministic_by_seed():
    a = Attributes("t-shirt", "red", "striped")
    one = np.asarray(demo.render_product(a, random.Random(5)))
    two = np.asarray(demo.render_product(a, random.Random(5)))
    other = np.asarray(demo.render_product(a, random.Random(6)))
    assert one.shape == (demo.PRODUCT_IMAGE_SIZE, demo.PRODUCT_IMAGE_SIZE, 3)
    assert np.array_equal(one, two)
    assert not np.array_equal(one, other)


@pytest.mark.parametrize("pattern", ["striped", "dotted", "checked"])
def test_patterns_are_drawn_on_the_product_only(pattern):
    plain = np.asarray(demo.product_sprite(Attributes("handbag", "blue", "plain"), random.Random(2)))
    patterned = np.asarray(demo.product_sprite(Attributes("handbag", "blue", pattern), random.Random(2)))
    # Same silhouette, so nothing was painted outside the product...
    assert np.array_equal(plain[..., 3], patterned[..., 3])
    inside = plain[..., 3] > 200
    # ...inside it a real share of the product changed colour...
    changed = (np.abs(plain[..., :3].astype(int) - patterned[..., :3].astype(int)).sum(-1) > 60) & inside
    assert changed.sum() / inside.sum() > 0.1
    # ...and the product's own colour still dominates (blue with white dots is still blue).
    mean = patterned[..., :3][inside].astype(float).mean(0)
    base, contrast = plain[..., :3][inside].astype(float).mean(0), np.array([246.0, 246.0, 242.0])
    assert np.linalg.norm(mean - base) < np.linalg.norm(mean - contrast)


def test_recolouring_follows_the_colour_name():
    rng = random.Random(0)
    means = {}
    for color in ("red", "green", "blue", "black", "white"):
        sprite = np.asarray(demo.product_sprite(Attributes("t-shirt", color, "plain"), rng)).astype(float)
        inside = sprite[..., 3] > 200
        means[color] = sprite[..., :3][inside].mean(0)
    assert means["red"].argmax() == 0 and means["green"].argmax() == 1 and means["blue"].argmax() == 2
    assert means["black"].mean() < 80 < 170 < means["white"].mean()


def test_looks_have_two_to_five_products_in_boxes():
    rng = random.Random(0)
    held = demo.held_out_combinations(0)
    looks = list(demo.plan_looks(0, 20, held))
    assert {split for _, split, _ in looks} == {"train", "test"}
    for _look_id, split, items in looks:
        assert 2 <= len(items) <= 5
        assert (split == "test") == any(a in held for a in items)
        assert len({a.category for a in items}) == len(items)
    image, boxes = demo.render_look(looks[0][2], rng)
    assert len(boxes) == len(looks[0][2])
    for x0, y0, x1, y1 in boxes:
        assert 0 <= x0 < x1 <= image.width and 0 <= y0 < y1 <= image.height
    for i, a in enumerate(boxes):  # products do not overlap
        for b in boxes[i + 1:]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


def test_make_demo_catalogs_writes_metadata_and_images(tmp_path, monkeypatch):
    # A reduced run (few looks) of the real generator; the full one made assets/demo.
    monkeypatch.setattr(demo, "PRODUCTS_PER_COMBINATION", 1)
    monkeypatch.setattr(demo, "all_combinations", lambda: [
        Attributes(c.name, col, p) for c in CATEGORIES[:3] for col in ("red", "white") for p in ("plain", "dotted")])
    counts = demo.make_demo_catalogs(tmp_path / "out", seed=0, looks=5, progress=False)
    assert counts == {"products": 12, "looks": 5 + len(demo.SHOWCASE_LOOKS)}  # random looks, then the showcase
    records = load_jsonl(tmp_path / "out/products/metadata.jsonl")
    for r in records:
        assert (tmp_path / "out/products/images" / r["image"]).is_file()
        assert {"id", "title", "category", "color", "pattern", "split", "descriptions"} <= set(r)
    looks = load_jsonl(tmp_path / "out/looks/metadata.jsonl")
    assert all(2 <= len(look["items"]) <= 5 for look in looks)
    assert looks[5]["title"] == "Look: red handbag, white sneaker, blue cap" and looks[5]["id"] == "l0005"
    multi = load_jsonl(tmp_path / "out/looks/queries.multi.test.jsonl")
    assert all(q["mode"] == "multi" and q["regions"] and q["targets"] for q in multi)
    assert not list(tmp_path.glob("out/.*"))  # no temporary folders left


def test_shipped_demo_catalog_matches_the_generator():
    records = load_jsonl(DEMO_DATA_DIR / "products/metadata.jsonl")
    planned = demo.plan_products(0)
    assert [r["id"] for r in records] == [p.id for p in planned]
    assert [r["descriptions"] for r in records[:50]] == [p.descriptions for p in planned[:50]]
    # re-render the first product with the generator's own random stream: same pixels as shipped
    first = demo.render_product(planned[0].attrs, random.Random(1))
    shipped = demo.Image.open(DEMO_DATA_DIR / "products/images" / records[0]["image"]).convert("RGB")
    diff = np.abs(np.asarray(first, dtype=int) - np.asarray(shipped, dtype=int))
    assert diff.mean() < 3  # JPEG noise only
    splits = {r["split"] for r in records}
    assert splits == {"train", "test"}
    test_combos = {(r["category"], r["color"], r["pattern"]) for r in records if r["split"] == "test"}
    train_combos = {(r["category"], r["color"], r["pattern"]) for r in records if r["split"] == "train"}
    assert not test_combos & train_combos
    queries = load_jsonl(DEMO_DATA_DIR / "products/queries.test.jsonl")
    assert len(queries) == len(test_combos)


def test_drill_down_queries_name_colour_and_category_and_list_every_matching_look():
    looks = load_jsonl(DEMO_DATA_DIR / "looks/metadata.jsonl")
    assert [lk["id"] for lk in looks[-len(demo.SHOWCASE_LOOKS):]] == ["l0400", "l0401", "l0402", "l0403", "l0404"]
    queries = load_jsonl(DEMO_DATA_DIR / "looks/queries.multi.test.jsonl")
    assert queries == demo.multi_queries(looks, 0)  # the shipped file is the generator's
    test_looks = [lk for lk in looks if lk["split"] == "test"]
    assert len(queries) == len(test_looks) == 80
    by_id = {lk["id"]: lk for lk in looks}
    for q, look in zip(queries, test_looks):
        assert len(q["regions"]) == len(look["items"]) and look["id"] in q["targets"]
        wanted = {(it["category"], it["color"]) for it in look["items"]}
        for t in q["targets"]:
            assert wanted <= {(it["category"], it["color"]) for it in by_id[t]["items"]}


def test_the_packaged_emoji_font_renders_as_the_whole_font():
    """The subset that ships with the package is what renders the demo world (no system font
    needed); where Debian's whole font is installed, every product glyph is pixel-identical."""
    from PIL import Image, ImageDraw, ImageFont

    from hsl_demo.data.demo import EMOJI_FONT_CANDIDATES, PACKAGED_EMOJI_FONT, emoji_font_path

    assert emoji_font_path() == str(PACKAGED_EMOJI_FONT) and PACKAGED_EMOJI_FONT.stat().st_size < 300_000

    def glyph(path: str, emoji: str) -> np.ndarray:
        canvas = Image.new("RGBA", (160, 160), (0, 0, 0, 0))
        ImageDraw.Draw(canvas).text((0, 0), emoji, font=ImageFont.truetype(path, 109), embedded_color=True)
        return np.asarray(canvas)

    system = next((p for p in EMOJI_FONT_CANDIDATES[1:] if os.path.isfile(p)), None)
    for category in CATEGORIES:
        packaged = glyph(str(PACKAGED_EMOJI_FONT), category.emoji)
        assert packaged[..., 3].sum() > 0, category.name
        if system:
            assert np.array_equal(packaged, glyph(system, category.emoji)), category.name


def test_scenes_put_the_product_among_other_things_and_keep_its_box(tmp_path, monkeypatch):
    """The world with context (`make-demo-catalog --scenes 1`): each scene photo holds the
    product inside its recorded box, beside other objects; the studio shots stay as shipped."""
    monkeypatch.setattr(demo, "all_combinations", lambda: [
        Attributes(c.name, col, "plain") for c in CATEGORIES[:4] for col in ("red", "blue")])
    demo.make_demo_catalogs(tmp_path / "out", seed=0, looks=2, progress=False, scenes=1)
    records = load_jsonl(tmp_path / "out/products/metadata.jsonl")
    studio, scenes = records[:16], records[16:]
    assert [r["id"] for r in studio] == [p.id for p in demo.plan_products(0, scenes=0)]
    assert len(scenes) == 8 and all(r["scene"] and r["scene_objects"] for r in scenes)
    assert "items" not in scenes[0]  # boxes of a scene are not indexed as regions
    for r in scenes:
        image = np.asarray(demo.Image.open(tmp_path / "out/products/images" / r["image"]).convert("RGB"), float)
        x0, y0, x1, y1 = r["box"]
        assert 0 <= x0 < x1 <= image.shape[1] and 0 <= y0 < y1 <= image.shape[0]
        assert (x1 - x0) * (y1 - y0) < 0.5 * image.shape[0] * image.shape[1]  # the product shares the frame
        target = np.array(demo.COLOR_BY_NAME[r["color"]].rgb, float)
        near = np.abs(image - target).sum(-1) < 90  # the product's own colour, shaded
        inside = near[y0:y1, x0:x1].mean()
        outside = (near.sum() - near[y0:y1, x0:x1].sum()) / (near.size - near[y0:y1, x0:x1].size)
        assert inside > 0.02 and inside > 3 * outside, (r["id"], inside, outside)  # its colour lies in its box
    again = demo.render_scene(Attributes("t-shirt", "red", "plain"), random.Random(3))
    assert again.box == demo.render_scene(Attributes("t-shirt", "red", "plain"), random.Random(3)).box
