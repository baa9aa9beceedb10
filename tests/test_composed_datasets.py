"""Fashion-IQ and Shoes adapters: the public layouts (tiny fixtures rendered at test time),
their errors, and composed-retrieval evaluation on them with the shipped demo model."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
from conftest import assert_clean_error, run_cli
from dataset_fixtures import FIXTURE_COLORS, FIXTURE_PATTERNS, write_fashioniq_fixture, write_shoes_fixture

from hsl_demo.data.composed_datasets import (
    FASHIONIQ_CATEGORIES,
    ComposedSplit,
    Protocol,
    Triplet,
    join_captions,
    load_composed_dataset,
    load_fashioniq,
    load_shoes,
)
from hsl_demo.errors import HslDemoError
from hsl_demo.evaluate import (
    PUBLISHED_COMPOSED,
    encode_composed_split,
    evaluate_composed_dataset,
    score_composed_split,
)
from hsl_demo.models.composed import ComposedHead
from hsl_demo.search import load_heads

GRID = len(FIXTURE_COLORS) * len(FIXTURE_PATTERNS)  # fixture images per Fashion-IQ category and split


def evaluate_composed_split(backbone, head, split, ks, variant="adaptive") -> dict:
    """Recall@ks (percent) of one split, reference kept."""
    encoded = encode_composed_split(backbone, split, progress=False)
    return score_composed_split(head, split, encoded, Protocol(ks), variant).to_dict()


@pytest.fixture(scope="module")
def fiq_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fashioniq")
    counts = write_fashioniq_fixture(root)
    assert counts["images"] == 3 * 3 * GRID
    return root


@pytest.fixture(scope="module")
def shoes_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shoes")
    counts = write_shoes_fixture(root)
    assert counts == {"images": 18, "triplets": {"train": 12, "eval": 24}, "gallery": {"train": 6, "eval": 12}}
    return root


@pytest.fixture(scope="module")
def trained_head(demo_backbone):
    return load_heads(demo_backbone)["composed"]


def _copy(root: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(root, tmp_path / "copy"))


# ---- loaders ---------------------------------------------------------------------------------

def test_join_captions():
    assert join_captions(["is blue ", "  has  stripes."]) == "is blue and has stripes"
    assert join_captions(["", " ? ", "is red"]) == "is red"
    assert join_captions([]) == ""
    orders = {join_captions(["a x", "b y"], random.Random(seed)) for seed in range(20)}
    assert orders == {"a x and b y", "b y and a x"}


def test_fashioniq_layout(fiq_root):
    splits = load_fashioniq(fiq_root, "val")
    assert [s.name for s in splits] == list(FASHIONIQ_CATEGORIES)
    published = json.loads((fiq_root / "captions/cap.dress.val.json").read_text())
    dress = splits[0]
    assert len(dress.gallery) == GRID and len(dress.triplets) == 2 * GRID == len(published)
    assert dress.gallery == json.loads((fiq_root / "image_splits/split.dress.val.json").read_text())
    first = dress.triplets[0]
    assert (first.reference, first.target) == (published[0]["candidate"], published[0]["target"])
    assert join_captions(first.captions) == "is blue and blue in color"  # red plain -> blue plain
    assert join_captions(dress.triplets[1].captions) == "has stripes and is striped"  # plain -> striped
    assert all(t.target in dress.gallery and t.reference in dress.gallery for t in dress.triplets)
    assert set(dress.images) == set(dress.gallery)
    assert dress.images[dress.gallery[0]].suffix == ".png"  # .jpg missing: the .png is taken
    assert all(p.is_file() for p in dress.images.values())
    # splits do not share images, and the test split has no targets
    train = load_fashioniq(fiq_root, "train", categories=("shirt",))[0]
    assert not set(train.gallery) & set(splits[1].gallery)
    test = load_fashioniq(fiq_root, "test")
    assert all(t.target is None for s in test for t in s.triplets)


def test_shoes_layout(shoes_root):
    ev = load_shoes(shoes_root, "eval")
    names = (shoes_root / "eval_im_names.txt").read_text().split()
    assert ev.name == "shoes" and ev.gallery == names and len(ev.triplets) == 24
    assert all(t.target in names and len(t.captions) == 1 for t in ev.triplets)
    assert ev.triplets[0].captions == ("is blue",)
    assert all(p.is_file() and p.name == n and p.parent.parent.parent.name == "images" for n, p in ev.images.items())
    train = load_shoes(shoes_root, "train")
    assert len(train.gallery) == 6 and len(train.triplets) == 12 and not set(train.gallery) & set(names)
    assert load_shoes(shoes_root, "test").triplets == ev.triplets == load_shoes(shoes_root, "val").triplets


def test_shoes_split_follows_the_target(shoes_root, tmp_path):
    root = _copy(shoes_root, tmp_path)
    train_name = (root / "train_im_names.txt").read_text().split()[0]
    eval_name = (root / "eval_im_names.txt").read_text().split()[0]
    records = json.loads((root / "relative_captions_shoes.json").read_text())
    records.append({"ImageName": eval_name, "ReferenceImageName": train_name, "RelativeCaption": "is shinier"})
    (root / "relative_captions_shoes.json").write_text(json.dumps(records))
    (root / "eval_im_names.txt").write_text((root / "eval_im_names.txt").read_text() + "\n  \n")  # blank lines
    ev, train = load_shoes(root, "eval"), load_shoes(root, "train")
    assert Triplet(train_name, ("is shinier",), eval_name) in ev.triplets
    assert len(ev.triplets) == 25 and len(train.triplets) == 12
    assert train_name in ev.images and train_name not in ev.gallery  # the reference is found, not searched


def _break(root: Path, what: str) -> None:
    caps = root / "captions/cap.dress.val.json"
    records = json.loads(caps.read_text())
    if what == "bad json":
        caps.write_text(caps.read_text()[:-5])
    elif what == "no target":
        del records[3]["target"]
        caps.write_text(json.dumps(records))
    elif what == "captions not a list":
        records[0]["captions"] = "is blue"
        caps.write_text(json.dumps(records))
    elif what == "empty":
        caps.write_text("[]")
    elif what == "not a list":
        caps.write_text('{"candidate": "x"}')
    elif what == "no split file":
        (root / "image_splits/split.dress.val.json").unlink()


@pytest.mark.parametrize("what, fragments", [
    ("bad json", ["cap.dress.val.json", "not valid JSON"]),
    ("no target", ["cap.dress.val.json: entry 3", "missing \"target\""]),
    ("captions not a list", ["entry 0", "\"captions\" must be a list"]),
    ("empty", ["cap.dress.val.json", "empty split"]),
    ("not a list", ["expected a JSON list", "found a dict"]),
    ("no split file", ["split.dress.val.json: no such file"]),
])
def test_fashioniq_errors(fiq_root, tmp_path, what, fragments):
    root = _copy(fiq_root, tmp_path)
    _break(root, what)
    with pytest.raises(HslDemoError) as e:
        load_fashioniq(root, "val")
    message = str(e.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_dataset_errors(fiq_root, shoes_root, tmp_path):
    with pytest.raises(HslDemoError, match="no such folder .*Fashion-IQ root holds captions/"):
        load_fashioniq(tmp_path / "nowhere", "val")
    with pytest.raises(HslDemoError, match="no split 'eval'"):
        load_fashioniq(fiq_root, "eval")
    with pytest.raises(HslDemoError, match="cap.coat.val.json: no such file"):
        load_fashioniq(fiq_root, "val", categories=("coat",))
    with pytest.raises(HslDemoError, match="targets of this split are not public"):
        load_composed_dataset("fashioniq", fiq_root, "test")
    with pytest.raises(HslDemoError, match="no split 'dev'"):
        load_shoes(shoes_root, "dev")
    root = _copy(shoes_root, tmp_path)
    records = json.loads((root / "relative_captions_shoes.json").read_text())
    del records[5]["RelativeCaption"]
    (root / "relative_captions_shoes.json").write_text(json.dumps(records))
    with pytest.raises(HslDemoError, match=r"entry 5: missing \"RelativeCaption\""):
        load_shoes(root, "eval")
    del records[5]
    (root / "relative_captions_shoes.json").write_text(json.dumps(records))
    next((root / "images").rglob("img_womens_sneakers_3.jpg")).unlink()  # costs only its queries
    split = load_shoes(root, "eval")
    assert split.missing == ["img_womens_sneakers_3.jpg"] and "img_womens_sneakers_3.jpg" not in split.gallery
    assert split.dropped == 3 and len(split.triplets) == 23 - 3  # its 4 queries but the one deleted above
    (root / "eval_im_names.txt").write_text("\n")
    with pytest.raises(HslDemoError, match="eval_im_names.txt: empty split"):
        load_shoes(root, "eval")


# ---- evaluation with the shipped demo model --------------------------------------------------

def test_fashioniq_evaluation(demo_backbone, trained_head, fiq_root):
    result = evaluate_composed_dataset(demo_backbone, trained_head, "fashioniq", fiq_root, progress=False)
    assert (result["dataset"], result["split"], result["ks"]) == ("fashioniq", "val", [10, 50])
    per = result["categories"]
    assert list(per) == list(FASHIONIQ_CATEGORIES)
    for m in per.values():
        assert m["queries"] == 2 * GRID and m["gallery"] == GRID
        assert {"R@10", "R@50"} <= set(m)  # the published cut-offs (the 12-image gallery says nothing about R@50)
        assert 0.0 < m["mean_w_text"] < 1.0
    assert result["average"]["R@10"] == pytest.approx(sum(m["R@10"] for m in per.values()) / 3)
    assert result["average"]["queries"] == 3 * 2 * GRID


def test_variants_on_shoes(demo_backbone, trained_head, shoes_root):
    split = load_shoes(shoes_root, "eval")
    encoded = encode_composed_split(demo_backbone, split, batch_size=5, progress=False)
    ks = (1, 3, 12)
    untrained = ComposedHead(embed_dim=demo_backbone.embed_dim)
    by = {v: score_composed_split(untrained, split, encoded, Protocol(ks), v).to_dict()
          for v in ("adaptive", "sum", "image", "text")}
    assert by["adaptive"] == by["sum"] and by["sum"]["mean_w_text"] == 0.5  # untrained = equal-weight sum
    assert by["image"]["mean_w_text"] == 0.0 and by["text"]["mean_w_text"] == 1.0
    assert by["image"]["R@1"] == 0.0  # the reference stays in the gallery and is its own best match
    assert all(m["R@12"] == 100.0 for m in by.values())  # the whole gallery
    trained = score_composed_split(trained_head, split, encoded, Protocol(ks), "adaptive").to_dict()
    chance = 100 / len(split.gallery)
    assert trained["R@1"] >= max(60, by["sum"]["R@1"]) > 3 * chance, (trained, by)  # 92 and 42 measured


def test_text_alone_finds_the_colour(demo_backbone, fiq_root):
    """'is blue' alone ranks the blue item first among one plain item per colour."""
    hits = queries = 0
    for cat in load_fashioniq(fiq_root, "val"):
        plain = {c: cat.gallery[i * len(FIXTURE_PATTERNS)] for i, c in enumerate(FIXTURE_COLORS)}
        triplets = [Triplet(cat.gallery[-1], (f"is {c}", f"{c} in color"), plain[c]) for c in FIXTURE_COLORS]
        split = ComposedSplit(cat.name, cat.images, list(plain.values()), triplets)
        m = evaluate_composed_split(demo_backbone, ComposedHead(embed_dim=demo_backbone.embed_dim), split, (1,),
                                    variant="text")
        hits, queries = hits + m["R@1"] / 100 * m["queries"], queries + m["queries"]
    assert hits / queries >= 0.75, (hits, queries)  # chance: 0.25


def test_empty_text_is_an_image_query(demo_backbone, trained_head, shoes_root):
    split = load_shoes(shoes_root, "eval")
    split.triplets = [Triplet(t.reference, (" . ",), t.target) for t in split.triplets]
    m = evaluate_composed_split(demo_backbone, trained_head, split, (1,))
    assert m["mean_w_text"] == 0.0 and m["R@1"] == 0.0


# ---- CLI -------------------------------------------------------------------------------------

def test_cli_dataset_json(shoes_root):
    proc = run_cli("--device", "cpu", "evaluate", "--dataset", "shoes", "--data-root", str(shoes_root), "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert {"dataset", "split", "ks", "variant", "categories", "average", "published"} <= set(out)
    assert out["ks"] == [1, 10, 50] and out["split"] == "eval" and list(out["categories"]) == ["shoes"]
    assert out["published"] == {"source": PUBLISHED_COMPOSED["source"], "R@1": 19.53, "R@10": 55.65,
                                "R@50": 80.58}


def test_cli_dataset_ablation_table(fiq_root):
    proc = run_cli("--device", "cpu", "evaluate", "--dataset", "fashioniq", "--data-root", str(fiq_root),
                   "--ablation")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for variant in ("adaptive", "sum", "image", "text"):
        assert sum(ln.startswith(f"| {variant} | ") for ln in lines) == 4  # 3 categories + the average
    assert "| published (seed paper, CLIP-B, real data) | average | 34.53 | 59.13 |" in proc.stdout


def test_cli_dataset_errors(tmp_path):
    assert_clean_error(run_cli("evaluate", "--dataset", "shoes", "--data-root", str(tmp_path / "none")),
                       "no such folder", "Shoes root")
    assert_clean_error(run_cli("evaluate"), "exactly one of --queries", "--dataset")
    assert_clean_error(run_cli("evaluate", "--dataset", "fashioniq"), "--data-root")
