"""Red-team the served app: hostile web inputs replayed against a running server, one verdict each.

    python scripts/redteam_web.py            # starts `python app.py` on a free port of 127.0.0.1
    python scripts/redteam_web.py --json out.json

Every case is bounded in requests and time and talks only to 127.0.0.1. The client speaks
Gradio's queue protocol (POST /gradio_api/queue/join, then the events of /gradio_api/queue/data)
so it can send what a browser never would: a 40,000-character word, a hand-made select event,
a reference that is a number. A case passes when the server answers with a message (or a
correct result) in bounded time and memory, and its log has no traceback. The server's RSS and
CPU seconds are printed beside each case. tests/test_web_safety.py runs the same cases against
an app served in the test process.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx

REPO = Path(__file__).resolve().parent.parent
LONG_WORD = "q" * 40_000
HUGE_TEXT = "red " * 25_000  # 100 KB
MARKUP = ('<img src="http://127.0.0.1:9/planted.png"><a href="https://evil.example/login" '
          'style="position:fixed;top:0;left:0;font-size:40px">SESSION EXPIRED - LOG IN</a>'
          '<form action="https://evil.example/"><input name=pw type=password></form>')


@dataclass
class Outcome:
    """What one queued call gave: success, its outputs or error message, the warnings shown."""

    success: bool
    data: list = field(default_factory=list)
    error: str = ""
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class Server:
    """A served app: its address, its process (for RSS and CPU) and the text of its log so far."""

    base: str
    pid: int
    log: Callable[[], str]
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=60))
    _fns: dict[str, int] = field(default_factory=dict)

    def fn(self, name: str) -> int:
        """The queue index of the event handler named `name` (its api_name in /config)."""
        if not self._fns:
            config = self.client.get(f"{self.base}/config").json()
            self._fns = {d["api_name"]: d["id"] for d in config["dependencies"] if d.get("api_name")}
        return self._fns[name]

    def call(self, name: str, data: list, event_data: dict | None = None, query: str = "",
             session: str | None = None, headers: dict | None = None) -> Outcome:
        session = session or uuid.uuid4().hex
        started = time.monotonic()
        self.client.post(f"{self.base}/gradio_api/queue/join{query}", headers=headers, json={
            "data": data, "event_data": event_data, "fn_index": self.fn(name), "trigger_id": None,
            "session_hash": session}).raise_for_status()
        warnings: list[str] = []
        with self.client.stream("GET", f"{self.base}/gradio_api/queue/data", params={"session_hash": session}) as s:
            for line in s.iter_lines():
                if not line.startswith("data:"):
                    continue
                msg = json.loads(line[5:])
                if msg.get("msg") == "log":
                    warnings.append(msg.get("log", ""))
                if msg.get("msg") == "process_completed":
                    output = msg.get("output") or {}
                    return Outcome(bool(msg.get("success")), output.get("data") or [], output.get("error") or "",
                                   warnings, time.monotonic() - started)
        return Outcome(False, error="the event stream ended without a result", seconds=time.monotonic() - started)


@dataclass
class Verdict:
    case: str
    ok: bool
    detail: str
    rss_mb: float = 0.0
    cpu_s: float = 0.0


def _bench_load():
    """bench/bench_load.py's process figures (RSS, CPU seconds) and free port, shared."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_load", REPO / "bench" / "bench_load.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_load", module)  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


_load = _bench_load()
rss_mb, cpu_seconds, free_port = _load.rss_mb, _load.cpu_seconds, _load.free_port


# ---- the cases ------------------------------------------------------------------------------
def long_word(server: Server) -> tuple[bool, str]:
    """A 40,000-character word costs no more than a normal query, and the message echoes none of it."""
    normal = min(server.call("describe", ["red cap", 5]).seconds for _ in range(3))
    long = server.call("describe", [LONG_WORD, 5])
    ok = not long.success and "too long" in long.error and len(long.error) < 200 and long.seconds < 1.0
    return ok, f"{long.seconds * 1000:.0f} ms (a normal query {normal * 1000:.0f} ms): {long.error[:90]!r}"


