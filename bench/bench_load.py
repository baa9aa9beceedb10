"""Load: many visitors at once on the served app, measured as they see it.

    python bench/bench_load.py                          # 20 users, 30 s, both chart modes side by side
    python bench/bench_load.py --charts native          # one mode only
    python bench/bench_load.py --soak                   # 5 users for 10 min: the server's memory over time
    python bench/bench_load.py --json out.json          # also write the figures

The app runs as a user runs it (`python app.py`, shipped model and catalogs; `--charts png`
for the matplotlib charts the app drew before) in a subprocess on a free port of 127.0.0.1,
stopped at the end; nothing else is contacted.

The client is light, so that it is not what limits the figures: one asyncio loop in one
thread speaks Gradio's queue protocol over plain HTTP/1.1 on asyncio streams (POST
/gradio_api/queue/join, then the server-sent events of /gradio_api/queue/data), one session
hash and one keep-alive connection per user (so each user keeps its own drill-down rounds).
Each user sends, `--think` seconds apart on average (default 1; 0: back to back), a mix of /describe, /modify (a
catalog reference and a change) and /drill_add (one product of a look per round;
/drill_reset after four rounds), then fetches the result thumbnails it has not fetched yet,
one after the other, as a browser with a cache would; a request's latency runs from its send
to its last thumbnail.
An error: a failed request, an error event, an empty gallery or a thumbnail that does not load.
Both sides' CPU seconds are printed, so a reader sees which one was the limit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent

DESCRIBE = ["green dotted scarf", "red striped t-shirt", "a backpack in blue with checks", "plain white sneaker",
            "black checked handbag", "yellow dotted sandals", "a grey cap", "orange striped socks"]
MODIFY = [("p00024", "make it blue and striped"), ("p00216", "with dots instead"), ("p00272", "make it a boot"),
          ("p00352", "make it red"), ("p00000", "in green"), ("p00190", "striped instead of checked")]
DRILL = ["a red handbag", "white sneakers", "a checked scarf", "yellow dotted sandals", "a blue striped shirt",
         "black trousers"]
DRILL_ROUNDS = 4  # then /drill_reset, well under the app's maximum
MIX = (("describe", 0.4), ("modify", 0.3), ("drill_add", 0.3))
TARGETS = {"errors": 0, "per_s": 10.0, "p50_ms": 1000.0, "p95_ms": 2500.0}  # issue 15, 20 users on 2 cores
SOAK_RSS_GROWTH_MB = 50.0
STARTUP_S = 5.0  # from `python app.py` to the page served


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- the server ------------------------------------------------------------------------------
def start_app(port: int, concurrency: int, charts: str, model: str | None,
              timeout: float = 300) -> tuple[subprocess.Popen, float]:
    """`python app.py` on 127.0.0.1:port; returns once it serves its page, with the seconds that took."""
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False"}
    cmd = [sys.executable, str(REPO / "app.py"), "--concurrency", str(concurrency), "--charts", charts]
    if model:
        cmd += ["--model", model]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = started + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the app exited with status {proc.returncode}:\n{proc.stderr.read()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                if r.status == 200:
                    return proc, time.monotonic() - started
        except OSError:
            time.sleep(0.05)
    stop_app(proc)
    sys.exit(f"the app did not answer on 127.0.0.1:{port} within {timeout:.0f} s")


def stop_app(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its waited-for children, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def client_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ---- the client -------------------------------------------------------------------------------
@dataclass
class Load:
    """Shared by the users: the stop conditions and what was measured."""

    deadline: float
    max_requests: int
    sent: int = 0
    images: int = 0
    latency: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    error_samples: list[str] = field(default_factory=list)

    def take(self) -> bool:
        if time.monotonic() >= self.deadline or self.sent >= self.max_requests:
            return False
        self.sent += 1
        return True

    def record(self, endpoint: str, ms: float, error: str | None) -> None:
        self.latency[endpoint].append(ms)
        if error is not None:
            self.errors[endpoint] += 1
            if len(self.error_samples) < 10:
                self.error_samples.append(f"{endpoint}: {error}")


class Http:
    """A minimal HTTP/1.1 client on asyncio streams, for 127.0.0.1: one keep-alive connection
    for requests, a fresh one per event stream. (httpx, tried first, cost the client about
    30 ms of CPU a request, a third of what the server spends on it, on the same 2 cores.)"""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def _send(self, writer: asyncio.StreamWriter, method: str, path: str, body: bytes | None) -> None:
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        writer.write(head.encode() + b"\r\n" + (body or b""))
        await writer.drain()

    @staticmethod
    async def _head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
        status = int((await reader.readline()).split()[1])
        headers = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        for attempt in (0, 1):  # a kept-alive connection the server closed meanwhile: reconnect once
            if self.conn is None:
                self.conn = await asyncio.open_connection(self.host, self.port)
            reader, writer = self.conn
            try:
                await self._send(writer, method, path, body)
                status, headers = await self._head(reader)
                break
            except (ConnectionError, IndexError, ValueError):
                self.close()
                if attempt:
                    raise
        if headers.get("transfer-encoding") == "chunked":
            data = b"".join([chunk async for chunk in self._chunks(reader)])
        else:
            data = await reader.readexactly(int(headers.get("content-length", 0)))
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, data

    @staticmethod
    async def _chunks(reader: asyncio.StreamReader):
        while size := int((await reader.readline()).strip() or b"0", 16):
            yield await reader.readexactly(size)
            await reader.readline()
        await reader.readline()

    async def events(self, path: str):
        """The `data:` payloads of a server-sent event stream, on a connection of its own."""
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            await self._send(writer, "GET", path, None)
            status, headers = await self._head(reader)
            if status != 200:
                raise RuntimeError(f"{path}: HTTP {status}")
            chunks = self._chunks(reader) if headers.get("transfer-encoding") == "chunked" else None
            buffer = b""
            while True:
                piece = await chunks.__anext__() if chunks else await reader.read(65536)
                if not piece:
                    return
                buffer += piece
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.startswith(b"data:"):
                        yield line[5:]
        except StopAsyncIteration:
            return
        finally:
            writer.close()

    def close(self) -> None:
        if self.conn is not None:
            self.conn[1].close()
            self.conn = None


class QueueClient:
    """One visitor: a session hash, Gradio's queue protocol, and a browser's image cache."""

    def __init__(self, http: Http, fn_index: dict[str, int]):
        self.http, self.fn_index = http, fn_index
        self.session = uuid.uuid4().hex[:11]
        self.fetched: set[str] = set()

    async def call(self, endpoint: str, data: list) -> list:
        """The outputs of one event; an error event raises RuntimeError."""
        body = {"data": data, "fn_index": self.fn_index[endpoint], "session_hash": self.session,
                "event_data": None, "trigger_id": None}
        status, reply = await self.http.request("POST", "/gradio_api/queue/join", json.dumps(body).encode())
        if status != 200:
            raise RuntimeError(f"queue/join: HTTP {status}: {reply[:200]!r}")
        event_id = json.loads(reply)["event_id"]
        async for payload in self.http.events(f"/gradio_api/queue/data?session_hash={self.session}"):
            message = json.loads(payload)
            if message.get("event_id") != event_id or message.get("msg") != "process_completed":
                continue
            if not message.get("success"):
                raise RuntimeError(str((message.get("output") or {}).get("error"))[:200])
            return message["output"]["data"]
        raise RuntimeError("the event stream closed before the result")

    async def fetch_images(self, gallery: list) -> int:
        """Fetch the gallery's images this visitor has not fetched yet; how many were fetched."""
        fetched = 0
        for item in gallery:
            url = item["image"]["url"]
            if url in self.fetched:
                continue
            status, content = await self.http.request("GET", urlsplit(url).path + (
                "?" + urlsplit(url).query if urlsplit(url).query else ""))
            if status != 200 or not content:
                raise RuntimeError(f"thumbnail {url[-40:]}: HTTP {status}")
            self.fetched.add(url)
            fetched += 1
        return fetched


