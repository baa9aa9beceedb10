"""Latency of a composed query (reference image + modification text) beside a text query,
measured in the same run on the shipped demo model and products catalog.

    python bench/bench_composed.py                  # held-out composed queries, 3 rounds
    python bench/bench_composed.py --repeats 5      # more rounds
    python bench/bench_composed.py --json out.json  # also write the figures

Composed (image file) = open the reference image file from disk + encode it with the
backbone + encode the text + compose with the head + FAISS search, i.e.
`search_composed(path, text)`. Composed (catalog id) = the same with the reference given as
a catalog id: its embedding is precomputed, so no image is opened or encoded.
Text = `search_text(text)` (encode + FAISS candidates + HSL re-rank) with the same texts.
The three alternate query by query so they see the same machine state; figures are
milliseconds per query, p50 and p95, and each composed figure's ratio to the text query's
(target: composed <= 2x text).
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

from hsl_demo.evaluate import load_queries  # noqa: E402
from hsl_demo.search import Retriever  # noqa: E402

TARGET_RATIO = 2.0


def measure(retriever: Retriever, queries: list[dict], repeats: int, k: int = 10, warmup: int = 5) -> dict:
    """Alternate text, composed-by-file and composed-by-id queries, `repeats` rounds; ms per query."""
    catalog = retriever.catalog
    cases = [(q["text"], q["reference"], catalog.image_path(catalog.row(q["reference"]))) for q in queries]
    paths = {
        "text": lambda text, ref_id, ref_file: retriever.search_text(text, k),
        "composed_file": lambda text, ref_id, ref_file: retriever.search_composed(ref_file, text, k),
        "composed_id": lambda text, ref_id, ref_file: retriever.search_composed(ref_id, text, k),
    }
    for case in cases[:warmup]:  # warm up every path
        for fn in paths.values():
            fn(*case)
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(repeats):
        for case in cases:
            for name, fn in paths.items():
                start = time.perf_counter()
                fn(*case)
                times[name].append((time.perf_counter() - start) * 1000)
    out: dict = {name: {"p50_ms": round(statistics.median(t), 2), "p95_ms": round(percentile(t, 95), 2)}
                 for name, t in times.items()}
    for name in ("composed_file", "composed_id"):
        out[name]["ratio_p50"] = round(out[name]["p50_ms"] / out["text"]["p50_ms"], 2)
        out[name]["ratio_p95"] = round(out[name]["p95_ms"] / out["text"]["p95_ms"], 2)
    out["queries"] = len(times["text"])
    return out


def main() -> None:
    parser = latency_parser(__doc__, "composed query JSONL (default: the demo's held-out composed queries)", 100)
    args = parser.parse_args()

    from hsl_demo.defaults import DEMO_DATA_DIR

    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    queries = load_queries(args.queries or DEMO_DATA_DIR / "products" / "queries.composed.test.jsonl")
    queries = [q for q in queries if q.get("mode") == "composed" and q["text"].strip()][:args.limit]
    if not queries:
        sys.exit("no composed queries with a text to measure")
    retriever = Retriever.from_pretrained(args.model, device="cpu")
    report = {
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "device": str(retriever.backbone.device)},
        "catalog": f"{retriever.catalog.name} ({len(retriever.catalog)}, {retriever.catalog.manifest['index']})",
        "k": args.k,
        "target_ratio": TARGET_RATIO,
        **measure(retriever, queries, args.repeats, k=args.k),
    }

    print(f"composed vs text query latency, ms ({report['machine']['cpus']} CPUs, "
          f"{report['machine']['torch_threads']} torch threads, {report['machine']['device']}); "
          f"catalog {report['catalog']}, k = {args.k}, {report['queries']} queries per path")
    print("| query | p50 | p95 | ratio p50 | ratio p95 |")
    print("|---|---|---|---|---|")
    rows = (("text (encode + FAISS + HSL re-rank)", "text"),
            ("composed, reference image file (open + encode image + text + compose + FAISS)", "composed_file"),
            ("composed, reference catalog id (encode text + compose + FAISS)", "composed_id"))
    for label, name in rows:
        m = report[name]
        ratios = (f"{m['ratio_p50']}x | {m['ratio_p95']}x" if name != "text" else "1.0x | 1.0x")
        print(f"| {label} | {m['p50_ms']} | {m['p95_ms']} | {ratios} |")
    worst = max(report["composed_file"]["ratio_p50"], report["composed_file"]["ratio_p95"])
    verdict = "meets" if worst <= TARGET_RATIO else "misses"
    print(f"composed (image file) {verdict} the target of <= {TARGET_RATIO}x the text query (worst ratio {worst}x)")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
