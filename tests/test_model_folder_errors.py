"""Model folders an operator may load from anywhere (`--model org/name`): every broken file is a
one-line error, and a config that asks for more parameters than the limit is refused before
anything is built (torch's "meta" device counts them without allocating)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import REPO, assert_clean_error, run_cli

DEMO = REPO / "checkpoints" / "demo"


def _json(name: str, change: Callable[[object], object]) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        path = folder / name
        path.write_text(json.dumps(change(json.loads(path.read_text()))))
    return edit


def _write(name: str, data: bytes | str) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        path = folder / name
        path.write_bytes(data) if isinstance(data, bytes) else path.write_text(data)
    return edit


def _vision(**values) -> Callable[[Path], None]:
    return _json("open_clip_config.json", lambda c: {**c, "model_cfg": {**c["model_cfg"], "vision_cfg": {
        **c["model_cfg"]["vision_cfg"], **values}}})


DEEP = "[" * 100_000 + "]" * 100_000
CASES = {
    "garbage backbone weights": (_write("open_clip_model.safetensors", b"garbage" * 10), "could not load the backbone"),
    "empty backbone weights": (_write("open_clip_model.safetensors", b""), "could not load the backbone"),
    "over-large safetensors header": (_write("open_clip_model.safetensors", (2**62).to_bytes(8, "little") + b"{}"),
                                      "could not load the backbone"),
    "garbage HSL weights": (_write("hsl/model.safetensors", b"garbage"), "could not load the HSLHead"),
    "unknown key in vision_cfg": (_vision(bogus=1), "not a config open_clip can build"),
    "unknown key in model_cfg": (_json("open_clip_config.json", lambda c: {**c, "model_cfg": {**c["model_cfg"],
                                                                                              "bogus": 1}}),
                                 "not a config open_clip can build"),
    "vision_cfg a string": (_json("open_clip_config.json", lambda c: {**c, "model_cfg": {**c["model_cfg"],
                                                                                         "vision_cfg": "x"}}),
                            '"vision_cfg" must be a JSON object'),
    "config nested 100,000 deep": (_write("open_clip_config.json", DEEP), "nested too deeply"),
    "model index nested 100,000 deep": (_write("model_index.json", DEEP), "not a valid model index"),
    "HSL config a list": (_write("hsl/config.json", "[1]"), "not a JSON object of the head's settings"),
    "a 150 GB backbone": (_vision(width=8192, layers=48), "parameters (limit 4,000,000,000"),
    "an HSL head of a million levels": (_json("hsl/config.json", lambda c: {**c, "levels": 1_000_000}),
                                        "levels = 1,000,000 is beyond any head"),
    "an HSL head 4,096 wide": (_json("hsl/config.json", lambda c: {**c, "dim": 4096, "levels": 64}),
                               "parameters (limit 4,000,000,000"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_a_broken_model_folder_is_one_line(case, tmp_path):
    edit, message = CASES[case]
    folder = tmp_path / "model"
    shutil.copytree(DEMO, folder)
    edit(folder)
    assert_clean_error(run_cli("search", "--model", str(folder), "--text", "red cap"), message)


def test_the_size_limit_is_a_flag(tmp_path):
    assert_clean_error(run_cli("--max-params", "1000", "search", "--text", "red cap"),
                       "parameters (limit 1,000; raise it with --max-params")


def test_a_broken_vocabulary_only_silences_the_unknown_words_notice(tmp_path):
    for content in (json.dumps({"words": 5}), DEEP):
        folder = tmp_path / "model"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(DEMO, folder)
        (folder / "vocabulary.json").write_text(content)
        proc = run_cli("search", "--model", str(folder), "--text", "red cap", "-k", "1")
        assert proc.returncode == 0 and "not a vocabulary file" in proc.stderr, proc.stderr


def test_push_refuses_a_config_without_model_cfg_and_never_follows_links_out(tmp_path):
    from hsl_demo.model_folder import publishable_files, push_model

    folder = tmp_path / "model"
    shutil.copytree(DEMO, folder)
    (tmp_path / "secret.json").write_text('{"token": "hf_secret"}')
    (folder / "leak.json").symlink_to(tmp_path / "secret.json")
    assert Path("leak.json") not in publishable_files(folder)
    _json("open_clip_config.json", lambda c: {**c, "model_cfg": []})(folder)

    class NoHub:  # nothing may be sent: the card is made before any upload
        def create_repo(self, *a, **k):
            raise AssertionError("contacted the Hub")

    from hsl_demo.errors import HslDemoError

    with pytest.raises(HslDemoError, match='no "model_cfg" object'):
        push_model(folder, "me/model", api=NoHub())
    proc = run_cli("push", str(folder), "--repo", "me/model", "--token", "hf_abc")
    assert "shows in the process list" in proc.stderr and "hf_abc" not in proc.stderr


def test_random_weights_say_why_they_never_match(tmp_path):
    from hsl_demo.catalog import Catalog
    from hsl_demo.errors import HslDemoError
    from hsl_demo.hub import load_backbone
    from hsl_demo.indexing import build_catalog

    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(REPO / "assets/demo/products/images/p00000.jpg", images / "a.jpg")
    build_catalog(images, tmp_path / "catalog", load_backbone("hsl-demo-tiny"), progress=False)
    with pytest.raises(HslDemoError, match="every load draws new ones"):
        Catalog.open(tmp_path / "catalog").check_model(load_backbone("hsl-demo-tiny"))
