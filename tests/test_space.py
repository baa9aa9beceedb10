"""`hsl-demo space`: the README front matter, the Space folder run from its own folder, the upload
against a fake HfApi, ZeroGPU wrapping and the device setting, the MCP tool list."""

from __future__ import annotations

import importlib.machinery
import os
import socket
import subprocess
import sys
import time
import tomllib
import types
from pathlib import Path

import pytest
from conftest import REPO, assert_clean_error, run_cli

from hsl_demo import gpu, space
from hsl_demo.errors import HslDemoError

TOKEN = "hf_TestTokenThatMustNeverBePrinted123"


def pinned_gradio() -> str:
    return space.pinned_gradio((REPO / "requirements.txt").read_text())


def assert_valid_space_readme(text: str) -> dict:
    from packaging.specifiers import SpecifierSet

    meta = space.front_matter(text)
    assert space.front_matter_problems(meta, pinned_gradio()) == []
    assert {"title", "sdk", "sdk_version", "python_version", "app_file", "short_description"} <= set(meta)
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py"
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert f"{meta['python_version']}.0" in SpecifierSet(requires)  # the Space's Python is one the pins allow
    return meta


def test_this_readme_front_matter_is_what_the_hub_documents():
    assert_valid_space_readme((REPO / "README.md").read_text(encoding="utf-8"))


@pytest.mark.parametrize("change, problem", [
    ({"short_description": "Product image search three ways (describe, modify, drill down), explained"},
     "short_description is 73 characters"),
    ({"colorFrom": "orange"}, "colorFrom 'orange'"),
    ({"python_version": 3.1}, "python_version must be a string"),
    ({"sdk_version": "5.0.0"}, "not the pinned gradio"),
    ({"hardware": "t4-small"}, "unknown key 'hardware'"),
    ({"models": ["not a repo id"]}, "models must name Hub repos"),
])
def test_front_matter_problems_are_found(change, problem):
    meta = space.front_matter((REPO / "README.md").read_text(encoding="utf-8")) | change
    problems = space.front_matter_problems(meta, pinned_gradio())
    assert any(problem in p for p in problems), problems


