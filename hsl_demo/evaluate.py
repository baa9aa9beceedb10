"""Recall@k over a JSON-lines query file: a hit is any target id in the top k.

Each line names its mode ("describe", "modify", "drill-down"; the older "text", "composed",
"multi" too; default describe); the mode (hsl_demo/modes/) checks the line's schema and ranks
it. A query answered over rounds (drill-down) also gets R@k after every round.
"""

from __future__ import annotations

from pathlib import Path

from . import modes
from .errors import HslDemoError
from .fileio import load_jsonl
from .search import Retriever

KS = (1, 5, 10)
DEFAULT_MODE = "describe"


HELD_OUT_SUFFIX = ".heldout.jsonl"


def heldout_phrasing_file(path: str | Path) -> Path | None:
    """The held-out-phrasing version of a query file (`X.jsonl` -> `X.heldout.jsonl`: the same
    queries, rephrased in sentence shapes no training text uses), when it exists."""
    path = Path(path)
    if path.name.endswith(HELD_OUT_SUFFIX) or path.suffix != ".jsonl":
        return None
    sibling = path.with_name(path.name.removesuffix(".jsonl") + HELD_OUT_SUFFIX)
    return sibling if sibling.is_file() else None


def query_mode(query: dict) -> modes.Mode:
    return modes.get(query.get("mode", DEFAULT_MODE))


def load_queries(path: str | Path) -> list[dict]:
    """Validated query records; any bad line is a one-line error naming the line."""
    queries = load_jsonl(path)
    if not queries:
        raise HslDemoError(f"{path}: no queries")
    for line, q in enumerate(queries, 1):
        where = f"{path}: query {line}"
        try:
            mode = query_mode(q)
        except HslDemoError as e:
            raise HslDemoError(f"{where}: {e}") from None
        targets = q.get("targets")
        if not isinstance(targets, list) or not targets or not all(isinstance(t, str) for t in targets):
            raise HslDemoError(f"{where}: \"targets\" must be a non-empty list of item ids")
        mode.validate(q, where)
    return queries


def evaluate(retriever: Retriever, queries: list[dict], ks: tuple[int, ...] = KS,
             variant: str | None = None) -> dict:
    """{"R@1": ..., "R@5": ..., "R@10": ..., "queries": n}, plus what the modes add (mean
    weights for modify, "rounds" for drill-down). `variant` picks the ranking of every query's
    mode (None: each mode's default)."""
    unknown = {t for q in queries for t in q["targets"] if t not in retriever.catalog}
    if unknown:
        sample = ", ".join(sorted(unknown)[:3])
        raise HslDemoError(f"{len(unknown)} target ids are not in catalog {retriever.catalog.name!r} (e.g. {sample})")
    by_mode: dict[modes.Mode, list[int]] = {}
    for i, q in enumerate(queries):
        by_mode.setdefault(query_mode(q), []).append(i)
    chosen = {mode: mode.check_variant(variant, retriever) for mode in by_mode}  # every name checked first
    for mode, indices in by_mode.items():
        if mode.precheck:
            mode.precheck(retriever, [queries[i] for i in indices])
    rankings: list[list[list[str]]] = [[] for _ in queries]  # per query: its ranked ids after every round
    out: dict = {}
    notices: dict[str, int] = {}  # what users of these queries would have been told, and how often
    for mode, indices in by_mode.items():
        responses = [mode.rank(retriever, queries[i], max(ks), chosen[mode]) for i in indices]
        for i, rounds_of in zip(indices, responses):
            rankings[i] = [[r.id for r in response] for response in rounds_of]
            for message in {m for response in rounds_of for m in response.notices}:
                notices[message] = notices.get(message, 0) + 1
        if mode.metrics:
            out.update(mode.metrics([queries[i] for i in indices], responses))
    multi = [i for i in range(len(queries)) if query_mode(queries[i]).in_rounds]
    result = {**_recall(queries, rankings, ks), **out}
    single = [i for i in range(len(queries)) if i not in set(multi)]
    accuracy = top1_attribute_accuracy(retriever, [queries[i] for i in single], [rankings[i] for i in single])
    if accuracy:
        result["top1_attributes"] = accuracy
    kinds = {q["kind"] for q in queries if isinstance(q.get("kind"), str)}
    if len(kinds) > 1:  # per kind of query (the composed modifications), what a user of each gets
        result["by_kind"] = {kind: _recall([q for q in queries if q.get("kind") == kind],
                                           [r for q, r in zip(queries, rankings) if q.get("kind") == kind], ks)
                             for kind in sorted(kinds)}
    if multi:
        result["rounds"] = recall_per_round([rankings[i] for i in multi], [queries[i] for i in multi], ks)
    if notices:
        result["notices"] = notices
    return result