def long_link(server: Server) -> tuple[bool, str]:
    """A 100 KB link parameter: the page still loads, with one message."""
    out = server.call("open_page", [], query="?q=" + "red+" * 15_000)  # 60 KB: under any client's limit
    ok = out.success and any("too long" in w for w in out.warnings) and out.seconds < 2.0
    return ok, f"{out.seconds * 1000:.0f} ms, warnings {[w[:70] for w in out.warnings]}"


def drill_memory(server: Server) -> tuple[bool, str]:
    """Ten rounds of 100 KB texts, then ten of the longest accepted query, twice: RSS moves < 20 MB."""
    session = uuid.uuid4().hex
    server.call("drill_add", ["a red handbag", None], session=session)  # warm: the first round's buffers
    server.call("drill_reset", [None], session=session)
    before = rss_mb(server.pid)
    refused = sum(not server.call("drill_add", [HUGE_TEXT, None], session=session).success for _ in range(10))
    for repeat in range(2):
        for i in range(10):
            server.call("drill_add", [f"{i}{repeat} " + "red handbag " * 24, None], session=session)
        server.call("drill_reset", [None], session=session)
    grown = rss_mb(server.pid) - before
    return refused == 10 and grown < 20, f"100 KB rounds refused {refused}/10; RSS {grown:+.1f} MB"


def markup_links(server: Server) -> tuple[bool, str]:
    """Markup in ?ref=, ?rounds= and ?q= reaches what the page renders as HTML (messages, the
    rounds list) only as text. (tests/test_browser.py checks the page itself in Chromium.)"""
    shown = []
    for query in (f"?ref={quote(MARKUP)}", f"?rounds={quote(MARKUP)}", f"?q={quote(MARKUP)}"):
        out = server.call("open_page", [], query=query)
        shown += out.warnings + [d for d in out.data if isinstance(d, str) and d.startswith(("**Rounds**", "<small>"))]
    raw = [s for s in shown if "<img" in s or "<a href" in s or "<form" in s]
    return not raw, "escaped everywhere" if not raw else f"raw markup in {raw[0][:120]!r}"


def select_payloads(server: Server) -> tuple[bool, str]:
    """Hand-made select events (index 12, None, "x", -1) answer without a traceback."""
    bad = []
    for name, data in (("describe_select", [None]), ("pick", []), ("use_result", [None]), ("drill_select", [None])):
        for index in (12, None, "x", -1, 10**30):
            out = server.call(name, data, event_data={"index": index, "value": None})
            if not out.success and "Traceback" in out.error:
                bad.append((name, index))
    return not bad, f"{len(bad)} failed: {bad[:3]}" if bad else "skipped quietly"


