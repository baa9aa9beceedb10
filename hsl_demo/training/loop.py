"""One training loop for every trainer: seed, AdamW, warm-up cosine, gradient clipping,
logging with an ETA, a progress bar, periodic evaluation and resumable checkpoints.

A trainer builds its model and data, then hands `fit` a step function: given the step
number, it returns the loss to optimise and the figures to log. Checkpoints hold the
model, the optimizer, the schedule and every random state, in safetensors and JSON only
(no pickle), so `resume=True` continues a killed run exactly where it stopped.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import HslDemoError

CHECKPOINT_DIR = ".checkpoint"  # inside the output model folder; never pushed, removed when a run ends
STATE_TENSORS = "train_state.safetensors"  # tensors, plus the run's state as JSON metadata


@dataclass
class TrainConfig:
    """What every trainer has; each trainer's config adds its own fields and defaults."""

    steps: int = 1000
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 50
    variants: int = 6  # rendered photos per training combination
    scenes: int = 0  # rendered photos with context per training combination (data.demo.render_scene)
    seed: int = 0
    catalog_seed: int = 0  # which held-out split of the demo catalog to respect
    limit_combos: int = 0  # >0: only this many combinations (quick runs and tests)
    log_every: int = 100
    checkpoint_every: int = 0  # >0: write a resumable checkpoint every this many steps


@dataclass
class Step:
    """One step's outcome: the loss to optimise, and the figures to log (the first is the one
    kept in the loss history)."""

    loss: torch.Tensor
    shown: dict[str, float]


@dataclass
class FitResult:
    losses: list[float] = field(default_factory=list)  # every 10 steps
    history: list[dict] = field(default_factory=list)  # evaluations
    seconds: float = 0.0
    resumed_at: int = 0
    best: dict | None = None  # with `keep_best`: the evaluation whose weights were kept (it has "step")
    best_state: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    stopped_early: bool = False


def seed_everything(seed: int) -> random.Random:
    """Seed torch, and return the Python RNG a trainer draws its batches from."""
    torch.manual_seed(seed)
    return random.Random(seed)


