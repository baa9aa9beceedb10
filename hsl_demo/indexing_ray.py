"""`hsl-demo index --engine ray`: the writer's shards encoded by a Ray Data pool of backbones.

The same plan and shard folder as the local engine (hsl_demo/indexing.py), the same encode
and write code: each shard still to do is one row of a Ray Dataset, and `map_batches` sends it
to an actor that holds a backbone, encodes the shard's images (decoded by threads a batch
ahead) and writes the shard, complete or not at all. The driver then builds the FAISS index
from the shards and writes the catalog as the local engine does. A run that stops resumes
from its finished shards, with either engine.

Ray is an optional extra (`pip install hsl-demo[ray]`): on a laptop this starts Ray in local
mode; `--address` joins a running cluster (`ray start --head`, or KubeRay), whose nodes must see
the images, the model and the output folder at the same paths (a shared file system).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .errors import HslDemoError
from .indexing import PROFILE_STAGES, ShardFolder, StageTimes, _encode_images


def _import_ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise HslDemoError("--engine ray needs Ray: pip install 'hsl-demo[ray]' (or pip install 'ray[data]')") \
            from None
    return ray


class ShardEncoder:
    """A Ray Data actor: one backbone, loaded once, encoding whole shards."""

    def __init__(self, model: str, root: str, plan: dict, images_dir: str, out: str, batch_size: int,
                 threads: int, gpu: bool):
        import torch

        from .backbone import Backbone

        torch.set_num_threads(max(1, threads))
        self.backbone = Backbone.load(model, device="cuda" if gpu else "cpu")
        self.shards = ShardFolder(Path(root), plan)
        self.images_dir, self.out, self.batch_size = Path(images_dir), Path(out), batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from tqdm.auto import tqdm

        images, seconds, walls = [], [], []
        for n, files, meta in zip(batch["shard"].tolist(), batch["files"], batch["meta"]):
            times, start = StageTimes(), time.perf_counter()
            paths = [self.images_dir / rel for rel in json.loads(files)]
            # ids are checked across shards when the catalog is written (ItemWriter)
            encoded = _encode_images(paths, self.images_dir, self.out, self.backbone, json.loads(meta),
                                     self.batch_size, times, tqdm(disable=True), set())
            with times("write"):
                self.shards.write(n, encoded)
            images.append(times.images)
            seconds.append(json.dumps(times.seconds))
            walls.append(time.perf_counter() - start)
        return {"shard": batch["shard"], "images": np.array(images), "seconds": np.array(seconds),
                "wall": np.array(walls)}


def encode_with_ray(shards: ShardFolder, todo: list[int], paths: list[Path], images_dir: Path, out: Path,
                    model: str, meta: dict[str, dict], batch_size: int, progress: bool, times: StageTimes,
                    address: str | None = None, workers: int | None = None) -> None:
    """Encode the shards `todo` with an actor pool of `workers` backbones (default: one per GPU
    on a cluster with GPUs, else one per 2 CPUs), each writing its shards into `shards`."""
    from tqdm.auto import tqdm

    ray = _import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise HslDemoError(f"--address {address}: no Ray cluster there ({str(e).splitlines()[0][:120]})") \
                from None
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # ours counts images, not blocks
        context.print_on_execution_start = False
        if not todo:  # every shard was encoded by an earlier run
            return
        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 1))
        # one GPU an actor: more actors than GPUs would wait for one forever
        workers = min(workers or gpus, gpus) if gpus else (workers or max(1, cpus // 2))
        threads = max(1, cpus // workers)
        times.workers = workers
        size = shards.plan["shard_size"]
        rows = []
        for n in todo:
            part = [p.relative_to(images_dir).as_posix() for p in paths[n * size:(n + 1) * size]]
            rows.append({"shard": n, "files": json.dumps(part),
                         "meta": json.dumps({rel: meta[rel] for rel in part if rel in meta})})
        files_of = {r["shard"]: len(json.loads(r["files"])) for r in rows}
        done = len(paths) - sum(files_of.values())
        bar = tqdm(total=len(paths), initial=done, desc=f"encoding images (Ray, {workers} workers)", unit="img",
                   disable=not progress, smoothing=0.1)
        dataset = ray.data.from_items(rows, override_num_blocks=max(1, len(rows))).map_batches(
            ShardEncoder, batch_size=1, compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=threads,
            num_gpus=1 if gpus else 0,
            fn_constructor_kwargs={"model": model, "root": str(shards.root), "plan": shards.plan,
                                   "images_dir": str(images_dir), "out": str(out), "batch_size": batch_size,
                                   "threads": threads, "gpu": bool(gpus)})
        start = time.perf_counter()
        for row in _rows(dataset):
            for stage, sec in json.loads(row["seconds"]).items():
                if stage in PROFILE_STAGES:
                    times.seconds[stage] += sec
            times.images += int(row["images"])
            files = files_of[int(row["shard"])]
            times.shard_done(files, float(row["wall"]))  # the worker's own seconds: rows reach us in bursts
            bar.update(files)
        bar.close()
        if progress and rows:
            tqdm.write(f"Ray: {len(rows)} shards in {time.perf_counter() - start:.1f} s")
    finally:
        if started_here:
            ray.shutdown()


def _rows(dataset):
    """The dataset's rows; bad input met in a worker (an HslDemoError there) is raised here as
    itself, not as Ray's wrapper of it."""
    iterator = iter(dataset.iter_rows())
    while True:
        try:
            yield next(iterator)
        except StopIteration:
            return
        except Exception as e:  # Ray wraps what a worker raised (RayTaskError, UserCodeException)
            cause = e
            while cause is not None and not isinstance(cause, HslDemoError):
                cause = getattr(cause, "cause", None) or cause.__cause__
            if cause is None:
                raise
            raise HslDemoError(str(cause)) from None