@pytest.fixture(scope="module")
def space_folder(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("space") / "shop"
    proc = run_cli("space", "acme/shop", "--dry-run", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "nothing uploaded" in proc.stdout
    return out


def test_dry_run_writes_a_complete_space_folder(space_folder):
    from hsl_demo.catalog import Catalog

    meta = assert_valid_space_readme((space_folder / "README.md").read_text(encoding="utf-8"))
    assert meta["title"] == "shop" and "models" not in meta  # the model travels as files, not as a Hub id
    assert (space_folder / "requirements.txt").read_text() == (REPO / "requirements.txt").read_text()
    assert (space_folder / "hsl_demo" / "cli" / "serve.py").is_file()
    assert (space_folder / "hsl_demo" / "model_configs").is_dir()
    assert (space_folder / "model" / "open_clip_model.safetensors").is_file()
    assert (space_folder / "model" / "hsl" / "model.safetensors").is_file()
    files = [p for p in space_folder.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in (".pyc", ".bin", ".pt") or "__pycache__" in p.parts]
    for name in ("products", "looks"):  # every item's photo, where its relative path points
        catalog = Catalog.open(space_folder / "data" / "catalogs" / name)
        assert all(catalog.image_path(row).is_file() for row in range(len(catalog)))
        assert all(catalog.image_path(row).resolve().is_relative_to(space_folder.resolve())
                   for row in range(0, len(catalog), 97))


def test_dry_run_with_a_hub_model_names_it_and_uploads_no_model(tmp_path):
    proc = run_cli("space", "acme/shop", "--model", "acme/hsl-model", "--dry-run", str(tmp_path / "s"))
    assert proc.returncode == 0, proc.stderr
    meta = assert_valid_space_readme((tmp_path / "s" / "README.md").read_text(encoding="utf-8"))
    assert meta["models"] == ["acme/hsl-model"]
    assert not (tmp_path / "s" / "model").exists()
    assert "'HSL_DEMO_MODEL': 'acme/hsl-model'," in (tmp_path / "s" / "app.py").read_text()


@pytest.mark.parametrize("args, message", [
    (["not-a-space-id"], "not a Space id"),
    (["acme/shop", "--hardware", "quantum-1"], "not a Space hardware"),
    (["acme/shop", "--catalog", "nowhere"], "no such catalog"),
    (["acme/shop", "--model", "./no/such/model"], "no such folder"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "s"
    assert_clean_error(run_cli("space", *args, "--dry-run", str(out)), message)
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == []  # no half-written folder left


def test_dry_run_into_a_folder_with_files_is_refused(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    assert_clean_error(run_cli("space", "acme/shop", "--dry-run", str(tmp_path)), "not empty")
    assert (tmp_path / "mine.txt").read_text() == "keep me"


# ---- the upload, against a fake HfApi ------------------------------------------------------

class FakeHub:
    """Records the HfApi calls of a publish, and checks each uploaded file is one the Hub takes
    through its upload API (a regular file, not a link, not in a hidden or cache folder; binary
    files go through LFS/Xet, which upload_folder chooses for them)."""

    def __init__(self, fail: Exception | None = None):
        self.calls: list[tuple] = []
        self.spaces: set[str] = set()
        self.fail = fail

    def __call__(self, token=None, **kwargs):  # stands in for the HfApi class
        return self

    def create_repo(self, repo_id, **kwargs):
        if self.fail is not None:
            raise self.fail
        self.calls.append(("create_repo", repo_id, kwargs))
        self.spaces.add(repo_id)
        return f"https://huggingface.co/spaces/{repo_id}"

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        folder = Path(folder_path)
        files = {}
        for p in folder.rglob("*"):
            rel = p.relative_to(folder)
            assert not p.is_symlink(), rel
            assert not any(part.startswith(".") or part == "__pycache__" for part in rel.parts), rel
            if p.is_file():
                files[rel.as_posix()] = p.stat().st_size
        self.calls.append(("upload_folder", repo_id, {**kwargs, "files": files,
                                                      "readme": (folder / "README.md").read_text(encoding="utf-8")}))

    def add_space_variable(self, repo_id, key, value, **kwargs):
        self.calls.append(("add_space_variable", repo_id, {"key": key, "value": value}))

    def request_space_hardware(self, repo_id, hardware, **kwargs):
        self.calls.append(("request_space_hardware", repo_id, {"hardware": hardware}))


@pytest.fixture
def fake_hub(monkeypatch):
    import huggingface_hub

    hub = FakeHub()
    monkeypatch.setattr(huggingface_hub, "HfApi", hub)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing may reach the network
    return hub


def test_publish_creates_the_space_uploads_the_folder_and_sets_its_variables(fake_hub):
    for _ in range(2):  # a re-run updates the same Space: no error, the same calls
        proc = run_cli("space", "acme/shop", "--hardware", "zero-a10g", "--private", "--token", TOKEN)
        assert proc.returncode == 0, proc.stderr
        assert "published https://huggingface.co/spaces/acme/shop" in proc.stdout
        assert TOKEN not in proc.stdout + proc.stderr
    names = [c[0] for c in fake_hub.calls]
    assert names == 2 * ["create_repo", "upload_folder", *3 * ["add_space_variable"], "request_space_hardware"]
    create = fake_hub.calls[0][2]
    assert create | {"token": None} == {"repo_type": "space", "space_sdk": "gradio", "private": True, "exist_ok": True,
                                       "token": None}
    upload = fake_hub.calls[1][2]
    assert upload["repo_type"] == "space" and upload["delete_patterns"] == "*"  # the Space holds the folder's files
    assert {"app.py", "requirements.txt", "README.md", "model/open_clip_model.safetensors",
            "data/catalogs/products/index.faiss", "data/demo/products/images/p00000.jpg"} <= set(upload["files"])
    assert_valid_space_readme(upload["readme"])
    variables = {c[2]["key"]: c[2]["value"] for c in fake_hub.calls if c[0] == "add_space_variable"}
    assert variables == {"HSL_DEMO_MODEL": "model", "HSL_DEMO_CATALOG": "data/catalogs/products",
                         "HSL_DEMO_LOOKS_CATALOG": "data/catalogs/looks"}
    assert fake_hub.calls[5][2] == {"hardware": "zero-a10g"}


def test_hub_errors_are_one_line_without_the_token(space_folder):
    import httpx
    from huggingface_hub.errors import HfHubHTTPError

    response = httpx.Response(409, request=httpx.Request("POST", "https://huggingface.co/api/repos/create"))
    failure = HfHubHTTPError(f"409 Conflict: You already created this model repo (token {TOKEN})\nmore lines",
                             response=response)
    folder = space.SpaceFolder(space_folder, "acme/shop", {}, {})
    with pytest.raises(HslDemoError) as e:
        space.publish_space(folder, token=TOKEN, api=FakeHub(fail=failure))
    message = str(e.value)
    assert message.startswith("publishing Space 'acme/shop' failed (HfHubHTTPError: 409 Conflict")
    assert "\n" not in message and TOKEN not in message and "(token ***)" in message
    with pytest.raises(HslDemoError, match="ConnectError: no route"):  # no network
        space.publish_space(folder, token=TOKEN, api=FakeHub(fail=httpx.ConnectError("no route to host")))


def test_no_token_is_one_line(monkeypatch, fake_hub):
    import huggingface_hub

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    assert_clean_error(run_cli("space", "acme/shop"), "no Hugging Face token")
    assert fake_hub.calls == []


# ---- ZeroGPU and the device ----------------------------------------------------------------

def test_device_setting(monkeypatch):
    monkeypatch.delenv(gpu.DEVICE_ENV, raising=False)
    monkeypatch.delenv(gpu.ZERO_GPU_ENV, raising=False)
    assert gpu.device_setting(None) is None  # the backbone's default: cuda when present
    monkeypatch.setenv(gpu.ZERO_GPU_ENV, "true")
    assert gpu.device_setting(None) == "cuda"  # ZeroGPU: loaded to cuda, as its documentation shows
    monkeypatch.setenv(gpu.DEVICE_ENV, "CPU")
    assert gpu.device_setting(None) == "cpu"  # the variable forces it
    assert gpu.device_setting("cuda:1") == "cuda:1"  # and --device wins
    monkeypatch.setenv(gpu.DEVICE_ENV, "tpu")
    with pytest.raises(HslDemoError, match="HSL_DEMO_DEVICE 'tpu': not a device"):
        gpu.device_setting(None)


def test_serve_refuses_a_bad_device_before_serving(monkeypatch):
    assert_clean_error(run_cli("serve", "--device", "gpu0"), "--device 'gpu0': not a device")
    monkeypatch.setenv(gpu.DEVICE_ENV, "metal")
    assert_clean_error(run_cli("serve"), "HSL_DEMO_DEVICE 'metal'")


def test_the_model_running_handlers_run_under_spaces_gpu(monkeypatch):
    """With a `spaces` package (here a fake that records what it wraps), the handlers that run the
    model are its GPU functions; the page's other handlers are not."""
    from hsl_demo.catalog import Catalog
    from hsl_demo.modes.describe.tab import DescribeTab
    from hsl_demo.modes.drill_down.tab import DrillDownTab
    from hsl_demo.modes.modify.tab import ModifyTab
    from hsl_demo.thumbnails import Thumbnails
    from hsl_demo.widgets import ChartRenderer, TabContext

    wrapped = []

    def GPU(fn):  # noqa: N802 (the package's name)
        wrapped.append(fn.__name__)

        def on_gpu(*args, **kwargs):
            return ("on gpu", fn(*args, **kwargs))
        return on_gpu

    fake = types.ModuleType("spaces")
    fake.GPU = GPU
    fake.__spec__ = importlib.machinery.ModuleSpec("spaces", None)
    monkeypatch.setitem(sys.modules, "spaces", fake)
    def context(catalog):
        return TabContext(Catalog.open(catalog), lambda: None, Thumbnails(), ChartRenderer())
    describe, modify, drill = (DescribeTab(context("products")), ModifyTab(context("products")),
                               DrillDownTab(context("looks")))
    assert wrapped == ["describe", "modify", "drill_add", "drill_undo", "run_link_rounds"]
    assert drill.drill_reset(None)[0] == []  # not a GPU function: it runs no model
    assert describe.describe.__name__ == modify.modify.__name__ == "on_gpu"


def test_the_spaces_package_is_a_no_op_off_zero_gpu(monkeypatch):
    spaces = pytest.importorskip("spaces")  # requirements-dev.txt installs it
    monkeypatch.delenv(gpu.ZERO_GPU_ENV, raising=False)

    def search():
        return "ran"
    assert spaces.GPU(search) is search  # its own fallback off ZeroGPU: the function itself
    assert gpu.gpu_task(search) is search


# ---- the Space folder, run as the Space runs it ---------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def space_server(space_folder):
    """`python app.py` in the Space folder, in a fresh process whose only path entry is that
    folder (the interpreter and site-packages are this test's venv: see docs/space.md)."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HSL_DEMO_", "GRADIO_", "PYTHON"))}
    env |= {"PYTHONPATH": str(space_folder), "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
            "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "HSL_DEMO_DEVICE": "cpu"}
    where = subprocess.run([sys.executable, "-c", "import hsl_demo; print(hsl_demo.__file__)"], cwd=space_folder,
                           env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).resolve().is_relative_to(space_folder.resolve()), where  # its own copy of the package
    log = open(space_folder.parent / "server.log", "w+")
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=space_folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    pytest.fail(f"the Space did not start: {log.read()[-3000:]}")
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.mark.slow  # ~9 s on 2 cores: the app's start-up in a fresh process (~4 s), then three searches
def test_the_space_folder_serves_the_three_modes_from_its_own_folder(space_server):
    from gradio_client import Client

    client = Client(space_server, verbose=False)
    gallery = client.predict("green dotted scarf", 5, api_name="/describe")[0]
    assert len(gallery) == 5 and gallery[0]["caption"].startswith("#1 Green dotted"), gallery[0]["caption"]
    gallery = client.predict(None, "p00024", "make it blue and striped", 4, api_name="/modify")[0]
    assert len(gallery) == 4 and "Blue striped" in gallery[0]["caption"], gallery[0]["caption"]
    gallery, rounds = client.predict("a red handbag", api_name="/drill_add")[:2]
    assert gallery and gallery[0]["caption"].startswith("#1 ") and "a red handbag" in rounds


@pytest.mark.slow  # shares the server above
def test_the_space_is_an_mcp_server_with_the_three_searches_as_tools(space_server):
    pytest.importorskip("mcp")  # gradio[mcp], as requirements.txt installs it
    import httpx

    tools = {t["name"]: t for t in httpx.get(space_server + "gradio_api/mcp/schema", timeout=30).json()}
    assert {"describe", "modify", "drill_add"} <= set(tools)
    assert "Search the product catalog with a description" in tools["describe"]["description"]
    arguments = {name: tool["inputSchema"]["properties"] for name, tool in tools.items()}
    assert set(arguments["describe"]) == {"text", "k"} and set(arguments["drill_add"]) == {"text"}
    assert set(arguments["modify"]) == {"image", "ref_id", "text", "k"}
    assert "red striped t-shirt" in arguments["describe"]["text"]["description"]  # the docstrings' Args
    assert "how many results" in arguments["describe"]["k"]["description"]
    assert "catalog id of the reference product" in arguments["modify"]["ref_id"]["description"]
    assert "a red handbag" in arguments["drill_add"]["text"]["description"]