ATTRIBUTE_FIELDS = ("category", "color", "pattern")


def top1_attribute_accuracy(retriever: Retriever, queries: list[dict], rankings: list[list[list[str]]]) -> dict:
    """How often the first result has each attribute the query's targets have (category,
    colour, pattern, where the catalog's metadata records them): what a user sees at a glance,
    beyond recall. Empty when the catalog has no such fields."""
    catalog = retriever.catalog
    counts = dict.fromkeys(ATTRIBUTE_FIELDS, 0)
    seen = dict.fromkeys(ATTRIBUTE_FIELDS, 0)
    for q, ranking in zip(queries, rankings):
        if not ranking or not ranking[-1]:
            continue
        top = catalog.items[catalog.row(ranking[-1][0])]
        targets = [catalog.items[catalog.row(t)] for t in q["targets"]]
        for field in ATTRIBUTE_FIELDS:
            wanted = {t[field] for t in targets if field in t}
            if wanted:
                seen[field] += 1
                counts[field] += top.get(field) in wanted
    return {field: round(counts[field] / seen[field], 4) for field in ATTRIBUTE_FIELDS if seen[field]}


def _recall(queries: list[dict], rankings: list[list[list[str]]], ks: tuple[int, ...]) -> dict:
    hits = dict.fromkeys(ks, 0)
    for q, ranking in zip(queries, rankings):
        last = ranking[-1] if ranking else []
        for k in ks:
            hits[k] += any(i in q["targets"] for i in last[:k])
    return {**{f"R@{k}": hits[k] / len(queries) for k in ks}, "queries": len(queries)}


def recall_per_round(rankings: list[list[list[str]]], queries: list[dict], ks: tuple[int, ...] = KS) -> list[dict]:
    """R@k after round 1, 2, ... up to the longest query. A query with fewer rounds keeps its
    last ranking in the later rounds, so every round counts every query."""
    longest = max(len(r) for r in rankings)
    return [{"round": n + 1, **{k: v for k, v in _recall(queries, [r[:n + 1] for r in rankings], ks).items()
                                if k != "queries"}} for n in range(longest)]


# ---- composed retrieval on public data sets (Fashion-IQ, Shoes) -----------------------------

COMPOSED_DATASET_KS = {"fashioniq": (10, 50), "shoes": (1, 10, 50), "cirr": (1, 5, 10, 50),
                       "fashion200k": (1, 10, 50)}
# The seed paper's CLIP-B figures on the real data (fractions, like everything here); it reports
# none for CIRR and Fashion200k.
PUBLISHED_COMPOSED = {
    "source": "published (seed paper, CLIP-B, real data)",
    "fashioniq": {"R@10": 0.3453, "R@50": 0.5913},
    "shoes": {"R@1": 0.1953, "R@10": 0.5565, "R@50": 0.8058},
}


def encode_image_files(backbone, paths: list, batch_size: int = 64, progress: bool = True,
                       desc: str = "encoding images"):
    """(N, D) float32 backbone embeddings of N image files, opened with `open_image`, in batches."""
    import numpy as np
    from tqdm.auto import tqdm

    from .images import open_image

    embeds = []
    bar = tqdm(total=len(paths), desc=desc, unit="img", disable=not progress)
    for start in range(0, len(paths), batch_size):
        batch = paths[start:start + batch_size]
        embeds.append(backbone.encode_images([open_image(p) for p in batch]))
        bar.update(len(batch))
    bar.close()
    return np.concatenate(embeds)


def encode_composed_split(backbone, split, batch_size: int = 64, progress: bool = True) -> dict:
    """The backbone embeddings an evaluation of `split` needs: {"images": {id: (D,) array} for
    the gallery and the references, "texts": (N, D) array of the joined captions, one per
    triplet, in order}. Images are opened with `open_image`, in batches."""
    import numpy as np

    from .data.composed_datasets import join_captions

    ids = list(dict.fromkeys([*split.gallery, *(t.reference for t in split.triplets)]))
    images = dict(zip(ids, encode_image_files(backbone, [split.images[i] for i in ids], batch_size, progress,
                                              f"encoding {split.name} images")))
    texts = [join_captions(t.captions) for t in split.triplets]
    dim = next(iter(images.values())).shape[-1]
    text_embeds = np.zeros((len(texts), dim), np.float32)
    nonempty = [i for i, t in enumerate(texts) if t]
    for start in range(0, len(nonempty), batch_size):
        rows = nonempty[start:start + batch_size]
        text_embeds[rows] = backbone.encode_text([texts[i] for i in rows])
    return {"images": images, "texts": text_embeds, "empty_text": np.array([not t for t in texts])}


