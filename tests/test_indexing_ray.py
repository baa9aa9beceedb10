"""`hsl-demo index --engine ray`: Ray Data in local mode, on a few hundred demo photos (a
folder, or Parquet files of their bytes), writes the same catalog as the local engine (same
ids, embeddings to 1e-5), and resumes from the shards another run left."""

import os

import numpy as np
import pytest
from conftest import counting_shards

from hsl_demo import cli, indexing
from hsl_demo.catalog import Catalog
from hsl_demo.defaults import DEFAULT_MODEL_DIR, DEMO_DATA_DIR
from hsl_demo.errors import HslDemoError

if os.environ.get("CI"):  # CI installs the extra: the Ray path must run there, not be skipped
    import ray  # noqa: F401
else:
    pytest.importorskip("ray")
pytestmark = pytest.mark.slow
IMAGES = 240


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    """One local Ray for the module: `--engine ray` joins a running Ray instead of starting its
    own (it shuts down only what it started), so each test does not pay Ray's start-up."""
    import ray

    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """240 demo product photos (links), in two folders."""
    root = tmp_path_factory.mktemp("photos")
    for i, photo in enumerate(sorted((DEMO_DATA_DIR / "products" / "images").iterdir())[:IMAGES]):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(exist_ok=True)
        (folder / photo.name).symlink_to(photo)
    return root


@pytest.fixture(scope="module")
def local(photos, tmp_path_factory) -> Catalog:
    """The local engine's catalog of the photos."""
    out = tmp_path_factory.mktemp("local") / "catalog"
    assert cli.main(["index", str(photos), "--model", str(DEFAULT_MODEL_DIR), "--shard-size", "64",
                     "--out", str(out)]) == 0
    return Catalog.open(out)


def test_the_ray_engine_writes_the_local_engines_catalog_and_resumes_its_shards(photos, local, tmp_path,
                                                                                 monkeypatch, capsys):
    args = [str(photos), "--model", str(DEFAULT_MODEL_DIR), "--shard-size", "64"]

    # a local run interrupted after two shards; the Ray run takes over from them
    counting_shards(monkeypatch, stop_after=2)
    assert cli.main(["index", *args, "--out", str(tmp_path / "ray")]) == 130  # Ctrl-C
    monkeypatch.undo()
    capsys.readouterr()
    assert cli.main(["index", *args, "--out", str(tmp_path / "ray"), "--engine", "ray", "--workers", "1"]) == 0
    assert "resuming: 2 shard(s) of 64 images" in capsys.readouterr().err

    ray = Catalog.open(tmp_path / "ray")
    assert len(ray) == IMAGES and [it["id"] for it in ray.items] == [it["id"] for it in local.items]
    assert np.abs(ray.embeddings - local.embeddings).max() < 1e-5
    assert np.array_equal(np.asarray(ray.regions), np.asarray(local.regions))
    assert np.array_equal(np.asarray(ray.stores["hsl"]["objects"]), np.asarray(local.stores["hsl"]["objects"]))
    assert not (tmp_path / ".ray.shards").exists()


def test_the_ray_engine_reads_parquet_shards_into_the_same_catalog(photos, local, tmp_path, capsys):
    """Parquet files of the same photos' bytes (ids and titles as columns), encoded by Ray
    workers that each read their own row ranges: the local engine's catalog of the folder,
    with the images kept in the catalog."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    files = sorted(p for p in photos.rglob("*.*"))
    data = tmp_path / "parquet"
    data.mkdir()
    for n, part in enumerate((files[:100], files[100:])):
        rel = [f.relative_to(photos) for f in part]
        pq.write_table(pa.table({"image": [f.read_bytes() for f in part],
                                 "id": [r.with_suffix("").as_posix() for r in rel],
                                 "title": [r.stem.replace("_", " ") for r in rel]}), data / f"part-{n}.parquet",
                       row_group_size=50)
    assert cli.main(["index", str(data), "--model", str(DEFAULT_MODEL_DIR), "--shard-size", "64",
                     "--out", str(tmp_path / "ray"), "--engine", "ray", "--workers", "1"]) == 0
    assert f"indexed {IMAGES} images" in capsys.readouterr().out
    ray = Catalog.open(tmp_path / "ray")
    assert [it["id"] for it in ray.items] == [it["id"] for it in local.items]
    assert np.abs(ray.embeddings - local.embeddings).max() < 1e-5
    assert ray.image_path(150).read_bytes() == local.image_path(150).read_bytes()
    assert ray.image_path(150).is_relative_to((tmp_path / "ray" / "images").resolve())


def test_the_ray_engine_refuses_what_it_cannot_run(photos, tmp_path, capsys):
    from hsl_demo.hub import load_backbone

    random = load_backbone("hsl-demo-tiny", device="cpu")
    with pytest.raises(HslDemoError, match="random weights, which every worker would draw anew"):
        indexing.build_catalog(photos, tmp_path / "out", random, engine="ray", progress=False)
    code = cli.main(["index", str(photos), "--out", str(tmp_path / "out"), "--address", "auto"])
    assert code == 2 and "--address and --workers go with --engine ray" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_bad_input_met_by_a_worker_is_raised_as_itself():
    """A worker's HslDemoError reaches the CLI as its one-line message, not as Ray's wrapper."""
    from hsl_demo.indexing.ray import _rows

    class Wrapped(Exception):  # what Ray raises for an error in a worker: the original is its .cause
        def __init__(self, cause):
            super().__init__(f"RayTaskError: {cause}")
            self.cause = cause

    class Dataset:
        def __init__(self, error):
            self.error = error

        def iter_rows(self):
            yield {"shard": 0}
            raise self.error

    rows = _rows(Dataset(Wrapped(HslDemoError("duplicate item id 'x' (a.jpg)"))))
    assert next(rows) == {"shard": 0}
    with pytest.raises(HslDemoError, match=r"^duplicate item id 'x' \(a.jpg\)$"):
        next(rows)
    other = _rows(Dataset(Wrapped(ValueError("boom"))))
    next(other)
    with pytest.raises(Wrapped):  # anything else stays what it is
        next(other)
