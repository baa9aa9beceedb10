"""The distributor, `hsl-demo index --engine ray`: the writer's shards encoded by a Ray Data pool of backbones.

The same plan and shard folder as the local engine (hsl_demo/indexing.py), the same reader,
encode and write code: each shard still to do is one row of a Ray Dataset (its plan: a list of
files, or a range of a Parquet file's rows or a tar's samples; hsl_demo/reader.py), and
`map_batches` sends it to an actor that holds a backbone, reads and encodes the shard's images
(decoded by threads a batch ahead) and writes the shard, complete or not at all. The driver then builds the FAISS index
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

from ..errors import HslDemoError
from ..reader import ImageSource, open_source_config
from .mapper import encode_shard
from .shards import PROFILE_STAGES, ShardFolder, StageTimes


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

    def __init__(self, model: str, root: str, plan: dict, source: dict, out: str, batch_size: int, threads: int,
                 gpu: bool):
        import torch

        from ..hub import load_backbone

        torch.set_num_threads(max(1, threads))
        self.backbone = load_backbone(model, device="cuda" if gpu else "cpu")
        self.shards = ShardFolder(Path(root), plan)
        self.source, self.out, self.batch_size = open_source_config(source), Path(out), batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from tqdm.auto import tqdm

        images, seconds, walls = [], [], []
        for n, shard in zip(batch["shard"].tolist(), batch["plan"]):
            times, start = StageTimes(), time.perf_counter()
            # ids are checked across shards when the catalog is written (ItemWriter)
            encode_shard(self.shards, n, json.loads(shard), self.source, self.out, self.backbone, self.batch_size,
                                     times, tqdm(disable=True), set())
            images.append(times.images)
            seconds.append(json.dumps(times.seconds))
            walls.append(time.perf_counter() - start)
        return {"shard": batch["shard"], "images": np.array(images), "seconds": np.array(seconds),
                "wall": np.array(walls)}


def encode_with_ray(shards: ShardFolder, plans: list[dict], source: ImageSource, out: Path, model: str,
                    batch_size: int, progress: bool, times: StageTimes, address: str | None = None,
                    workers: int | None = None) -> None:
    """Encode the shards of `plans` not done yet with an actor pool of `workers` backbones
    (default: one per GPU on a cluster with GPUs, else one per 2 CPUs), each reading its shards
    from `source` and writing them into `shards`."""
    from tqdm.auto import tqdm

    ray = _import_ray()
    todo = shards.todo()
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
        rows = [{"shard": n, "plan": json.dumps(plans[n])} for n in todo]
        bar = tqdm(total=source.count, initial=source.count - sum(plans[n]["count"] for n in todo),
                   desc=f"encoding images (Ray, {workers} workers)", unit="img", disable=not progress, smoothing=0.1)
        dataset = ray.data.from_items(rows, override_num_blocks=max(1, len(rows))).map_batches(
            ShardEncoder, batch_size=1, compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=threads,
            num_gpus=1 if gpus else 0,
            fn_constructor_kwargs={"model": model, "root": str(shards.root), "plan": shards.plan,
                                   "source": source.config(), "out": str(out), "batch_size": batch_size,
                                   "threads": threads, "gpu": bool(gpus)})
        start = time.perf_counter()
        for row in _rows(dataset):
            for stage, sec in json.loads(row["seconds"]).items():
                if stage in PROFILE_STAGES:
                    times.seconds[stage] += sec
            times.images += int(row["images"])
            files = plans[int(row["shard"])]["count"]
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
