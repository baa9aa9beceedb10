"""`hsl-demo evaluate`: recall@k of a query file (any mode), or of a public composed-retrieval data set by its
papers' protocol."""

from __future__ import annotations

import argparse
import json

from .. import modes
from ..data.composed_datasets import COMPOSED_DATASETS
from ..errors import HslDemoError
from .args import notify

NAME = "evaluate"


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="recall@k of a query file, or of a composed-retrieval data set")
    p.add_argument("--catalog", help="catalog name or folder (default: products)")
    p.add_argument("--model", help="model folder, Hub repo id or open_clip name (default: embedded)")
    p.add_argument("--queries", help="JSONL of {\"mode\", \"text\", \"targets\"} (or give --dataset)")
    p.add_argument("--dataset", choices=COMPOSED_DATASETS,
                   help="evaluate composed retrieval on a public data set in its published layout (or give --queries)")
    p.add_argument("--data-root", help="with --dataset: the data set's folder")
    p.add_argument("--split", help="with --dataset: the split (default: val for fashioniq and cirr, eval for shoes, "
                   "test for fashion200k)")
    p.add_argument("--variant", choices=modes.all_variants(), default=None,
                   help="how to rank, per mode (the first is its default): " + "; ".join(
                       f"{m.name}: {', '.join(m.variants)}" for m in modes.MODES.values()))
    p.add_argument("--ablation", action="store_true", help="evaluate every variant and print a table")
    p.add_argument("--images", help="with --dataset cirr: the folder holding train/, dev/ and test1/ when they are "
                   "not in the data set's folder")
    p.add_argument("--keep-reference", action="store_true",
                   help="keep each query's reference image in its ranking where the protocol removes it (CIRR, "
                   "Fashion200k); the figures are then not the papers'")
    p.add_argument("--submission", metavar="DIR", help="with --dataset cirr --split test1: write the test server's "
                   "two files (recall: top 50, recall_subset: top 3 per pairid) into DIR")
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> None:
    if (args.queries is None) == (args.dataset is None):
        raise HslDemoError("give exactly one of --queries (a query file) and --dataset (a public data set)")
    if args.dataset is not None:
        _evaluate_dataset(args)
        return
    for flag in ("data_root", "split", "images", "submission"):
        if getattr(args, flag) is not None:
            raise HslDemoError(f"--{flag.replace('_', '-')} goes with --dataset, not with --queries")
    from pathlib import Path

    from ..evaluate import check_protocol_queries, heldout_phrasing_file, is_protocol_query, load_queries
    from ..search import Retriever

    files = {"given": Path(args.queries)}
    heldout = heldout_phrasing_file(args.queries)
    if heldout is not None:  # report the held-out phrasing beside the file's own
        files["held-out phrasing"] = heldout
    loaded = {name: load_queries(path) for name, path in files.items()}  # every file checked before the model loads
    for name, queries in loaded.items():
        check_protocol_queries(queries, str(files[name]))
    if is_protocol_query(loaded["given"][0]):
        _evaluate_protocol_file(args, loaded["given"])
        return
    if args.keep_reference:
        raise HslDemoError("--keep-reference goes with a data set's queries (--dataset, or a converted query file)")
    retriever = Retriever.from_pretrained(args.model, args.catalog, device=args.device, max_params=args.max_params)
    tables = {name: _evaluate_table(retriever, queries, args) for name, queries in loaded.items()}
    for name, (table, _) in tables.items():
        seen = table[next(iter(table))].get("notices", {})
        for message, count in sorted(seen.items(), key=lambda kv: -kv[1])[:5]:
            notify([f"{count} {'query' if count == 1 else 'queries'} of {files[name].name}: {message}"])
    if args.json:
        out = {name: table if args.ablation else table[args.variant] for name, (table, _) in tables.items()}
        body = dict(out["given"])
        if heldout is not None:
            body["heldout_phrasing"] = out["held-out phrasing"]
        print(json.dumps(body))
        return
    for name, (table, used) in tables.items():
        if heldout is not None:
            print(f"{'' if name == 'given' else chr(10)}## {name if name != 'given' else 'phrasing of the file'}: "
                  f"{files[name]}")
        _print_table(table, used, len(loaded[name]), retriever, args)
def _evaluate_table(retriever, queries: list[dict], args) -> tuple[dict, list]:
    """{variant: metrics} of a query file (every variant of its mode with --ablation), and the
    modes it holds."""
    from ..evaluate import evaluate, query_mode

    used = list(dict.fromkeys(query_mode(q) for q in queries))
    if args.ablation and len(used) > 1:
        raise HslDemoError("--ablation needs a query file of one mode (" + ", ".join(m.name for m in used) + " found)")
    variants = used[0].variants if args.ablation else (args.variant,)
    return {v: evaluate(retriever, queries, variant=v, progress=True) for v in variants}, used
