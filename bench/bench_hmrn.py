"""Latency of one drill-down (HMRN) round beside a text query, by the number of rounds so
far, on the shipped looks catalog and on catalog folders you name, measured in the same run.

    python bench/bench_hmrn.py                          # looks, rounds 1 3 10
    python bench/bench_hmrn.py --repeats 1 --limit 10   # a quick look
    python bench/bench_hmrn.py --catalog /tmp/hsl-demo-scale/catalog-1000000   # a large one too
    python bench/bench_hmrn.py --json out.json          # also write the figures

Round n = the `DrillDownSession.add` call that makes round n, on a session that already
holds n - 1 queries: encode the new query + FAISS candidates (`candidates` per query so far
and for their mean, deduplicated) + the HMRN re-rank of every candidate (local, global and
reasoning levels, all computed whatever the variant) + the result breakdown. One session per
test query adds its region captions in order (padded with the captions of the next lines to
the largest round, distinct texts); only the adds that make the measured rounds are timed,
the others just prepare the session. Text = `search_text` (encode + FAISS + HSL re-rank) with
the query's first caption, on the same catalog. Text and rounds alternate query by query so
they see the same machine state; figures are milliseconds, p50 and p95.

Large catalogs (bench/bench_scale.py writes synthetic ones of 100k and 1M items) take their
candidates from their region index (regions.faiss) and compute the HMRN image side for those
candidates alone; catalogs up to Retriever(cache_items=...) keep it in memory.

Targets, checked on each catalog:
- a round with 3 queries costs at most 2x a text query (worst of the p50 and p95 ratios);
- the cost grows at most linearly with the rounds: for every measured round n (default 1, 3,
  10), p50(n) / p50(first) <= n / first, i.e. a round of n queries costs at most n times a
  round of one (a cost of candidates x queries with a candidate count that also grew with the
  queries would break it). The growth per extra round is printed beside it.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_hsl import latency_parser, percentile  # noqa: E402

from hsl_demo import modes  # noqa: E402
from hsl_demo.catalog import Catalog  # noqa: E402
from hsl_demo.evaluate import load_queries  # noqa: E402
from hsl_demo.search import Retriever  # noqa: E402

TARGET_RATIO = 2.0  # a 3-query round vs a text query
TARGET_ROUNDS = 3


def round_texts(queries: list[dict], rounds: int) -> list[list[str]]:
    """Per query: its region captions, then those of the next lines, until `rounds` distinct
    texts (the session ignores a repeated one)."""
    captions = [[" ".join(r.split()) for r in q["regions"]] for q in queries]
    cases = []
    for i in range(len(captions)):
        texts: list[str] = []
        for j in range(len(captions)):
            for text in captions[(i + j) % len(captions)]:
                if text and text.lower() not in {t.lower() for t in texts}:
                    texts.append(text)
            if len(texts) >= rounds:
                break
        if len(texts) < rounds:
            sys.exit(f"only {len(texts)} distinct region captions: cannot measure {rounds} rounds")
        cases.append(texts[:rounds])
    return cases


def measure(retriever: Retriever, cases: list[list[str]], rounds: list[int], repeats: int, k: int = 10,
            variant: str | None = None, warmup: int = 3) -> dict:
    """Per case: a text query, then a session adding the case's texts, timing the adds that
    make `rounds`; `repeats` passes over the cases; ms per query."""
    last = max(rounds)
    times: dict[str, list[float]] = {"text": [], **{str(n): [] for n in rounds}}
    candidates: dict[str, list[int]] = {str(n): [] for n in rounds}

    def run(texts: list[str], record: bool) -> None:
        start = time.perf_counter()
        retriever.search_text(texts[0], k)
        if record:
            times["text"].append((time.perf_counter() - start) * 1000)
        session = retriever.session(k, variant)
        for n, text in enumerate(texts[:last], 1):
            start = time.perf_counter()
            session.add(text)
            elapsed = (time.perf_counter() - start) * 1000
            assert len(session.rounds) == n, f"query {text!r} was not added"
            if record and n in rounds:
                times[str(n)].append(elapsed)
                candidates[str(n)].append(len(session._ranks[-1]))

    for texts in cases[:warmup]:  # warm up every path
        run(texts, record=False)
    for _ in range(repeats):
        for texts in cases:
            run(texts, record=True)
    out: dict = {name: {"p50_ms": round(statistics.median(t), 2), "p95_ms": round(percentile(t, 95), 2)}
                 for name, t in times.items()}
    text = out["text"]
    for n in rounds:
        m = out[str(n)]
        m["ratio_p50"] = round(m["p50_ms"] / text["p50_ms"], 2)
        m["ratio_p95"] = round(m["p95_ms"] / text["p95_ms"], 2)
        m["candidates"] = round(statistics.mean(candidates[str(n)]))
    out["growth_ms_per_round"] = {
        f"{a}-{b}": round((out[str(b)]["p50_ms"] - out[str(a)]["p50_ms"]) / (b - a), 2)
        for a, b in zip(rounds, rounds[1:])}
    out["checks"] = checks(out, rounds)
    out["queries"] = len(times["text"])
    return out


def checks(out: dict, rounds: list[int]) -> dict:
    """The two targets (see the module docstring), with the figures they rest on."""
    result = {}
    if TARGET_ROUNDS in rounds:
        m = out[str(TARGET_ROUNDS)]
        worst = max(m["ratio_p50"], m["ratio_p95"])
        result["ratio"] = {"worst": worst, "met": worst <= TARGET_RATIO}
    if len(rounds) >= 2:
        first = rounds[0]
        growth = {n: round(out[str(n)]["p50_ms"] / out[str(first)]["p50_ms"], 2) for n in rounds[1:]}
        result["linear"] = {"growth": growth, "met": all(g <= n / first for n, g in growth.items())}
    return result


def main() -> None:
    parser = latency_parser(__doc__, "multi-query JSONL (default: the demo's held-out looks queries)", 80)
    parser.add_argument("--rounds", type=int, nargs="+", default=[1, 3, 10], help="rounds to time (default 1 3 10)")
    parser.add_argument("--catalog", action="append", default=[], metavar="DIR",
                        help="another catalog folder to measure (repeatable)")
    args = parser.parse_args()

    from hsl_demo.defaults import DEMO_DATA_DIR

    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    rounds = sorted(set(args.rounds))
    queries = load_queries(args.queries or DEMO_DATA_DIR / "looks" / "queries.multi.test.jsonl")
    queries = [q for q in queries if q.get("mode") == "multi"]
    if not queries:
        sys.exit("no multi-query lines to measure")
    looks = Retriever.from_pretrained(args.model, catalog="looks", device="cpu")
    if rounds[0] < 1 or rounds[-1] > looks.hmrn.max_rounds:
        sys.exit(f"rounds must be between 1 and {looks.hmrn.max_rounds}")
    cases = round_texts(queries, rounds[-1])[:args.limit]
    trained = modes.get("drill-down").check_variant(None, looks) == "full"
    report = {
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "device": str(looks.backbone.device)},
        "candidates": looks.candidates,
        "hmrn": {"trained": trained, "variant": modes.get("drill-down").check_variant(None, looks)},
        "k": args.k,
        "rounds": rounds,
        "target_ratio": TARGET_RATIO,
        "catalogs": {},
    }
    name = f"{looks.catalog.name} ({len(looks.catalog)}, {looks.catalog.manifest['index']})"
    report["catalogs"][name] = measure(looks, cases, rounds, args.repeats, k=args.k)
    for folder in args.catalog:
        retriever = Retriever(looks.backbone, Catalog.open(folder), looks.candidates, hsl=looks.hsl, hmrn=looks.hmrn)
        retriever.warm_up()  # as the app does before it serves
        name = f"{retriever.catalog.name} ({len(retriever.catalog)}, {retriever.catalog.manifest['index']})"
        report["catalogs"][name] = measure(retriever, cases, rounds, args.repeats, k=args.k,
                                           variant=modes.get("drill-down").check_variant(None, looks))

    head = "trained" if trained else "untrained (none in the model: same cost, every level is computed)"
    print(f"drill-down round vs text query latency, ms ({report['machine']['cpus']} CPUs, "
          f"{report['machine']['torch_threads']} torch threads, {report['machine']['device']}); "
          f"candidates N = {report['candidates']} per query, k = {args.k}, HMRN head {head}")
    for name, m in report["catalogs"].items():
        if "skipped" in m:
            continue
        print(f"\n{name}: {m['queries']} queries per path")
        print("| rounds | p50 ms | p95 ms | ratio to text p50 | ratio p95 | candidates |")
        print("|---|---|---|---|---|---|")
        print(f"| text query | {m['text']['p50_ms']} | {m['text']['p95_ms']} | 1.0x | 1.0x | {report['candidates']} |")
        for n in rounds:
            r = m[str(n)]
            print(f"| {n} | {r['p50_ms']} | {r['p95_ms']} | {r['ratio_p50']}x | {r['ratio_p95']}x | "
                  f"{r['candidates']} |")
        growth = ", ".join(f"{pair}: {ms} ms" for pair, ms in m["growth_ms_per_round"].items())
        if growth:
            print(f"growth per extra round (p50), rounds {growth}")
        c = m["checks"]
        if "ratio" in c:
            verdict = "meets" if c["ratio"]["met"] else "misses"
            print(f"a {TARGET_ROUNDS}-query round {verdict} the target of <= {TARGET_RATIO}x a text query "
                  f"(worst ratio {c['ratio']['worst']}x)")
        if "linear" in c:
            lin = c["linear"]
            verdict = "meets" if lin["met"] else "misses"
            ratios = ", ".join(f"p50({n}) / p50({rounds[0]}) = {g} (<= {n / rounds[0]:g})"
                               for n, g in lin["growth"].items())
            print(f"growth {verdict} the at-most-linear target: {ratios}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
