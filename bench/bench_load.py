"""Load: many users at once on the served app, each with its own gradio_client session.

    python bench/bench_load.py                           # 20 users for 30 s
    python bench/bench_load.py --users 5 --seconds 10    # lighter
    python bench/bench_load.py --json out.json           # also write the figures

The app is started as a user runs it (`python app.py`, shipped model and catalogs) in a
subprocess on a free port of 127.0.0.1, and stopped at the end; nothing else is contacted.
Each user (a thread with its own Client, so its own session and drill-down state) sends, back
to back, a mix of /describe (a text), /modify (a catalog reference such as p00024 and a change)
and /drill_add (one product of a look per round; /drill_reset after four rounds), until the
time is up or --max-requests have been sent (the requests in flight then are waited for, and
counted: req/s is over that whole time). Every answer is checked (a ranked gallery);
an exception or an empty gallery is an error. Figures: requests served, errors, and latency
per request as a user sees it (queueing included), milliseconds, p50 and p95.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

DESCRIBE = ["green dotted scarf", "red striped t-shirt", "a backpack in blue with checks", "plain white sneaker",
            "black checked handbag", "yellow dotted sandals", "a grey cap", "orange striped socks"]
MODIFY = [("p00024", "make it blue and striped"), ("p00216", "with dots instead"), ("p00272", "make it a boot"),
          ("p00352", "make it red"), ("p00000", "in green"), ("p00190", "striped instead of checked")]
DRILL = ["a red handbag", "white sneakers", "a checked scarf", "yellow dotted sandals", "a blue striped shirt",
         "black trousers"]
DRILL_ROUNDS = 4  # then /drill_reset, well under the app's maximum
MIX = (("describe", 0.4), ("modify", 0.3), ("drill_add", 0.3))


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(port: int, concurrency: int, model: str | None, timeout: float = 300) -> subprocess.Popen:
    """`python app.py` on 127.0.0.1:port; returns once it answers HTTP."""
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False"}
    cmd = [sys.executable, str(REPO / "app.py"), "--concurrency", str(concurrency)]
    if model:
        cmd += ["--model", model]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the app exited with status {proc.returncode}:\n{proc.stderr.read()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=5) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    stop_app(proc)
    sys.exit(f"the app did not answer on 127.0.0.1:{port} within {timeout:.0f} s")


def stop_app(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Load:
    """Shared by the user threads: the stop conditions and what was measured."""

    def __init__(self, seconds: float, max_requests: int):
        self.seconds, self.max_requests = seconds, max_requests
        self.lock = threading.Lock()
        self.sent = 0
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, int] = defaultdict(int)
        self.error_samples: list[str] = []
        self.deadline = float("inf")

    def take(self) -> bool:
        """One more request, if time and count allow."""
        with self.lock:
            if time.monotonic() >= self.deadline or self.sent >= self.max_requests:
                return False
            self.sent += 1
            return True

    def record(self, endpoint: str, ms: float, error: str | None) -> None:
        with self.lock:
            self.latency[endpoint].append(ms)
            if error is not None:
                self.errors[endpoint] += 1
                if len(self.error_samples) < 10:
                    self.error_samples.append(f"{endpoint}: {error}")


def user(url: str, seed: int, load: Load, ready: threading.Barrier, request_timeout: float) -> None:
    from gradio_client import Client

    rng = random.Random(seed)
    client = None
    try:
        client = Client(url, verbose=False)
    except Exception as e:  # noqa: BLE001 - counted as an error
        load.record("connect", 0.0, f"{type(e).__name__}: {str(e)[:200]}")
    ready.wait()  # every client connected (or failed to) before the clock starts
    if client is None:
        return
    names, weights = zip(*MIX, strict=True)
    look: list[str] = []  # the drill-down queries still to send for this look
    drilled = False  # rounds in this session's drill-down
    while load.take():
        endpoint = rng.choices(names, weights)[0]
        if endpoint == "describe":
            args = (rng.choice(DESCRIBE), rng.choice([6, 12, 24]))
        elif endpoint == "modify":
            args = (None, *rng.choice(MODIFY), 12)
        elif not look and drilled:  # the look is complete: start over
            endpoint, args, drilled = "drill_reset", (), False
        else:
            look = look or rng.sample(DRILL, DRILL_ROUNDS)
            args, drilled = (look.pop(),), True
        start = time.perf_counter()
        error = None
        try:
            out = client.submit(*args, api_name=f"/{endpoint}").result(timeout=request_timeout)
            if endpoint != "drill_reset" and not (isinstance(out, (list, tuple)) and out[0]):
                error = "empty gallery"
        except Exception as e:  # noqa: BLE001 - every failure is counted, the load goes on
            error = f"{type(e).__name__}: {str(e)[:200]}"
        load.record(endpoint, (time.perf_counter() - start) * 1000, error)


def stats(ms: list[float], errors: int, seconds: float) -> dict:
    return {"requests": len(ms), "errors": errors, "per_s": round(len(ms) / seconds, 2),
            "p50_ms": round(statistics.median(ms), 1) if ms else None,
            "p95_ms": round(percentile(ms, 95), 1) if ms else None,
            "max_ms": round(max(ms), 1) if ms else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=20, help="concurrent users, one Client each (default 20)")
    parser.add_argument("--seconds", type=float, default=30, help="how long the load lasts (default 30)")
    parser.add_argument("--max-requests", type=int, default=20_000, help="stop after this many requests")
    parser.add_argument("--concurrency", type=int, default=4, help="the app's --concurrency (default 4, as app.py)")
    parser.add_argument("--model", default=None, help="the app's --model (default: the shipped demo model)")
    parser.add_argument("--request-timeout", type=float, default=120, help="seconds before a request is an error")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()
    if not 1 <= args.users <= 200 or not 0 < args.seconds <= 600:
        parser.error("--users must be 1..200 and --seconds 0..600")

    port = free_port()
    print(f"starting the app on 127.0.0.1:{port} ...", file=sys.stderr)
    proc = start_app(port, args.concurrency, args.model)
    url = f"http://127.0.0.1:{port}/"
    load = Load(args.seconds, args.max_requests)
    ready = threading.Barrier(args.users + 1)
    threads = [threading.Thread(target=user, args=(url, i, load, ready, args.request_timeout), daemon=True)
               for i in range(args.users)]
    try:
        for t in threads:
            t.start()
        ready.wait(timeout=300)
        start = time.monotonic()
        load.deadline = start + args.seconds
        print(f"{args.users} users for {args.seconds:g} s ...", file=sys.stderr)
        for t in threads:
            t.join(timeout=args.seconds + args.request_timeout + 30)
        elapsed = time.monotonic() - start
    finally:
        stop_app(proc)

    everything = [ms for name, values in load.latency.items() if name != "connect" for ms in values]
    report = {
        "machine": {"cpus": os.cpu_count(), "omp_threads": os.environ.get("OMP_NUM_THREADS")},
        "users": args.users, "seconds": round(elapsed, 1), "app_concurrency": args.concurrency,
        "endpoints": {name: stats(load.latency[name], load.errors[name], elapsed)
                      for name in ("describe", "modify", "drill_add", "drill_reset", "connect") if load.latency[name]},
        "overall": stats(everything, sum(load.errors.values()), elapsed),
        "error_samples": load.error_samples,
    }
    print(f"load: {args.users} users, {args.seconds:g} s ({report['seconds']} s with the requests in flight at "
          f"the end), app concurrency {args.concurrency} "
          f"({report['machine']['cpus']} CPUs); latency as a user sees it, ms")
    print("| endpoint | requests | errors | req/s | p50 | p95 | max |")
    print("|---|---|---|---|---|---|---|")
    for name, s in [*report["endpoints"].items(), ("overall", report["overall"])]:
        print(f"| {name} | {s['requests']} | {s['errors']} | {s['per_s']} | {s['p50_ms']} | {s['p95_ms']} | "
              f"{s['max_ms']} |")
    for sample in load.error_samples:
        print(f"error: {sample}", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    sys.exit(1 if report["overall"]["errors"] else 0)


if __name__ == "__main__":
    main()
