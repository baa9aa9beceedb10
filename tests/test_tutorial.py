"""The README's "Your catalog, your Space" tutorial, run line by line as written, offline: a tiny
random open_clip model in the Hugging Face cache stands in for the Hub backbone, the catalog
is a plain folder of photos with a JSONL of captions and boxes, `push` goes to a recording
HfApi whose upload is then served from the cache as the Space would, and the served app
answers every tab through gradio_client."""

from __future__ import annotations

import functools
import json
import random
import re
import shlex
import shutil
from pathlib import Path

import pytest
from conftest import REPO, run_cli

from hsl_demo.data.attributes import Attributes
from hsl_demo.data.demo import render_look, render_product

COMMIT = "0123456789abcdef0123456789abcdef01234567"
COMBOS = [Attributes(c, col, p) for c in ("t-shirt", "scarf", "sneaker", "handbag") for col in ("red", "blue", "white")
          for p in ("plain", "striped")]


def tutorial_lines() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = re.search(r"<!-- tutorial:.*?-->\s*```bash\n(.*?)```\s*<!-- /tutorial -->", text, re.S)
    assert block, "the README's tutorial block is missing"
    return [line for line in block.group(1).splitlines() if line.strip()]


def populate_cache(cache: Path, repo_id: str, folder: Path) -> None:
    """`folder` laid out as the Hub cache holds a download of `repo_id` (files under a snapshot)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.rmtree(repo, ignore_errors=True)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    shutil.copytree(folder, repo / "snapshots" / COMMIT)


def write_shop(root: Path) -> None:
    """my-shop/photos: product photos with captions and attributes, flat-lays with captioned
    boxes; my-shop/photos.jsonl; my-shop/queries.jsonl (the team's own test queries)."""
    rng = random.Random(11)
    (root / "photos").mkdir(parents=True)
    records, queries = [], []
    for i, a in enumerate(COMBOS * 3):
        render_product(a, rng).save(root / "photos" / f"{i:04d}.jpg")
        text = f"{a.color} {'' if a.pattern == 'plain' else a.pattern + ' '}{a.category}"
        records.append({"image": f"{i:04d}.jpg", "id": f"sku-{i:04d}", "title": text.capitalize(),
                        "captions": [f"a {text}"], "category": a.category, "color": a.color, "pattern": a.pattern})
    for i in range(30):
        items: list[Attributes] = []
        while len(items) < 3:
            a = rng.choice(COMBOS)
            if a.category not in {b.category for b in items}:
                items.append(a)
        image, boxes = render_look(items, rng)
        image.save(root / "photos" / f"look-{i:02d}.png")
        records.append({"image": f"look-{i:02d}.png", "id": f"look-{i:02d}",
                        "items": [{"box": list(b), "caption": f"a {a.color} {a.category}"}
                                  for a, b in zip(items, boxes)]})
    (root / "photos.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    for r in records[:12]:
        same = [s["id"] for s in records if s.get("captions") == r["captions"]]
        queries.append({"text": r["captions"][0], "targets": same})
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))


class RecordingApi:
    """HfApi's create_repo / upload_folder, keeping a copy of what was uploaded."""

    uploads: dict[str, Path] = {}
    store: Path

    def __init__(self, token=None, **kwargs):
        pass

    def create_repo(self, repo_id, **kwargs):
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        copy = RecordingApi.store / repo_id.replace("/", "--")
        shutil.copytree(folder_path, copy)
        RecordingApi.uploads[repo_id] = copy