def warmup_cosine(opt: torch.optim.Optimizer, warmup: int, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then cosine decay to zero at `steps`."""
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))),
    )


def fit(model: nn.Module, step: Callable[[int], Step], cfg: TrainConfig, *, name: str, rng: random.Random,
        param_groups: list[dict] | None = None, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
        log: Callable[[str], None] = print, status: Callable[[], str] | None = None,
        evaluate: Callable[[], dict] | None = None, eval_every: int = 0, keep_best: str | None = None,
        patience: int = 0, baseline: dict | None = None, checkpoint_dir: Path | None = None,
        resume: bool = False, identity: dict | None = None, progress: bool = True) -> FitResult:
    """Train `model` for `cfg.steps` steps of `step`; returns the loss history and timings.

    `param_groups` default to every trainable parameter with `cfg.weight_decay`; groups may set
    their own weight decay and learning rate. `status()` adds a line of the model's state to
    each log line; `evaluate()` runs every `eval_every` steps and at the end. With
    `checkpoint_dir` and `cfg.checkpoint_every`, the run is checkpointed there, and
    `resume=True` continues from the checkpoint found there.

    Early stopping: with `keep_best` (a figure of `evaluate()`, higher is better), the model
    ends with the weights of its best evaluation; with `patience` too, training stops after
    that many evaluations without improvement. `baseline` (the untrained model's figures) is
    the evaluation to beat: if no step does, the model ends as it started.

    `identity` adds what else a resumed run must share with the checkpointed one (the data
    it trains on, e.g. a catalog's fingerprint).
    """
    from tqdm.auto import tqdm

    groups = param_groups or [{"params": [p for p in model.parameters() if p.requires_grad]}]
    for group in groups:
        group.setdefault("weight_decay", cfg.weight_decay)
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=betas, eps=eps)
    sched = warmup_cosine(opt, cfg.warmup, cfg.steps)
    result = FitResult()
    if resume:
        if checkpoint_dir is None or not (checkpoint_dir / STATE_TENSORS).is_file():
            raise HslDemoError(f"--resume: no checkpoint in {checkpoint_dir} (a run writes one every "
                               "--checkpoint-every steps)")
        result = _load_checkpoint(checkpoint_dir, name, model, opt, sched, rng, cfg, identity)
        log(f"[{name}] resuming at step {result.resumed_at + 1}/{cfg.steps} from {checkpoint_dir}")
    elif keep_best and baseline is not None:
        result.best = {"step": 0, **baseline}
        result.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.train()
    start = time.time() - result.seconds
    first = result.resumed_at + 1
    bar = tqdm(range(first, cfg.steps + 1), desc=name, total=cfg.steps, initial=first - 1, unit="step",
               disable=not progress)
    for n in bar:
        out = step(n)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        main = next(iter(out.shown.values()))
        if n % 10 == 0 or n == 1:
            result.losses.append(round(main, 4))
        if n % cfg.log_every == 0 or n == 1:
            elapsed = time.time() - start
            eta = elapsed / (n - first + 1) * (cfg.steps - n) if n >= first else 0.0
            figures = " ".join(f"{k} {v:.3f}" for k, v in out.shown.items())
            log(f"[{name}] step {n}/{cfg.steps} {figures} {elapsed:.0f}s, ETA {eta:.0f}s"
                + (f" {status()}" if status else ""))
        if evaluate and eval_every and (n % eval_every == 0 or n == cfg.steps):
            figures = evaluate()
            model.train()
            result.history.append({"step": n, **figures})
            log(f"[{name}] step {n}: " + " ".join(f"{k} {v:.3f}" for k, v in figures.items()))
            if keep_best and _keep_if_best(model, result, {"step": n, **figures}, keep_best, patience) \
                    and n < cfg.steps:
                result.stopped_early = True
                log(f"[{name}] stopping early: no better {keep_best} in {patience} evaluations since step "
                    f"{result.best['step']}")
                break
        if checkpoint_dir and cfg.checkpoint_every and n % cfg.checkpoint_every == 0 and n < cfg.steps:
            result.seconds = time.time() - start
            _save_checkpoint(checkpoint_dir, name, cfg, model, opt, sched, rng, n, result, identity)
    bar.close()
    if result.best_state is not None:
        model.load_state_dict(result.best_state)
        if result.best["step"] == 0:
            log(f"[{name}] no evaluation beat the untrained model: it is kept as it started")
    model.eval()
    result.seconds = time.time() - start
    if checkpoint_dir is not None:  # finished: the checkpoint has done its job
        (checkpoint_dir / STATE_TENSORS).unlink(missing_ok=True)
        for folder in (checkpoint_dir, checkpoint_dir.parent if checkpoint_dir.parent.name == CHECKPOINT_DIR else None):
            if folder is not None and folder.is_dir() and not any(folder.iterdir()):
                with contextlib.suppress(OSError):  # another trainer writing into the same model folder
                    folder.rmdir()
    return result


def _keep_if_best(model: nn.Module, result: FitResult, figures: dict, key: str, patience: int) -> bool:
    """Keep the weights when `figures[key]` is the best so far; True when patience has run out."""
    if result.best is None or figures[key] > result.best[key]:
        result.best = figures
        result.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return False
    since = [h for h in result.history if h["step"] > result.best["step"]]
    return bool(patience) and len(since) >= patience


def _run_identity(name: str, cfg: TrainConfig, identity: dict | None = None) -> dict:
    """What a resumed run must share with the checkpointed one (not its length, logging or how
    often it is evaluated)."""
    skip = {"steps", "checkpoint_every", "log_every", "eval_every", "eval_items", "patience"}
    return {"trainer": name, **{k: v for k, v in asdict(cfg).items() if k not in skip}, **(identity or {})}


def _save_checkpoint(folder: Path, name: str, cfg: TrainConfig, model: nn.Module, opt: torch.optim.Optimizer,
                     sched, rng: random.Random, step: int, result: FitResult, identity: dict | None = None) -> None:
    """One safetensors file, written atomically: the tensors, and the rest as JSON in its metadata
    (so weights and step counter can never come from two different steps)."""
    from safetensors.torch import save

    from ..fileio import atomic_file

    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    opt_state = opt.state_dict()
    for index, state in opt_state["state"].items():
        for key, value in state.items():
            tensors[f"opt.{index}.{key}"] = torch.as_tensor(value).contiguous()
    for key, value in (result.best_state or {}).items():
        tensors[f"best.{key}"] = value.contiguous()
    tensors["torch_rng"] = torch.get_rng_state()
    version, internal, gauss = rng.getstate()
    meta = {"run": _run_identity(name, cfg, identity), "step": step, "losses": result.losses, "history": result.history,
            "seconds": result.seconds, "best": result.best, "python_rng": [version, list(internal), gauss],
            "param_groups": opt_state["param_groups"], "scheduler": sched.state_dict()}
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_file(folder / STATE_TENSORS, "wb") as f:
        f.write(save(tensors, metadata={"state": json.dumps(meta)}))


def _load_checkpoint(folder: Path, name: str, model: nn.Module, opt: torch.optim.Optimizer, sched,
                     rng: random.Random, cfg: TrainConfig, identity: dict | None = None) -> FitResult:
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = folder / STATE_TENSORS
    try:
        with safe_open(str(path), "pt") as f:
            meta = json.loads((f.metadata() or {})["state"])
        tensors = load_file(path)
    except Exception as e:  # safetensors' own error types: a truncated or foreign file
        raise HslDemoError(f"{path}: not a readable training checkpoint ({type(e).__name__})") from None
    wanted, found = _run_identity(name, cfg, identity), meta.get("run", {})
    if found != wanted:
        changed = sorted(k for k in set(wanted) | set(found) if wanted.get(k) != found.get(k))
        raise HslDemoError(f"the checkpoint in {folder} is of another run (it differs in {', '.join(changed)}); "
                           "resume with the same settings, or start over without --resume")
    if meta["step"] >= cfg.steps:
        raise HslDemoError(f"the checkpoint in {folder} is at step {meta['step']}, not before --steps {cfg.steps}")
    model.load_state_dict({k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, index, field_name = key.split(".", 2)
            state.setdefault(int(index), {})[field_name] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    sched.load_state_dict(meta["scheduler"])
    torch.set_rng_state(tensors["torch_rng"])
    version, internal, gauss = meta["python_rng"]
    rng.setstate((version, tuple(internal), gauss))
    best_state = {k.removeprefix("best."): v for k, v in tensors.items() if k.startswith("best.")} or None
    return FitResult(meta["losses"], meta["history"], meta["seconds"], meta["step"], meta.get("best"), best_state)