def score_composed_split(head, split, encoded: dict, ks: tuple[int, ...], variant: str = "adaptive") -> dict:
    """Recall@k (fractions) of `split`'s triplets over its gallery, from `encode_composed_split`
    embeddings. The reference stays in the gallery (the published protocols); a target that
    is not in the gallery is a miss. A triplet with no text is an image-only query."""
    import numpy as np
    import torch

    from .models.composed import compose_query

    if any(t.target is None for t in split.triplets):
        raise HslDemoError(f"{split.name}: the targets of this split are not public; evaluate another split "
                           "(Fashion-IQ: val)")
    head.eval()
    images = encoded["images"]
    image = torch.from_numpy(np.stack([images[t.reference] for t in split.triplets]))
    text = torch.from_numpy(encoded["texts"])
    embeds, w_image, w_text = compose_query(head, image, text, variant)
    empty = torch.from_numpy(encoded["empty_text"])
    if empty.any():  # as search_composed: no text, so the reference alone
        embeds, w_image, w_text = embeds.clone(), w_image.clone(), w_text.clone()
        embeds[empty], w_image[empty], w_text[empty] = image[empty], 1.0, 0.0
    gallery = torch.from_numpy(np.stack([images[g] for g in split.gallery]))
    position = {g: i for i, g in enumerate(split.gallery)}
    top = torch.topk(embeds.float() @ gallery.T, min(max(ks), len(split.gallery)), dim=1).indices
    target_rows = torch.tensor([position.get(t.target, -1) for t in split.triplets])
    found = top == target_rows[:, None]  # (N, max k): where the target is, if it is
    n = len(split.triplets)
    out = {f"R@{k}": float(found[:, :k].any(1).sum()) / n for k in ks}
    out.update(queries=n, gallery=len(split.gallery), mean_w_text=round(float(w_text.mean()), 4))
    missing = int((target_rows < 0).sum())
    if missing:
        out["targets_not_in_gallery"] = missing
    return out


def evaluate_composed_split(backbone, head, split, ks: tuple[int, ...], variant: str = "adaptive",
                            batch_size: int = 64, progress: bool = True) -> dict:
    """{"R@k": fraction, ..., "queries", "gallery", "mean_w_text"} of one `ComposedSplit`."""
    return score_composed_split(head, split, encode_composed_split(backbone, split, batch_size, progress), ks,
                                variant)


def evaluate_composed_splits(backbone, head, fmt: str, splits: list, variants=("adaptive",),
                             batch_size: int = 64, progress: bool = True) -> dict:
    """{variant: {"categories": {name: metrics}, "average": metrics}} for loaded splits; the
    images are encoded once for all variants. The average is the unweighted mean over
    categories (the Fashion-IQ convention); its "queries" is the total."""
    ks = COMPOSED_DATASET_KS[fmt]
    encoded = [encode_composed_split(backbone, s, batch_size, progress) for s in splits]
    out = {}
    for variant in variants:
        per = {s.name: score_composed_split(head, s, e, ks, variant) for s, e in zip(splits, encoded)}
        average = {f"R@{k}": sum(m[f"R@{k}"] for m in per.values()) / len(per) for k in ks}
        average["queries"] = sum(m["queries"] for m in per.values())
        average["mean_w_text"] = round(sum(m["mean_w_text"] for m in per.values()) / len(per), 4)
        out[variant] = {"categories": per, "average": average}
    return out


def evaluate_composed_dataset(backbone, head, fmt: str, root, split: str | None = None,
                              variant: str = "adaptive", batch_size: int = 64, progress: bool = True) -> dict:
    """Fashion-IQ (R@10, R@50 per category and their average) or Shoes (R@1, R@10, R@50):
    {"dataset", "split", "variant", "ks", "categories": {name: metrics}, "average": metrics}."""
    from .data.composed_datasets import load_composed_dataset

    splits = load_composed_dataset(fmt, root, split)
    result = evaluate_composed_splits(backbone, head, fmt, splits, (variant,), batch_size, progress)[variant]
    return {"dataset": fmt, "split": split or ("val" if fmt == "fashioniq" else "eval"), "variant": variant,
            "ks": list(COMPOSED_DATASET_KS[fmt]), **result}