async def user(client: QueueClient, seed: int, load: Load, request_timeout: float, think: float = 0.0) -> None:
    """Requests back to back, `think` seconds apart on average (0.5x to 1.5x: a visitor looks at
    the results before the next search)."""
    rng = random.Random(seed)
    names, weights = zip(*MIX, strict=True)
    look: list[str] = []  # the drill-down queries still to send for this look
    drilled = False  # rounds in this session's drill-down
    while load.take():
        endpoint = rng.choices(names, weights)[0]
        if endpoint == "describe":
            data = [rng.choice(DESCRIBE), rng.choice([6, 12, 24])]
        elif endpoint == "modify":
            data = [None, *rng.choice(MODIFY), 12]
        elif not look and drilled:  # the look is complete: start over
            endpoint, data, drilled = "drill_reset", [None], False
        else:
            look = look or rng.sample(DRILL, DRILL_ROUNDS)
            data, drilled = [look.pop(), None], True
        start = time.perf_counter()
        error = None
        try:
            out = await asyncio.wait_for(client.call(endpoint, data), request_timeout)
            if endpoint != "drill_reset":
                if not out[0]:
                    error = "empty gallery"
                else:
                    load.images += await asyncio.wait_for(client.fetch_images(out[0]), request_timeout)
        except Exception as e:  # noqa: BLE001 - every failure is counted, the load goes on
            error = f"{type(e).__name__}: {str(e)[:200]}"
        load.record(endpoint, (time.perf_counter() - start) * 1000, error)
        if think:
            await asyncio.sleep(think * rng.uniform(0.5, 1.5))


