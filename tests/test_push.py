"""`hsl-demo push`: what would be published, offline (HfApi replaced by a recorder)."""

import json
import shutil
from pathlib import Path

import pytest

from hsl_demo import cli
from hsl_demo import model_folder as hub
from hsl_demo.errors import HslDemoError


class FakeApi:
    """Records create_repo / upload_folder calls and what the uploaded folder held."""

    calls: list = []

    def __init__(self, token=None, **kwargs):
        self.token = token

    def create_repo(self, repo_id, **kwargs):
        FakeApi.calls.append(("create_repo", repo_id, kwargs))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        folder = Path(folder_path)
        files = {str(p.relative_to(folder)): p.read_text() if p.suffix in (".md", ".json") else p.read_bytes()
                 for p in folder.rglob("*") if p.is_file()}
        FakeApi.calls.append(("upload_folder", repo_id, {**kwargs, "files": files}))


@pytest.fixture
def fake_hub(monkeypatch):
    import huggingface_hub

    FakeApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # belt and braces: nothing may reach the network
    return FakeApi


def model_folder(root: Path, readme: bool = False) -> Path:
    folder = root / "model"
    (folder / "hsl").mkdir(parents=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": {
        "embed_dim": 128, "vision_cfg": {"image_size": 80, "patch_size": 10, "layers": 3, "width": 128},
        "text_cfg": {"context_length": 24, "layers": 3, "width": 128}}}))
    (folder / "open_clip_model.safetensors").write_bytes(b"weights")
    (folder / "hsl" / "config.json").write_text(json.dumps({"levels": 2, "dim": 128}))
    (folder / "hsl" / "model.safetensors").write_bytes(b"head")
    (folder / "hsl" / "README.md").write_text("# HSL head")
    for junk in ("pytorch_model.bin", "hsl/optimizer.pt", "train.log", "notes.txt"):
        (folder / junk).write_bytes(b"never published")
    if readme:
        (folder / "README.md").write_text("# my own card")
    return folder


def test_push_uploads_only_configs_weights_and_cards_with_a_generated_card(tmp_path, fake_hub):
    folder = model_folder(tmp_path)
    pushed = hub.push_model(folder, "acme/tiny-demo", private=True, token="hf_x")
    (create, repo, create_kwargs), (upload, repo2, upload_kwargs) = fake_hub.calls
    assert (create, repo, upload, repo2) == ("create_repo", "acme/tiny-demo", "upload_folder", "acme/tiny-demo")
    assert create_kwargs["private"] is True and create_kwargs["exist_ok"] is True
    files = upload_kwargs["files"]
    assert sorted(files) == ["README.md", "hsl/README.md", "hsl/config.json", "hsl/model.safetensors",
                             "open_clip_config.json", "open_clip_model.safetensors"]
    card = files["README.md"]
    assert card.startswith("---\n") and "hsl-demo" in card
    assert "embed dim 128" in card and "80 px" in card
    assert "`hsl/`" in card and "HSL re-ranking head" in card and "levels 2" in card
    assert "HSL_DEMO_MODEL=acme/tiny-demo" in card
    assert pushed["card_generated"] and pushed["url"] == "https://huggingface.co/acme/tiny-demo"
    assert not (folder / "README.md").exists()  # the card went into a temporary copy only


def test_push_keeps_an_existing_card(tmp_path, fake_hub):
    folder = model_folder(tmp_path, readme=True)
    pushed = hub.push_model(folder, "acme/tiny-demo")
    files = fake_hub.calls[1][2]["files"]
    assert files["README.md"] == "# my own card" and not pushed["card_generated"]
    assert fake_hub.calls[0][2]["private"] is False


def test_push_command_prints_what_it_published(tmp_path, fake_hub, capsys):
    folder = model_folder(tmp_path)
    assert cli.main(["push", str(folder), "--repo", "acme/tiny-demo", "--private"]) == 0
    out = capsys.readouterr().out
    assert "pushed 6 files to https://huggingface.co/acme/tiny-demo (model card generated)" in out
    assert "open_clip_model.safetensors" in out and "pytorch_model.bin" not in out


@pytest.mark.parametrize("setup, repo, message", [
    ("missing", "acme/x", "no such folder"),
    ("empty", "acme/x", "no open_clip_config.json"),
    ("ok", "not a repo id", "not a Hugging Face repo id"),
])
def test_push_refuses_bad_input_with_one_line(tmp_path, fake_hub, capsys, setup, repo, message):
    folder = tmp_path / "model"
    if setup == "empty":
        folder.mkdir()
    elif setup == "ok":
        folder = model_folder(tmp_path)
    assert cli.main(["push", str(folder), "--repo", repo]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hsl-demo: error: ") and message in err[0]
    assert fake_hub.calls == []


def test_a_failed_upload_is_one_line(tmp_path, fake_hub, monkeypatch):
    def refuse(self, repo_id, **kwargs):
        raise OSError("401 Client Error: Unauthorized\nmore detail")

    monkeypatch.setattr(FakeApi, "create_repo", refuse)
    with pytest.raises(HslDemoError, match=r"push to 'acme/x' failed \(OSError: 401 Client Error: Unauthorized\)$"):
        hub.push_model(model_folder(tmp_path), "acme/x")


def test_push_follows_symlinks_of_a_hub_cache_snapshot(tmp_path, fake_hub):
    source = model_folder(tmp_path)
    # how huggingface_hub lays out a downloaded model: snapshot files are links into blobs/
    repo = tmp_path / "models--acme--model"
    snapshot, blobs = repo / "snapshots" / ("0" * 40), repo / "blobs"
    blobs.mkdir(parents=True)
    for n, path in enumerate(p for p in sorted(source.rglob("*")) if p.is_file()):
        blob = blobs / f"{n:064x}"
        shutil.copy(path, blob)
        link = snapshot / path.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(blob)
    (tmp_path / "elsewhere.json").write_text("{}")
    (snapshot / "elsewhere.json").symlink_to(tmp_path / "elsewhere.json")  # out of the cache: never sent
    hub.push_model(snapshot, "acme/from-cache")
    files = fake_hub.calls[-1][2]["files"]
    assert files["open_clip_model.safetensors"] == b"weights" and files["hsl/model.safetensors"] == b"head"
    assert "elsewhere.json" not in files
