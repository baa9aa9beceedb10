"""Drill-down's region index, spec by spec, on a catalog's own regions: what a search costs and
how many of the exact top 10 regions its hits hold, for the demo drill-down and text queries.

    python bench/bench_region_index.py CATALOG                          # the shipped spec and 8-bit PQ
    python bench/bench_region_index.py CATALOG --spec IVF4096_HNSW32,PQ32x4fs --nprobe 64 128

CATALOG: a catalog folder (bench/bench_scale.py writes 10^5 and 10^6-item ones). Each spec is
trained on 1/16 of the items' regions and filled with all of them, as `hsl-demo index` does
(hsl_demo.indexing.build_region_index); a search takes 200 items' worth of hits (200 x regions
per item), as a drill-down round does, and the catalog then orders them exactly by the stored
int8 regions (timed too). Recall: the share of the exact top 10 regions (all regions scored)
among the hits. 2 threads.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CHUNK = 50_000  # items dequantised at a time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("catalog", type=Path)
    parser.add_argument("--spec", nargs="+", default=None,
                        help="faiss.index_factory specs (default: the shipped one and IVF-PQ with 8-bit codes)")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[32, 64, 128, 256])
    args = parser.parse_args()

    import faiss
    from tqdm.auto import tqdm

    from hsl_demo.catalog import Catalog
    from hsl_demo.defaults import DEMO_DATA_DIR, default_model
    from hsl_demo.evaluate import load_queries
    from hsl_demo.hub import load_backbone
    from hsl_demo.indexing.policy import NPROBE_CANDIDATES, REGION_LISTS, _ivf_lists, region_index_spec

    faiss.omp_set_num_threads(2)
    catalog = Catalog.open(args.catalog)
    regions, scale, mask = catalog.regions, catalog.region_scale, catalog.region_mask
    n, per_item, dim = regions.shape
    total = int(np.count_nonzero(mask))
    lists = _ivf_lists(total, REGION_LISTS)
    specs = args.spec or [region_index_spec(total, dim), f"IVF{lists}_HNSW32,PQ{dim // 4}"]

    def block(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The rows' region vectors (n * per_item, dim) and which are valid, as the catalog reads them."""
        vectors, valid = catalog.region_features(rows)
        return vectors.numpy().reshape(-1, dim), valid.numpy().reshape(-1)

    backbone = load_backbone(default_model(), device="cpu")
    texts = [q["regions"][0] for q in load_queries(DEMO_DATA_DIR / "looks" / "queries.multi.test.jsonl")][:40]
    texts += [q["text"] for q in load_queries(DEMO_DATA_DIR / "products" / "queries.test.jsonl")][:40]
    queries = backbone.encode_text(texts).astype(np.float32)
    exact_scores = np.full((len(queries), 0), -np.inf, np.float32)
    exact_ids = np.zeros((len(queries), 0), np.int64)
    for start in tqdm(range(0, n, CHUNK), desc="exact top 10", unit="chunk"):
        vectors, valid = block(np.arange(start, min(n, start + CHUNK)))
        vectors[~valid] = 0
        scores, ids = faiss.knn(queries, vectors, 10, metric=faiss.METRIC_INNER_PRODUCT)
        exact_scores = np.concatenate([exact_scores, scores], 1)
        exact_ids = np.concatenate([exact_ids, ids + start * per_item], 1)
        keep = np.argsort(-exact_scores, 1)[:, :10]
        exact_scores, exact_ids = np.take_along_axis(exact_scores, keep, 1), np.take_along_axis(exact_ids, keep, 1)

    hits = NPROBE_CANDIDATES * per_item
    print(f"{catalog.name}: {n:,} items, {total:,} regions; {len(queries)} queries, {hits:,} hits a search, 2 threads")
    print("| spec | nprobe | search ms | exact order ms | recall of the exact top 10 |\n|---|---|---|---|---|")
    for spec in specs:
        index = faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
        rows = np.sort(np.random.default_rng(0).choice(n, size=max(1, n // 16), replace=False))
        sample, valid = block(rows)
        start = time.perf_counter()
        index.train(sample[valid])
        for first in tqdm(range(0, n, CHUNK), desc=f"filling {spec}", unit="chunk"):
            vectors, valid = block(np.arange(first, min(n, first + CHUNK)))
            ids = np.arange(first * per_item, min(n, first + CHUNK) * per_item, dtype=np.int64)
            index.add_with_ids(vectors[valid], ids[valid])
        built = time.perf_counter() - start
        ivf = faiss.extract_index_ivf(index)
        for nprobe in args.nprobe:
            ivf.nprobe = nprobe
            index.search(queries[:4], hits)
            search_ms, order_ms, recall = [], [], []
            for q, exact in zip(queries, exact_ids):
                t0 = time.perf_counter()
                _, found = index.search(q[None], hits)
                t1 = time.perf_counter()
                found = found[0][found[0] >= 0]
                rows_, region = found // per_item, found % per_item
                scores = (regions[rows_, region].astype(np.float32) @ q) * scale[rows_, region].astype(np.float32)
                np.argsort(-scores, kind="stable")
                t2 = time.perf_counter()
                search_ms.append((t1 - t0) * 1000)
                order_ms.append((t2 - t1) * 1000)
                recall.append(len(set(exact.tolist()) & set(found.tolist())) / 10)
            print(f"| {spec} (built in {built:.0f} s) | {nprobe} | {statistics.median(search_ms):.2f} | "
                  f"{statistics.median(order_ms):.2f} | {np.mean(recall):.4f} |")


if __name__ == "__main__":
    main()