def _print_table(table: dict, used: list, n_queries: int, retriever, args) -> None:
    if used[0].in_rounds and len(used) == 1:
        _print_rounds(table, n_queries, retriever, used[0])
    elif not args.ablation:
        metrics = table[args.variant]
        print(f"{metrics['queries']} queries: " + "  ".join(f"R@{k} {metrics[f'R@{k}']:.3f}" for k in (1, 5, 10)))
        _print_extras(metrics)
    else:
        print(f"{n_queries} {used[0].name} queries, catalog {retriever.catalog.name}")
        print("| variant | R@1 | R@5 | R@10 |\n|---|---|---|---|")
        for v, m in table.items():
            print(f"| {v} | {m['R@1']:.3f} | {m['R@5']:.3f} | {m['R@10']:.3f} |")
        print()
        _print_extras(table[used[0].default_variant], f" ({used[0].default_variant})")
def _print_extras(metrics: dict, which: str = "") -> None:
    """What a user sees beyond recall: the first result's attributes, recall per kind of query
    and the mean modality weights."""
    if "top1_attributes" in metrics:
        print(f"top result has the asked{which}: " + ", ".join(f"{field} {share:.3f}" for field, share
                                                             in metrics["top1_attributes"].items()))
    if "kept_attributes" in metrics:
        print(f"kept what the text did not change{which}: " + ", ".join(
            f"{field} {m['top1']:.3f} at #1, {m['top5']:.3f} of the top 5 ({m['queries']} queries)"
            for field, m in metrics["kept_attributes"].items()))
    if "by_kind" in metrics:
        weights = metrics.get("mean_w_text", {})
        print("| kind | queries | R@1 | R@5 | R@10 | mean w_image | mean w_text |\n|---|---|---|---|---|---|---|")
        for kind, m in metrics["by_kind"].items():
            w = weights.get(kind)
            mean = f"{1 - w:.2f} | {w:.2f}" if w is not None else "| "
            print(f"| {kind} | {m['queries']} | {m['R@1']:.3f} | {m['R@5']:.3f} | {m['R@10']:.3f} | {mean} |")
def _print_rounds(table: dict, n_queries: int, retriever, mode) -> None:
    """R@1/5/10 after every round, a column group per variant."""
    variants = list(table)
    names = [v or mode.check_variant(None, retriever) for v in variants]
    print(f"{n_queries} {mode.name} queries, catalog {retriever.catalog.name}")
    print("| round | " + " | ".join(f"{v} R@1 | R@5 | R@10" for v in names) + " |")
    print("|---|" + "---|---|---|" * len(variants))
    for n, _ in enumerate(table[variants[0]]["rounds"]):
        cells = " | ".join(" | ".join(f"{table[v]['rounds'][n][f'R@{k}']:.3f}" for k in (1, 5, 10)) for v in variants)
        print(f"| {n + 1} | {cells} |")
def _evaluate_protocol_file(args, queries: list[dict]) -> None:
    """`evaluate --queries` on a converted data set's composed queries: its protocol, its table."""
    from ..evaluate import PUBLISHED_COMPOSED, evaluate_protocol_queries
    from ..modes.modify import VARIANTS as COMPOSED_VARIANTS
    from ..search import Retriever

    _check_composed_variant(args)
    retriever = Retriever.from_pretrained(args.model, args.catalog, device=args.device, max_params=args.max_params)
    variants = COMPOSED_VARIANTS if args.ablation else (args.variant or "adaptive",)
    results = {v: evaluate_protocol_queries(retriever, queries, v, args.keep_reference) for v in variants}
    p = queries[0]["protocol"]
    fmt = p.get("dataset", "")
    _print_composed_results(args, fmt, p.get("split", ""), retriever.backbone.model_id, variants, results,
                            PUBLISHED_COMPOSED.get(fmt))
def _check_composed_variant(args) -> None:
    from ..modes.modify import VARIANTS as COMPOSED_VARIANTS

    if args.variant is not None and args.variant not in COMPOSED_VARIANTS:
        raise HslDemoError(f"--variant {args.variant} is not a composed variant "
                           f"(one of {', '.join(COMPOSED_VARIANTS)})")
