"""Shared fixtures: small rendered catalogs, a random tiny backbone, the shipped demo model."""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from hsl_demo import indexing
from hsl_demo.data.attributes import Attributes, title
from hsl_demo.data.demo import render_product
from hsl_demo.hub import load_backbone

ENCODE_IMAGES = indexing.mapper.encode_images  # the real one, whatever a test patched in

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_backbone():
    """The demo architecture with random weights: fast, and enough to test plumbing."""

    return load_backbone("hsl-demo-tiny", device="cpu")


@pytest.fixture(scope="session")
def demo_backbone():

    return load_backbone(device="cpu")


@pytest.fixture(scope="session")
def vit_b32_random():
    """open_clip's ViT-B-32 with random weights (no pretrained tag): a real architecture's shapes,
    built once (a few seconds)."""
    return load_backbone("ViT-B-32", device="cpu")


@pytest.fixture(scope="session")
def products_untrained(demo_backbone):
    """The embedded backbone over the demo products, no trained head (each mode's untrained
    stand-in: Describe ranks by the global cosine, Modify by the equal-weight sum)."""
    from hsl_demo.catalog import Catalog
    from hsl_demo.search import Retriever

    return Retriever(demo_backbone, Catalog.open("products"))


@pytest.fixture(scope="session")
def products_all_heads(demo_backbone):
    """The embedded model with all its trained heads over the demo products (what the app serves)."""
    from hsl_demo.catalog import Catalog
    from hsl_demo.search import Retriever, load_heads

    return Retriever(demo_backbone, Catalog.open("products"), heads=load_heads(demo_backbone))


@pytest.fixture(scope="session")
def looks_all_heads(demo_backbone):
    """The embedded model with all its trained heads over the demo looks."""
    from hsl_demo.catalog import Catalog
    from hsl_demo.search import Retriever, load_heads

    return Retriever(demo_backbone, Catalog.open("looks"), heads=load_heads(demo_backbone))


SMALL_CATALOG = [
    Attributes("scarf", "green", "dotted"),
    Attributes("scarf", "red", "striped"),
    Attributes("t-shirt", "red", "striped"),
    Attributes("t-shirt", "blue", "plain"),
    Attributes("sneaker", "white", "plain"),
    Attributes("handbag", "black", "checked"),
]


@pytest.fixture(scope="session")
def small_images(tmp_path_factory) -> Path:
    """A folder of 12 product photos (two per combination, one in a subfolder) + metadata.jsonl."""
    root = tmp_path_factory.mktemp("small")
    images = root / "images"
    (images / "sub").mkdir(parents=True)
    rng = random.Random(3)
    records = []
    for i, attrs in enumerate(SMALL_CATALOG * 2):
        rel = f"sub/item{i:02d}.png" if i == 0 else f"item{i:02d}.jpg"
        render_product(attrs, rng).save(images / rel)
        records.append({"id": f"s{i:02d}", "image": rel, "title": title(attrs), "category": attrs.category,
                        "color": attrs.color, "pattern": attrs.pattern})
    with open(root / "metadata.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return root


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """`hsl-demo serve` sets one torch thread for its whole (server) process; a test that runs
    it in this process must not change the threads of the tests after it."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def launch_demo(backbone, **serve_kwargs):
    """The app as app.py builds it (one backbone, a products and a looks Retriever), served
    over real HTTP on 127.0.0.1 in this process: (demo, products, looks). Close it after."""
    from hsl_demo.catalog import Catalog
    from hsl_demo.search import Retriever, load_heads
    from hsl_demo.ui import serve

    heads = load_heads(backbone)
    products = Retriever(backbone, Catalog.open("products"), **heads)
    looks = Retriever(backbone, Catalog.open("looks"), **heads)
    demo = serve(products, looks, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, **serve_kwargs)
    return demo, products, looks


@pytest.fixture(scope="session")
def served_demo(demo_backbone):
    """The app as app.py serves it (the embedded model, products and looks), over real HTTP on
    127.0.0.1 in this process, once for every test that reads it: (demo, products, looks)."""
    demo, products, looks = launch_demo(demo_backbone)
    yield demo, products, looks
    demo.close()


def run_cli(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """`hsl-demo ARGS` as a user runs it: its exit status, stdout and stderr. In this process
    (`cli.main`), which skips 5 s of imports a call; with `env` (read at import time by some
    libraries, e.g. HF_HUB_OFFLINE) in a subprocess, as `run_cli_subprocess` does."""
    if env:
        return run_cli_subprocess(*args, env=env, timeout=timeout)
    from hsl_demo import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(list(args))
        except SystemExit as e:  # argparse: usage errors exit 2, --help exits 0
            code = e.code if isinstance(e.code, int) else 1
    return subprocess.CompletedProcess(["hsl-demo", *args], code, out.getvalue(), err.getvalue())


def run_cli_subprocess(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m hsl_demo ARGS` in a subprocess: the smoke tests of the real command."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "hsl_demo", *args], capture_output=True, text=True,
                          env=full_env, cwd=REPO, timeout=timeout)


def assert_clean_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit status 2, one line on stderr naming the problem, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.strip().splitlines() if not ln.startswith("hsl-demo: warning")]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("hsl-demo: error: ")
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def counting_shards(monkeypatch, stop_after: int | None = None,
                    error: type[BaseException] = KeyboardInterrupt) -> list[int]:
    """Count the images of each shard `hsl-demo index` encodes (in this process); raise `error`
    (a crash, a kill, Ctrl-C) instead of encoding shard `stop_after` + 1. Called again, it
    counts afresh."""
    calls: list[int] = []

    def encode(source, shard, *args, **kwargs):
        if stop_after is not None and len(calls) == stop_after:
            raise error
        calls.append(shard["count"])
        return ENCODE_IMAGES(source, shard, *args, **kwargs)

    monkeypatch.setattr(indexing.mapper, "encode_images", encode)
    return calls