def fn_indices(base: str) -> dict[str, int]:
    """The event ids of the app's named endpoints, from its /config."""
    with urllib.request.urlopen(f"{base}config", timeout=30) as r:
        config = json.load(r)
    return {dep["api_name"]: dep["id"] for dep in config["dependencies"] if dep.get("api_name")}


async def drive(base: str, users: int, seconds: float, max_requests: int, request_timeout: float,
                on_tick=None, think: float = 0.0) -> tuple[Load, float]:
    """`users` visitors for `seconds`; (what was measured, the seconds it took with the requests
    in flight at the end). `on_tick(elapsed)` is called every few seconds (the soak's RSS)."""
    indices = fn_indices(base)
    where = urlsplit(base)
    https = [Http(where.hostname, where.port) for _ in range(users)]  # a connection per visitor, as a browser
    try:
        start = time.monotonic()
        load = Load(deadline=start + seconds, max_requests=max_requests)
        clients = [QueueClient(http, indices) for http in https]
        tasks = [asyncio.create_task(user(c, i, load, request_timeout, think)) for i, c in enumerate(clients)]
        if on_tick is not None:
            while not all(t.done() for t in tasks):
                await asyncio.sleep(5)
                on_tick(time.monotonic() - start)
        await asyncio.gather(*tasks)
        return load, time.monotonic() - start
    finally:
        for http in https:
            http.close()


# ---- the report --------------------------------------------------------------------------------
def stats(ms: list[float], errors: int, seconds: float) -> dict:
    return {"requests": len(ms), "errors": errors, "per_s": round(len(ms) / seconds, 2),
            "p50_ms": round(statistics.median(ms), 1) if ms else None,
            "p95_ms": round(percentile(ms, 95), 1) if ms else None,
            "max_ms": round(max(ms), 1) if ms else None}