@pytest.mark.slow
def test_the_readme_tutorial_runs_as_written(tmp_path, monkeypatch, tiny_backbone):
    import huggingface_hub
    from gradio_client import Client

    from hsl_demo import training, ui
    from hsl_demo.backbone import model_config, save_backbone

    monkeypatch.chdir(tmp_path)
    hub_id = next(a for a in shlex.split(tutorial_lines()[0]) if "/" in a and a.startswith("laion"))
    save_backbone(tiny_backbone.model, model_config("hsl-demo-tiny"), tmp_path / "hub-model")
    populate_cache(tmp_path / "hub-cache", hub_id, tmp_path / "hub-model")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # nothing may reach the network
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    RecordingApi.uploads, RecordingApi.store = {}, tmp_path / "uploads"
    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    # the tutorial's commands with their default settings, but a few training steps each
    for name, steps in (("HSLTrainConfig", 20), ("ComposedTrainConfig", 20), ("HMRNTrainConfig", 4)):
        monkeypatch.setattr(training, name, functools.partial(getattr(training, name), steps=steps, batch_size=16,
                                                              warmup=2, eval_every=steps // 2))
    served = {}

    def serve_in_background(models, looks=None, concurrency=4, charts="native", block=True, **launch):
        demo = real_serve(models, looks, concurrency, charts, block=False, server_name="127.0.0.1", quiet=True)
        demo.block_thread = lambda: None  # `hsl-demo serve` returns once the model is loaded: the test goes on
        served.update(models=models, demo=demo)
        return demo

    real_serve = ui.serve
    monkeypatch.setattr(ui, "serve", serve_in_background)
    write_shop(tmp_path / "my-shop")

    for line in tutorial_lines():
        args = shlex.split(line)
        if args[:2] == ["python", "app.py"]:
            repo = args[args.index("--model") + 1]
            populate_cache(tmp_path / "hub-cache", repo, RecordingApi.uploads[repo])  # the Space downloads it
            from hsl_demo import cli

            assert cli.main(["serve", *args[2:]]) in (0, None)
            continue
        assert args[0] == "hsl-demo", line
        proc = run_cli(*args[1:])
        assert proc.returncode == 0, (line, proc.stderr)

    model = tmp_path / "my-shop" / "model"
    for head in ("hsl", "composed", "hmrn"):
        info = json.loads((model / head / "training.json").read_text())
        assert info["trained_by"] == f"hsl-demo train {head} --catalog"
        assert info["catalog"]["name"] == "catalog" and len(info["catalog"]["fingerprint"]) == 16
        table = info["evaluation"]
        # the kept weights: a step's, or the untrained head's when none beat it (a random backbone)
        assert set(table["untrained"]) == {"R@1", "R@10", "score"} and table["trained"]["step"] >= 0, head
        assert "| untrained |" in (model / head / "README.md").read_text()
    # the Hub backbone's files were copied: the folder loads on its own, with the three heads
    assert json.loads((model / "model_index.json").read_text())["heads"].keys() == {"hsl", "composed", "hmrn"}
    assert (model / "open_clip_model.safetensors").is_file()
    card = RecordingApi.uploads["my-org/my-shop-search"].joinpath("README.md").read_text()
    assert card.count("trained on catalog `catalog`") == 3
    try:
        client = Client(served["demo"].local_url, verbose=False)
        gallery, _, why, _ = client.predict("a blue striped scarf", 3, api_name="/describe")
        assert len(gallery) == 3
        levels = [h for h in why["headers"] if h.startswith("level")]
        weights = [float(cell.split(" × ")[1]) for row in why["data"] for cell in
                   (row[why["headers"].index(h)] for h in levels)]
        # the HSL levels count when a trained step was kept; an untrained head's are zero (global cosine)
        hsl_step = json.loads((model / "hsl" / "training.json").read_text())["evaluation"]["trained"]["step"]
        assert any(abs(w) > 1e-4 for w in weights) == (hsl_step > 0), (hsl_step, why)
        gallery, _, _ = client.predict(None, "sku-0003", "change the color to white", 3, api_name="/modify")
        assert len(gallery) == 3
        gallery, rounds, *_ = client.predict("a red handbag", api_name="/drill_add")
        assert len(gallery) > 0 and "1. a red handbag" in rounds
        # the same served retrievers: image and text both count in Modify, reasoning in Drill down
        products, looks = served["models"].retrievers
        composed = products.search_composed("sku-0003", "change the color to white", k=1).results[0]
        b = composed.breakdown
        assert min(b.w_image * b.image_similarity, b.w_text * b.text_similarity) != 0
        drill = looks.session(k=1).add("a red handbag").results[0].breakdown
        assert drill.reasoning.weight > 0 and drill.reasoning.similarity != 0
        # the page's footer (filled in once the model is loaded) says what each head was trained on
        about = ui.footer(served["models"])
        assert about.count("trained on catalog catalog") == 3 and "my-org/my-shop-search" in about
    finally:
        served["demo"].close()
