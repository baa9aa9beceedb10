"""Recall@k over a JSON-lines query file: a hit is any target id in the top k."""

from __future__ import annotations

from pathlib import Path

from .errors import HslDemoError
from .fileio import load_jsonl
from .search import Retriever

KS = (1, 5, 10)
SUPPORTED_MODES = ("text", "composed")


def load_queries(path: str | Path) -> list[dict]:
    """Validated query records; any bad line is a one-line error naming the line."""
    queries = load_jsonl(path)
    if not queries:
        raise HslDemoError(f"{path}: no queries")
    for line, q in enumerate(queries, 1):
        mode = q.get("mode", "text")
        if mode not in SUPPORTED_MODES:
            raise HslDemoError(
                f"{path}: query {line}: unknown mode {mode!r} (supported: {', '.join(SUPPORTED_MODES)})"
            )
        targets = q.get("targets")
        if not isinstance(targets, list) or not targets or not all(isinstance(t, str) for t in targets):
            raise HslDemoError(f"{path}: query {line}: \"targets\" must be a non-empty list of item ids")
        if not isinstance(q.get("text"), str) or (mode == "text" and not q["text"].strip()):
            raise HslDemoError(f"{path}: query {line}: \"text\" must be a non-empty string")
        if mode == "composed" and not (isinstance(q.get("reference"), str) and q["reference"]):
            raise HslDemoError(f"{path}: query {line}: a composed query needs a \"reference\" (item id or image)")
    return queries


def evaluate(retriever: Retriever, queries: list[dict], ks: tuple[int, ...] = KS,
             variant: str | None = None) -> dict:
    """{"R@1": ..., "R@5": ..., "R@10": ..., "queries": n}. `variant` picks the ranking: for
    text queries an HSL variant (default full), for composed ones a composed variant
    (default adaptive)."""
    unknown = {t for q in queries for t in q["targets"]} - {it["id"] for it in retriever.catalog.items}
    if unknown:
        sample = ", ".join(sorted(unknown)[:3])
        raise HslDemoError(f"{len(unknown)} target ids are not in catalog {retriever.catalog.name!r} (e.g. {sample})")
    hits = dict.fromkeys(ks, 0)
    w_text_by_kind: dict[str, list[float]] = {}
    for q in queries:
        if q.get("mode", "text") == "composed":
            hits_list = retriever.search_composed(q["reference"], q["text"], k=max(ks), variant=variant or "adaptive")
            if hits_list:
                w_text_by_kind.setdefault(q.get("kind", "all"), []).append(hits_list[0].levels["w_text"])
        else:
            hits_list = retriever.search_text(q["text"], k=max(ks), variant=variant or "full")
        ranked = [r.id for r in hits_list]
        targets = set(q["targets"])
        for k in ks:
            hits[k] += any(i in targets for i in ranked[:k])
    out = {**{f"R@{k}": hits[k] / len(queries) for k in ks}, "queries": len(queries)}
    if w_text_by_kind:  # composed queries: how much the text counted, on average, per kind
        out["mean_w_text"] = {kind: round(sum(v) / len(v), 3) for kind, v in w_text_by_kind.items()}
    return out