def run_mode(charts: str, args) -> dict:
    """Start the app with these charts, warm it up, load it, stop it: the figures."""
    port = free_port()
    print(f"[{charts}] starting the app on 127.0.0.1:{port} ...", file=sys.stderr)
    proc, startup = start_app(port, args.concurrency, charts, args.model)
    base = f"http://127.0.0.1:{port}/"
    try:
        asyncio.run(drive(base, 2, 3, 40, args.request_timeout))  # warm-up: first calls, first thumbnails
        server_cpu, client_cpu = cpu_seconds(proc.pid), client_cpu_seconds()
        print(f"[{charts}] {args.users} users for {args.seconds:g} s ...", file=sys.stderr)
        load, elapsed = asyncio.run(drive(base, args.users, args.seconds, args.max_requests, args.request_timeout,
                                          think=args.think))
        server_cpu, client_cpu = cpu_seconds(proc.pid) - server_cpu, client_cpu_seconds() - client_cpu
        rss = rss_mb(proc.pid)
    finally:
        stop_app(proc)
    everything = [ms for values in load.latency.values() for ms in values]
    return {
        "charts": charts, "startup_s": round(startup, 2), "seconds": round(elapsed, 1), "images_fetched": load.images,
        "server_cpu_s": round(server_cpu, 1), "client_cpu_s": round(client_cpu, 1), "server_rss_mb": round(rss),
        "endpoints": {name: stats(load.latency[name], load.errors[name], elapsed)
                      for name in ("describe", "modify", "drill_add", "drill_reset") if load.latency[name]},
        "overall": stats(everything, sum(load.errors.values()), elapsed),
        "error_samples": load.error_samples,
    }


def soak(args) -> dict:
    """5 users (by default) for 10 minutes; the server's RSS every 5 s, its growth after warm-up."""
    port = free_port()
    proc, _ = start_app(port, args.concurrency, args.charts or "native", args.model)
    base = f"http://127.0.0.1:{port}/"
    samples: list[tuple[float, float]] = []
    try:
        print(f"soak: {args.soak_users} users for {args.soak_seconds:g} s ...", file=sys.stderr)
        load, elapsed = asyncio.run(drive(base, args.soak_users, args.soak_seconds, 10**9, args.request_timeout,
                                          on_tick=lambda t: samples.append((t, rss_mb(proc.pid))),
                                          think=args.think))
    finally:
        stop_app(proc)
    warm = [rss for t, rss in samples if t >= args.soak_warmup]
    everything = [ms for values in load.latency.values() for ms in values]
    return {"users": args.soak_users, "seconds": round(elapsed, 1), "warmup_s": args.soak_warmup,
            "rss_after_warmup_mb": round(warm[0], 1), "rss_end_mb": round(warm[-1], 1),
            "rss_max_mb": round(max(warm), 1), "growth_mb": round(warm[-1] - warm[0], 1),
            "overall": stats(everything, sum(load.errors.values()), elapsed),
            "rss_samples_mb": [(round(t), round(rss, 1)) for t, rss in samples]}


