"""Model folders from the Hugging Face Hub, resolved offline from a pre-populated cache."""

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import REPO, SMALL_CATALOG, assert_clean_error, run_cli

from hsl_demo.backbone import save_backbone
from hsl_demo.hub import is_repo_id
from hsl_demo.model_folder import save_model_head
from hsl_demo.models.hsl import HSLHead

COMMIT = "0123456789abcdef0123456789abcdef01234567"
TINY_CFG = {"embed_dim": 128, "vision_cfg": {"image_size": 80, "layers": 3, "width": 128, "patch_size": 10,
            "head_width": 32}, "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 128,
            "heads": 4, "layers": 3}}


def populate_cache(cache, repo_id: str, folder) -> None:
    """Lay out `folder` as the Hub cache does after a download of `repo_id` at COMMIT."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    shutil.copytree(folder, repo / "snapshots" / COMMIT)


@pytest.fixture(scope="module")
def hub_setup(tmp_path_factory, tiny_backbone, small_images):
    root = tmp_path_factory.mktemp("hub")
    local = root / "local-model"
    save_backbone(tiny_backbone.model, TINY_CFG, local)
    head = HSLHead(embed_dim=128, dim=32)  # a head with weight on every level, as if trained
    with torch.no_grad():
        for p in head.parameters():
            p.add_(0.05 * torch.randn_like(p))
        head.raw_weights.copy_(torch.tensor([0.5, 0.2, 0.3, 0.4, 0.6]))
    save_model_head(head, local / "hsl")
    populate_cache(root / "hub-cache", "acme/tiny-demo", local)
    proc = run_cli("index", str(small_images / "images"), "--out", str(root / "catalog"),
                   "--metadata", str(small_images / "metadata.jsonl"), "--model", str(local))
    assert proc.returncode == 0, proc.stderr
    return root


def offline_env(root) -> dict:
    return {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(root / "hub-cache"), "HF_HOME": str(root / "hf-home")}


def test_repo_ids_are_told_apart_from_paths(tmp_path):
    assert is_repo_id("acme/tiny-demo") and is_repo_id("hf-hub:acme/tiny-demo")
    assert not is_repo_id("checkpoints") and not is_repo_id("./a/b") and not is_repo_id("/abs/path")


@pytest.mark.slow
def test_repo_id_from_offline_cache_scores_like_the_local_folder(hub_setup):
    root = hub_setup
    text = ["--catalog", str(root / "catalog"), "--text", "green dotted scarf", "-k", "5", "--json"]
    local = run_cli("search", "--model", str(root / "local-model"), *text)  # a folder: no Hub, no subprocess
    hub = run_cli("search", "--model", "acme/tiny-demo", *text, env=offline_env(root))
    prefixed = run_cli("search", "--model", "hf-hub:acme/tiny-demo", *text, env=offline_env(root))
    assert local.returncode == hub.returncode == prefixed.returncode == 0, hub.stderr
    a, b, c = json.loads(local.stdout), json.loads(hub.stdout), json.loads(prefixed.stdout)
    assert len(a) == 5
    assert [r["id"] for r in a] == [r["id"] for r in b] == [r["id"] for r in c]
    assert np.allclose([r["score"] for r in a], [r["score"] for r in b], atol=1e-6)
    # the HSL head came along from the Hub snapshot's hsl/ subfolder, and its features were
    # precomputed at index time (no "computing them now" warning)
    assert a[0]["levels"] == b[0]["levels"]
    assert a[0]["levels"]["level2"]["image"]["weight"] == pytest.approx(0.6, abs=1e-3)
    assert "no HSL features precomputed" not in hub.stderr


@pytest.mark.slow
def test_uncached_repo_offline_is_a_clear_error(hub_setup):
    proc = run_cli("search", "--model", "acme/not-downloaded", "--catalog", str(hub_setup / "catalog"),
                   "--text", "cap", env=offline_env(hub_setup))
    assert_clean_error(proc, "acme/not-downloaded", "HF_HUB_OFFLINE")


def test_catalog_from_another_model_is_refused(hub_setup):
    # the catalog was indexed with the tiny random model; the shipped demo model must not read it
    proc = run_cli("search", "--catalog", str(hub_setup / "catalog"), "--text", "cap")
    assert_clean_error(proc, "indexed with model", "re-index")


def test_small_catalog_fixture_has_the_expected_items(hub_setup):
    items = [json.loads(line) for line in (hub_setup / "catalog" / "items.jsonl").read_text().splitlines()]
    assert len(items) == 2 * len(SMALL_CATALOG)


def test_a_head_listed_in_model_index_but_removed_is_skipped_with_a_warning(tmp_path, caplog):
    """As after `cp -r checkpoints/demo X && rm -r X/composed` (before retraining it)."""
    import shutil

    from hsl_demo.model_folder import read_model_index

    shutil.copytree(REPO / "checkpoints" / "demo", tmp_path / "m")
    shutil.rmtree(tmp_path / "m" / "composed")
    assert read_model_index(tmp_path / "m").heads == ["hmrn", "hsl"]
    assert "lists composed, not in the folder" in caplog.text
