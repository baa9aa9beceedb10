"""Latency of a text query: HSL two-stage search beside plain kNN on the same index, measured
in the same run.

    python bench/bench_hsl.py                       # the demo catalog
    python bench/bench_hsl.py --catalog DIR         # and another catalog folder (repeatable)
    python bench/bench_hsl.py --json out.json       # also write the figures

HSL query = encode the text (global + token features) + FAISS top-N candidates with the
catalog's index + re-rank of the N candidates with the precomputed image side + the results.
Plain kNN = what a user would pick: encode the text (global only) + the top 10 from the same
FAISS index (same nprobe) + their records. Queries alternate between the two methods so both
see the same machine state; figures are milliseconds per query, p50 and p95. Catalogs of
10^5 and 10^6 items: bench/bench_scale.py writes them (and measures this too).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hsl_demo.catalog import Catalog  # noqa: E402
from hsl_demo.evaluate import load_queries  # noqa: E402
from hsl_demo.models import head_fingerprint  # noqa: E402
from hsl_demo.search import Retriever  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def latency_parser(doc: str, queries_help: str, limit: int) -> argparse.ArgumentParser:
    """The options the query-latency benches share (bench_composed, bench_hmrn)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--queries", default=None, help=queries_help)
    parser.add_argument("--limit", type=int, default=limit, help=f"queries per pass (default {limit})")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    return parser


def measure(retriever: Retriever, texts: list[str], repeats: int, k: int = 10) -> dict:
    """Alternate plain kNN and HSL queries over `texts`, `repeats` rounds; ms per query."""
    catalog, backbone = retriever.catalog, retriever.backbone

    def knn(text: str) -> None:
        _, rows = catalog.index.search(backbone.encode_text([text]), k)
        [catalog.items[row] for row in rows[0].tolist() if row >= 0]  # and the records to show

    def hsl(text: str) -> None:
        retriever.search_text(text, k)

    for text in texts[:5]:  # warm up both paths
        knn(text)
        hsl(text)
    times: dict[str, list[float]] = {"knn": [], "hsl": []}
    for _ in range(repeats):
        for text in texts:
            for name, fn in (("knn", knn), ("hsl", hsl)):
                start = time.perf_counter()
                fn(text)
                times[name].append((time.perf_counter() - start) * 1000)
    out = {name: {"p50_ms": round(statistics.median(t), 2), "p95_ms": round(percentile(t, 95), 2)}
           for name, t in times.items()}
    out["ratio_p50"] = round(out["hsl"]["p50_ms"] / out["knn"]["p50_ms"], 2)
    out["ratio_p95"] = round(out["hsl"]["p95_ms"] / out["knn"]["p95_ms"], 2)
    out["queries"] = len(times["hsl"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--catalog", action="append", default=[], metavar="DIR",
                        help="another catalog folder to measure (repeatable)")
    parser.add_argument("--queries", default=None, help="query JSONL (default: the demo's held-out queries)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()

    from hsl_demo.defaults import DEMO_DATA_DIR

    torch.set_grad_enabled(False)
    queries = load_queries(args.queries or DEMO_DATA_DIR / "products" / "queries.test.jsonl")
    texts = [q["text"] for q in queries][:100]
    demo = Retriever.from_pretrained(args.model)
    if demo.hsl is None:
        sys.exit("the model has no HSL head: nothing to compare")
    report = {
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "device": str(demo.backbone.device)},
        "candidates": demo.candidates,
        "hsl_bytes_per_item": demo.prepared("describe").bytes_per_item(),
        "region_bytes_per_item": demo.catalog.manifest["regions"]["bytes_per_item"],
        "catalogs": {},
    }
    assert demo.catalog.manifest.get("heads", {}).get("hsl", {}).get("fingerprint") == head_fingerprint(demo.hsl), \
        "the demo catalog's HSL features are not precomputed for this head: re-index it first"
    report["catalogs"][f"demo products ({len(demo.catalog)}, {demo.catalog.manifest['index']})"] = measure(
        demo, texts, args.repeats)
    for folder in args.catalog:
        retriever = Retriever(demo.backbone, Catalog.open(folder), demo.candidates, hsl=demo.hsl)
        retriever.warm_up()
        report["catalogs"][f"{retriever.catalog.name} ({len(retriever.catalog)}, "
                           f"{retriever.catalog.manifest['index']})"] = measure(retriever, texts, args.repeats)

    print(f"text query latency, ms ({report['machine']['cpus']} CPUs, {report['machine']['torch_threads']} torch "
          f"threads, {report['machine']['device']}); candidates N = {report['candidates']}")
    print("| catalog | plain kNN p50 | p95 | HSL p50 | p95 | ratio p50 | ratio p95 |")
    print("|---|---|---|---|---|---|---|")
    for name, m in report["catalogs"].items():
        print(f"| {name} | {m['knn']['p50_ms']} | {m['knn']['p95_ms']} | {m['hsl']['p50_ms']} | "
              f"{m['hsl']['p95_ms']} | {m['ratio_p50']}x | {m['ratio_p95']}x |")
    print(f"re-rank features: {report['hsl_bytes_per_item']} B per item (HSL image side, int8); "
          f"backbone regions kept for re-indexing: {report['region_bytes_per_item']} B per item")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