def print_load(report: dict, args) -> bool:
    """The side-by-side table and the targets; True when the native charts meet them."""
    modes = report["modes"]
    print(f"load: {args.users} users, {args.seconds:g} s, {args.think:g} s between a visitor's searches on average, "
          f"app concurrency {args.concurrency}, "
          f"{os.cpu_count()} CPUs; latency as a visitor sees it (queue, search, thumbnails), ms")
    print("| charts | endpoint | requests | errors | req/s | p50 | p95 | max |")
    print("|---|---|---|---|---|---|---|---|")
    for mode in modes:
        for name, s in [*mode["endpoints"].items(), ("overall", mode["overall"])]:
            print(f"| {mode['charts']} | {name} | {s['requests']} | {s['errors']} | {s['per_s']} | {s['p50_ms']} | "
                  f"{s['p95_ms']} | {s['max_ms']} |")
    for mode in modes:
        print(f"[{mode['charts']}] start-up: the page served {mode['startup_s']} s after `python app.py` "
              f"(target <= {STARTUP_S:g} s: {'met' if mode['startup_s'] <= STARTUP_S else 'MISSED'})")
        print(f"[{mode['charts']}] CPU seconds over {mode['seconds']} s: server {mode['server_cpu_s']}, this client "
              f"{mode['client_cpu_s']}; thumbnails fetched {mode['images_fetched']}; server RSS at the end "
              f"{mode['server_rss_mb']} MB")
        for sample in mode["error_samples"]:
            print(f"[{mode['charts']}] error: {sample}", file=sys.stderr)
    by_mode = {m["charts"]: m["overall"] for m in modes}
    if {"native", "png"} <= set(by_mode):
        native, png = by_mode["native"], by_mode["png"]
        print(f"native / png charts: req/s {native['per_s'] / max(png['per_s'], 1e-9):.1f}x, "
              f"p50 {png['p50_ms'] / native['p50_ms']:.1f}x lower, p95 {png['p95_ms'] / native['p95_ms']:.1f}x lower")
    native = by_mode.get("native")
    if native is None:
        return True
    checks = [("errors", native["errors"], "==", TARGETS["errors"]),
              ("req/s", native["per_s"], ">=", TARGETS["per_s"]),
              ("p50 ms", native["p50_ms"], "<=", TARGETS["p50_ms"]),
              ("p95 ms", native["p95_ms"], "<=", TARGETS["p95_ms"])]
    met = True
    for name, value, op, target in checks:
        ok = {"==": value == target, ">=": value >= target, "<=": value <= target}[op]
        met &= ok
        print(f"target {name} {op} {target:g}: {value} {'met' if ok else 'MISSED'}")
    return met


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=20, help="concurrent users (default 20)")
    parser.add_argument("--seconds", type=float, default=30, help="how long the load lasts (default 30)")
    parser.add_argument("--charts", choices=("native", "png"), default=None,
                        help="one chart mode only (default: both, side by side)")
    parser.add_argument("--think", type=float, default=1.0,
                        help="seconds a visitor looks at the results before the next search, on average "
                        "(default 1; 0: back to back, what the server can do at most)")
    parser.add_argument("--max-requests", type=int, default=20_000, help="stop after this many requests")
    parser.add_argument("--concurrency", type=int, default=4, help="the app's --concurrency (default 4, as app.py)")
    parser.add_argument("--model", default=None, help="the app's --model (default: the shipped demo model)")
    parser.add_argument("--request-timeout", type=float, default=120, help="seconds before a request is an error")
    parser.add_argument("--soak", action="store_true", help="instead: a long run at light load, the server's RSS")
    parser.add_argument("--soak-users", type=int, default=5)
    parser.add_argument("--soak-seconds", type=float, default=600)
    parser.add_argument("--soak-warmup", type=float, default=60, help="seconds before the RSS baseline (default 60)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()
    if not 1 <= args.users <= 500 or not 0 < args.seconds <= 600:
        parser.error("--users must be 1..500 and --seconds 0..600")

    if args.soak:
        report = {"soak": soak(args)}
        s = report["soak"]
        print(f"soak: {s['users']} users, {s['seconds']} s, {s['overall']['requests']} requests, "
              f"{s['overall']['errors']} errors, p50 {s['overall']['p50_ms']} ms, p95 {s['overall']['p95_ms']} ms")
        print(f"server RSS: {s['rss_after_warmup_mb']} MB after {s['warmup_s']:g} s of warm-up, {s['rss_end_mb']} MB "
              f"at the end (max {s['rss_max_mb']}): growth {s['growth_mb']} MB "
              f"(target < {SOAK_RSS_GROWTH_MB:g}: {'met' if s['growth_mb'] < SOAK_RSS_GROWTH_MB else 'MISSED'})")
        ok = s["growth_mb"] < SOAK_RSS_GROWTH_MB and not s["overall"]["errors"]
    else:
        report = {"modes": [run_mode(mode, args) for mode in ([args.charts] if args.charts else ["native", "png"])]}
        ok = print_load(report, args)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