def bad_references(server: Server) -> tuple[bool, str]:
    """/modify with a number, a server path and a URL as the photo: one message each."""
    errors = []
    for image in (123, {"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}},
                  {"path": "http://127.0.0.1:9/x.png", "url": "http://127.0.0.1:9/x.png",  # loopback only
                   "meta": {"_type": "gradio.FileData"}}):
        out = server.call("modify", [image, "", "make it blue", 5])
        errors.append(out.error if not out.success else "ran")
    ok = all(e and e != "ran" and len(e) < 200 for e in errors)
    return ok, " | ".join(e[:60] for e in errors)


def bad_k(server: Server) -> tuple[bool, str]:
    """k of 1.5 from the API is a message; ?k=² and a 5,000-digit k in a link load the page."""
    api = server.call("describe", ["red cap", 1.5])
    links = [server.call("open_page", [], query=f"?q=red+cap&k={k}") for k in ("%C2%B2", "9" * 5000)]
    ok = not api.success and "whole number" in api.error and all(o.success for o in links)
    return ok, f"k=1.5: {api.error[:50]!r}; links loaded: {[o.success for o in links]}"


def referer_link(server: Server) -> tuple[bool, str]:
    """A javascript: Referer never becomes the link a visitor copies."""
    out = server.call("describe", ["red cap", 3], headers={"Referer": "javascript://%0aalert(1)//"})
    link = out.data[-1] if out.success else ""
    return link.startswith("http://127.0.0.1"), f"link {link[:60]!r}"


def uploads(server: Server) -> tuple[bool, str]:
    """Uploads are Gradio cache files: deleted by the cache cleanup (run with a short --cache-ttl)."""
    paths = []
    for i in range(3):  # one at a time, as a visitor's uploads come
        r = server.client.post(f"{server.base}/gradio_api/upload", files={"files": (f"u{i}.bin", os.urandom(4096))})
        paths += r.json()
        time.sleep(0.3)
    deadline = time.monotonic() + 30  # the cleanup runs every second; a loaded machine may delay it
    while time.monotonic() < deadline and any(Path(p).exists() for p in paths):
        time.sleep(0.5)
    left = [p for p in paths if Path(p).exists()]
    return not left, f"{len(paths) - len(left)}/{len(paths)} uploads deleted"


def no_machine_paths(server: Server) -> tuple[bool, str]:
    """The footer names the model without the server's paths."""
    out = server.call("open_page", [])
    footer = json.dumps(out.data[:1])
    leaked = str(REPO) in footer
    return out.success and not leaked, "footer holds no repository path" if not leaked else footer[:120]


CASES: list[Callable[[Server], tuple[bool, str]]] = [long_word, long_link, drill_memory, markup_links,
                                                      select_payloads, bad_references, bad_k, referer_link,
                                                      no_machine_paths, uploads]


def run_case(server: Server, case: Callable[[Server], tuple[bool, str]]) -> Verdict:
    log_before, cpu_before, rss_before = len(server.log()), cpu_seconds(server.pid), rss_mb(server.pid)
    try:
        ok, detail = case(server)
    except Exception as e:  # a case that could not run is a failed case, named
        ok, detail = False, f"{type(e).__name__}: {e}"
    if "Traceback" in server.log()[log_before:]:
        ok, detail = False, detail + "; a traceback in the server log"
    return Verdict(case.__name__, ok, detail, rss_mb(server.pid) - rss_before, cpu_seconds(server.pid) - cpu_before)


# ---- the server --------------------------------------------------------------------------------
def start_app(tmp: Path, cache_ttl: int, timeout: float = 300) -> tuple[subprocess.Popen, Server]:
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False", "TMPDIR": str(tmp)}
    log = tmp / "server.log"
    proc = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--cache-ttl", str(cache_ttl)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"))  # noqa: SIM115 (closed with the process)
    server = Server(f"http://127.0.0.1:{port}", proc.pid, lambda: log.read_text(errors="replace"))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the app exited with status {proc.returncode}:\n{server.log()[-2000:]}")
        try:
            if server.client.get(f"{server.base}/", timeout=5).status_code == 200:
                server.call("describe", ["red cap", 1])  # the model loaded
                return proc, server
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    sys.exit(f"the app did not answer within {timeout:.0f} s")


def sigterm_cleans_up(proc: subprocess.Popen, tmp: Path) -> Verdict:
    """SIGTERM stops the server and removes the thumbnails folder it wrote."""
    had = list(tmp.glob("hsl-demo-thumbnails-*"))
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=30)
    left = list(tmp.glob("hsl-demo-thumbnails-*"))
    return Verdict("sigterm_cleans_up", bool(had) and not left,
                   f"exit {code}; thumbnail folders {len(had)} before, {len(left)} after")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="also write the verdicts to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hsl-redteam-") as tmp:
        proc, server = start_app(Path(tmp), cache_ttl=3)
        try:
            verdicts = [run_case(server, case) for case in CASES]
        finally:
            verdicts_end = sigterm_cleans_up(proc, Path(tmp)) if proc.poll() is None else None
        verdicts.append(verdicts_end)
    width = max(len(v.case) for v in verdicts)
    print(f"{'case':<{width}}  verdict  server RSS  server CPU  detail")
    for v in verdicts:
        print(f"{v.case:<{width}}  {'PASS' if v.ok else 'FAIL':<7}  {v.rss_mb:+8.1f} MB  {v.cpu_s:8.2f} s  {v.detail}")
    if args.json:
        Path(args.json).write_text(json.dumps([v.__dict__ for v in verdicts], indent=2))
    return 0 if all(v.ok for v in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