def _evaluate_dataset(args) -> None:
    """`evaluate --dataset`: composed retrieval on a public data set by its papers' protocol,
    beside the published figures."""
    from ..data.composed_datasets import load_composed_dataset
    from ..modes.modify import VARIANTS as COMPOSED_VARIANTS

    if args.data_root is None:
        raise HslDemoError("--dataset needs --data-root (the data set's folder)")
    if args.catalog is not None:
        raise HslDemoError("--catalog goes with --queries; a --dataset searches its own gallery")
    _check_composed_variant(args)
    if args.submission is not None and (args.dataset != "cirr" or args.ablation):
        raise HslDemoError("--submission writes CIRR test-server files: give --dataset cirr --split test1 "
                           "(one variant)")
    # fail before loading the model
    splits = load_composed_dataset(args.dataset, args.data_root, args.split, args.images,
                                   targets=args.submission is None)
    if args.submission is not None and splits[0].split != "test1":
        raise HslDemoError(f"--submission is for CIRR's test1 split (its targets are not public); {splits[0].split} "
                           "is scored here: drop --submission")
    from ..evaluate import PUBLISHED_COMPOSED, evaluate_composed_splits, write_cirr_submission
    from ..hub import load_backbone
    from ..models.composed import ComposedHead
    from ..search import load_heads

    backbone = load_backbone(args.model, device=args.device, max_params=args.max_params)
    head = load_heads(backbone, args.max_params).get("composed") or ComposedHead(embed_dim=backbone.embed_dim)
    if args.submission is not None:
        paths = write_cirr_submission(backbone, head, splits[0], args.submission, args.variant or "adaptive")
        dropped = f" ({splits[0].dropped} left out: missing images)" if splits[0].dropped else ""
        print(f"CIRR test1: {len(splits[0].triplets)} queries ranked{dropped}; upload to the test server:")
        for path in paths:
            print(f"  {path}")
        return
    variants = COMPOSED_VARIANTS if args.ablation else (args.variant or "adaptive",)
    results = evaluate_composed_splits(backbone, head, args.dataset, splits, variants,
                                       keep_reference=args.keep_reference)
    _print_composed_results(args, args.dataset, splits[0].split, backbone.model_id, variants, results,
                            PUBLISHED_COMPOSED.get(args.dataset))
def _print_composed_results(args, fmt: str, split: str, model_id: str, variants, results: dict,
                            published: dict | None) -> None:
    """One table for both ways of evaluating a data set (--dataset, --queries of its conversion):
    recalls in percent, the number of queries they are over, the published figures below."""
    from ..data.composed_datasets import PROTOCOLS
    from ..evaluate import PUBLISHED_COMPOSED

    protocol = PROTOCOLS[fmt]
    published = {"source": PUBLISHED_COMPOSED["source"], **published} if published else None
    if args.json:
        body = results if args.ablation else results[variants[0]]
        print(json.dumps({"dataset": fmt, "split": split, "ks": list(protocol.ks),
                          "subset_ks": list(protocol.subset_ks), "model": model_id,
                          "reference": "kept" if args.keep_reference or not protocol.remove_reference else "removed",
                          **({"variants": body} if args.ablation else {"variant": variants[0], **body}),
                          "published": published}))
        return
    columns = [f"R@{k}" for k in protocol.ks] + [f"Rsubset@{k}" for k in protocol.subset_ks]
    reference = ("reference removed" if protocol.remove_reference and not args.keep_reference
                 else "reference kept" + (" (--keep-reference: not the papers' protocol)"
                                          if protocol.remove_reference else ""))
    print(f"{fmt} {split}, model {model_id} (recall in %; {reference})")
    print("| " + " | ".join(["variant", "category", *columns, "queries", "mean w_text"]) + " |")
    print("|---" * (len(columns) + 4) + "|")
    for variant, r in results.items():
        rows = [*r["categories"].items()] + ([("average", r["average"])] if len(r["categories"]) > 1 else [])
        for name, m in rows:
            print("| " + " | ".join([variant, name, *(f"{m[c]:.2f}" for c in columns), str(m["queries"]),
                                     f"{m['mean_w_text']:.2f}"]) + " |")
    if published:
        print(f"| {published['source']} | average | "
              + " | ".join(f"{published[c]:.2f}" if c in published else "" for c in columns) + " | | |")
    total = results[variants[0]]["average"]
    if total.get("dropped") or total.get("targets_not_in_gallery"):
        print(f"left out: {total.get('dropped', 0)} queries whose reference or target image is missing "
              f"({total.get('missing_images', 0)} images missing); targets not in the gallery (misses): "
              f"{total.get('targets_not_in_gallery', 0)}")
