"""Recall@k over a JSON-lines query file: a hit is any target id in the top k.

Each line names its mode ("describe", "modify", "drill-down"; the older "text", "composed",
"multi" too; default describe); the mode (hsl_demo/modes/) checks the line's schema and ranks
it. A query answered over rounds (drill-down) also gets R@k after every round.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import modes
from .data.composed_datasets import PROTOCOLS, Protocol
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
        mode.parse(q, where)
    return queries


def evaluate(retriever: Retriever, queries: list[dict], ks: tuple[int, ...] = KS,
             variant: str | None = None, progress: bool = False) -> dict:
    """{"R@1": ..., "R@5": ..., "R@10": ..., "queries": n}, plus what the modes add (mean
    weights for modify, "rounds" for drill-down). `variant` picks the ranking of every query's
    mode (None: each mode's default); `progress`: a bar over the queries."""
    from tqdm.auto import tqdm

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
        responses = [retriever.search(mode.name, queries[i], max(ks), chosen[mode])
                     for i in tqdm(indices, desc=f"{mode.name} queries", unit="query", disable=not progress)]
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
    kept = kept_attributes(retriever, [queries[i] for i in single], [rankings[i] for i in single])
    if kept:
        result["kept_attributes"] = kept
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


KEPT_TOP = 5


def kept_attributes(retriever: Retriever, queries: list[dict], rankings: list[list[list[str]]]) -> dict:
    """For queries with a catalog reference (Modify): per attribute the text did not change
    (every target has the reference's value), how often the first result keeps it ("top1") and
    the share of the first KEPT_TOP results that do ("top5"): "make it blue" must keep the
    t-shirt a t-shirt, which recall of the exact targets hides. {field: {top1, top5, queries}}."""
    catalog = retriever.catalog
    sums: dict[str, list[float]] = {field: [0.0, 0.0, 0] for field in ATTRIBUTE_FIELDS}
    for q, ranking in zip(queries, rankings):
        reference = q.get("reference")
        if not ranking or not ranking[-1] or not isinstance(reference, str) or reference not in catalog:
            continue
        ref = catalog.items[catalog.row(reference)]
        targets = [catalog.items[catalog.row(t)] for t in q["targets"]]
        top = [catalog.items[catalog.row(i)] for i in ranking[-1][:KEPT_TOP]]
        for field in ATTRIBUTE_FIELDS:
            if field in ref and all(t.get(field) == ref[field] for t in targets):
                sums[field][0] += top[0].get(field) == ref[field]
                sums[field][1] += sum(r.get(field) == ref[field] for r in top) / len(top)
                sums[field][2] += 1
    return {field: {"top1": round(a / n, 4), f"top{KEPT_TOP}": round(b / n, 4), "queries": n}
            for field, (a, b, n) in sums.items() if n}


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


# ---- composed retrieval on public data sets (Fashion-IQ, Shoes, CIRR, Fashion200k) ----------
#
# One protocol per data set (`PROTOCOLS` in hsl_demo/data/composed_datasets.py), whatever the
# path: `evaluate --dataset` encodes the published files, `evaluate --queries` on a converted
# data set reads the same queries (their "protocol" object) and the catalog's embeddings; both
# rank with `rank_composed` and score with `score_rankings`, so they print the same figures.

COMPOSED_DATASET_KS = {fmt: p.ks for fmt, p in PROTOCOLS.items()}
# The seed paper's CLIP-B figures on the real data (percent, as the papers print them); it
# reports none for CIRR and Fashion200k.
PUBLISHED_COMPOSED = {
    "source": "published (seed paper, CLIP-B, real data)",
    "fashioniq": {"R@10": 34.53, "R@50": 59.13},
    "shoes": {"R@1": 19.53, "R@10": 55.65, "R@50": 80.58},
}
SUBMISSION_DEPTH = {"recall": 50, "recall_subset": 3}  # names per query the CIRR test server takes
SUBMISSION_FILES = {"recall": "test1_pred_ranks_recall.json", "recall_subset": "test1_pred_ranks_recall_subset.json"}


@dataclass
class ComposedScores:
    """Recall of one gallery's queries, in percent (as the papers print them)."""

    recall: dict[int, float]  # k -> % of queries with a target in the top k
    subset: dict[int, float]  # k -> % with the target in the top k of its img_set (CIRR's Recall_subset)
    queries: int  # the queries the recalls are over
    gallery: int
    mean_w_text: float
    dropped: int = 0  # queries left out: their reference or target image is missing
    missing_images: int = 0
    targets_not_in_gallery: int = 0  # counted as misses

    def to_dict(self) -> dict:
        return {**{f"R@{k}": v for k, v in self.recall.items()},
                **{f"Rsubset@{k}": v for k, v in self.subset.items()},
                "queries": self.queries, "gallery": self.gallery, "mean_w_text": self.mean_w_text,
                **{k: v for k, v in (("dropped", self.dropped), ("missing_images", self.missing_images),
                                     ("targets_not_in_gallery", self.targets_not_in_gallery)) if v}}


@dataclass
class Ranked:
    """Per query, the gallery ids best first (`depth` of them) and its img_set members best first."""

    top: list[list[str]]
    subset: list[list[str]]


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


def encode_texts(backbone, texts: list[str], batch_size: int = 64, progress: bool = True,
                 desc: str = "encoding texts"):
    """(N, D) float32 embeddings of N texts, in batches; an empty text's row is zeros."""
    import numpy as np
    from tqdm.auto import tqdm

    out = np.zeros((len(texts), backbone.embed_dim), np.float32)
    nonempty = [i for i, t in enumerate(texts) if t]
    bar = tqdm(total=len(nonempty), desc=desc, unit="text", disable=not progress)
    for start in range(0, len(nonempty), batch_size):
        rows = nonempty[start:start + batch_size]
        out[rows] = backbone.encode_text([texts[i] for i in rows])
        bar.update(len(rows))
    bar.close()
    return out


def encode_composed_split(backbone, split, batch_size: int = 64, progress: bool = True) -> dict:
    """The backbone embeddings an evaluation of `split` needs: {"images": {id: (D,) array} for
    the gallery and the references, "texts": (N, D) array of the joined captions, one per
    triplet, in order}. Images are opened with `open_image`, in batches."""
    from .data.composed_datasets import join_captions

    ids = list(dict.fromkeys([*split.gallery, *(t.reference for t in split.triplets)]))
    images = dict(zip(ids, encode_image_files(backbone, [split.images[i] for i in ids], batch_size, progress,
                                              f"encoding {split.name} images")))
    texts = [join_captions(t.captions) for t in split.triplets]
    return {"images": images, "texts": encode_texts(backbone, texts, batch_size, progress,
                                                    f"encoding {split.name} texts"),
            "empty_text": [not t for t in texts]}


def compose(head, image, text, empty: list[bool], variant: str):
    """(queries, w_text) of B composed queries from (B, D) arrays; a query without text is its
    reference alone (as search_composed)."""
    import torch

    from .models.composed import compose_query

    head.eval()
    image, text = torch.from_numpy(image), torch.from_numpy(text)
    with torch.no_grad():
        embeds, _, w_text = compose_query(head, image, text, variant)
    empty_rows = torch.tensor(empty, dtype=torch.bool)
    if empty_rows.any():
        embeds, w_text = embeds.clone(), w_text.clone()
        embeds[empty_rows], w_text[empty_rows] = image[empty_rows].to(embeds.dtype), 0.0
    return embeds.float(), w_text


def rank_composed(queries, gallery, gallery_ids: list[str], references: list[str], members: list[tuple[str, ...]],
                  remove_reference: bool, depth: int, chunk: int = 1024) -> Ranked:
    """Each (N, D) query's top `depth` gallery ids, best first, without its reference when
    `remove_reference` (CLIP4Cir's reference mask), and its img_set `members` but the
    reference in the order of the full ranking (CLIP4Cir's group mask)."""
    import torch

    gallery = torch.as_tensor(gallery).float()
    position = {g: i for i, g in enumerate(gallery_ids)}
    top, subset = [], []
    for start in range(0, len(queries), chunk):
        scores = queries[start:start + chunk] @ gallery.T
        # stable: equal scores keep the gallery order, so both paths break ties alike
        order = torch.argsort(scores, dim=1, descending=True, stable=True)[:, :depth + 1].tolist()
        for i, rows in enumerate(order):
            ref = references[start + i]
            ids = [gallery_ids[r] for r in rows if not (remove_reference and gallery_ids[r] == ref)]
            top.append(ids[:depth])
            group = [position[m] for m in dict.fromkeys(members[start + i]) if m != ref and m in position]
            group.sort(key=lambda r, row=scores[i]: (-float(row[r]), r))
            subset.append([gallery_ids[r] for r in group])
    return Ranked(top, subset)


def score_rankings(ranked: Ranked, targets: list[tuple[str, ...]], protocol, gallery_ids: list[str],
                   w_text, dropped: int = 0, missing_images: int = 0) -> ComposedScores:
    """Recall@k (and Recall_subset@k) in percent, as CLIP4Cir's validate.py computes them."""
    n = len(targets)
    in_gallery = set(gallery_ids)
    recall = {k: 100 * sum(any(t in wanted for t in ids[:k]) for ids, wanted in zip(ranked.top, targets)) / n
              for k in protocol.ks}
    subset = {k: 100 * sum(any(t in wanted for t in ids[:k]) for ids, wanted in zip(ranked.subset, targets)) / n
              for k in protocol.subset_ks}
    return ComposedScores(recall, subset, n, len(gallery_ids), round(float(w_text.mean()), 4), dropped,
                          missing_images, sum(not any(t in in_gallery for t in wanted) for wanted in targets))


def rank_composed_split(head, split, encoded: dict, protocol, variant: str = "adaptive",
                        keep_reference: bool = False, depth: int | None = None) -> tuple[Ranked, object]:
    """(rankings, w_text) of `split`'s queries over its gallery, from `encode_composed_split`."""
    import numpy as np

    images = encoded["images"]
    queries, w_text = compose(head, np.stack([images[t.reference] for t in split.triplets]), encoded["texts"],
                              encoded["empty_text"], variant)
    gallery = np.stack([images[g] for g in split.gallery])
    ranked = rank_composed(queries, gallery, split.gallery, [t.reference for t in split.triplets],
                           [t.members for t in split.triplets], protocol.remove_reference and not keep_reference,
                           depth or max(protocol.ks))
    return ranked, w_text


def score_composed_split(head, split, encoded: dict, protocol, variant: str = "adaptive",
                         keep_reference: bool = False) -> ComposedScores:
    """The protocol's recalls of `split`'s triplets over its gallery (a target not in the
    gallery is a miss; a triplet with no text is an image-only query)."""
    if any(t.target is None for t in split.triplets):
        raise HslDemoError(f"{split.name}: the targets of this split are not public; evaluate another split "
                           "(Fashion-IQ: val)")
    ranked, w_text = rank_composed_split(head, split, encoded, protocol, variant, keep_reference)
    return score_rankings(ranked, [t.targets for t in split.triplets], protocol, split.gallery, w_text,
                          split.dropped, len(split.missing))


def summarise(per: dict[str, ComposedScores]) -> dict:
    """{"categories": {name: metrics}, "average": metrics}: the average is the unweighted mean
    over categories (the Fashion-IQ convention); its "queries" etc. are totals."""
    scores = list(per.values())
    mean = ComposedScores({k: sum(s.recall[k] for s in scores) / len(scores) for k in scores[0].recall},
                          {k: sum(s.subset[k] for s in scores) / len(scores) for k in scores[0].subset},
                          sum(s.queries for s in scores), sum(s.gallery for s in scores),
                          round(sum(s.mean_w_text for s in scores) / len(scores), 4),
                          sum(s.dropped for s in scores), sum(s.missing_images for s in scores),
                          sum(s.targets_not_in_gallery for s in scores))
    return {"categories": {name: s.to_dict() for name, s in per.items()}, "average": mean.to_dict()}


def evaluate_composed_splits(backbone, head, fmt: str, splits: list, variants=("adaptive",),
                             batch_size: int = 64, progress: bool = True, keep_reference: bool = False) -> dict:
    """{variant: {"categories": {name: metrics}, "average": metrics}} for loaded splits, by the
    data set's protocol; the images are encoded once for all variants."""
    protocol = PROTOCOLS[fmt]
    encoded = [encode_composed_split(backbone, s, batch_size, progress) for s in splits]
    return {variant: summarise({s.name: score_composed_split(head, s, e, protocol, variant, keep_reference)
                                for s, e in zip(splits, encoded)}) for variant in variants}


def evaluate_composed_dataset(backbone, head, fmt: str, root, split: str | None = None,
                              variant: str = "adaptive", batch_size: int = 64, progress: bool = True,
                              keep_reference: bool = False) -> dict:
    """The data set's protocol figures: {"dataset", "split", "variant", "ks", "categories":
    {name: metrics}, "average": metrics} (recalls in percent)."""
    from .data.composed_datasets import load_composed_dataset

    splits = load_composed_dataset(fmt, root, split)
    result = evaluate_composed_splits(backbone, head, fmt, splits, (variant,), batch_size, progress,
                                      keep_reference)[variant]
    return {"dataset": fmt, "split": splits[0].split, "variant": variant, "ks": list(PROTOCOLS[fmt].ks), **result}


def cirr_submission(split, ranked: Ranked) -> dict[str, dict]:
    """The two files CIRR's test server takes, as in its demo_files/: {"version": "rc2",
    "metric": "recall" | "recall_subset", "<pairid>": [top 50 | top 3 names], ...}."""
    out = {}
    for metric, depth in SUBMISSION_DEPTH.items():
        lists = ranked.top if metric == "recall" else ranked.subset
        out[metric] = {"version": "rc2", "metric": metric,
                       **{str(t.pairid): ids[:depth] for t, ids in zip(split.triplets, lists)}}
    return out


def write_cirr_submission(backbone, head, split, out_dir: str | Path, variant: str = "adaptive",
                          batch_size: int = 64, progress: bool = True) -> list[Path]:
    """Rank CIRR `split` (test1) and write the test server's two files into `out_dir` (refused
    where they exist: the tool does not replace files it did not write)."""
    import json

    from .fileio import atomic_file

    out_dir = Path(out_dir).expanduser()
    paths = [out_dir / name for name in SUBMISSION_FILES.values()]
    taken = [str(p) for p in paths if p.exists()]
    if taken:
        raise HslDemoError(f"--submission {out_dir}: {', '.join(taken)} exists; give another folder")
    if out_dir.exists() and not out_dir.is_dir():
        raise HslDemoError(f"--submission {out_dir}: not a folder")
    encoded = encode_composed_split(backbone, split, batch_size, progress)
    ranked, _ = rank_composed_split(head, split, encoded, PROTOCOLS["cirr"], variant,
                                    depth=SUBMISSION_DEPTH["recall"])
    files = cirr_submission(split, ranked)
    out_dir.mkdir(parents=True, exist_ok=True)
    for metric, path in zip(SUBMISSION_FILES, paths):
        with atomic_file(path) as f:  # on one line, as demo_files/: the server takes at most 5 MB
            json.dump(files[metric], f)
    return paths


# ---- the same protocol over a converted data set's catalog (`evaluate --queries`) ------------

def is_protocol_query(query: dict) -> bool:
    """A composed query written by `convert`: it says its gallery, protocol and data set."""
    return isinstance(query.get("protocol"), dict)


def check_protocol_queries(queries: list[dict], where: str) -> None:
    """Every query carries a protocol (none or all: one table), each well formed."""
    flagged = [is_protocol_query(q) for q in queries]
    if any(flagged) and not all(flagged):
        raise HslDemoError(f"{where}: mixes queries with a data set's \"protocol\" and without; give them apart")
    for line, q in enumerate(queries, 1):
        p = q.get("protocol")
        if p is None:
            continue
        ok = (isinstance(p.get("gallery"), str) and isinstance(p.get("category"), str)
              and isinstance(p.get("remove_reference"), bool)
              and all(isinstance(p.get(f), list) and all(isinstance(k, int) and k > 0 for k in p[f])
                      for f in ("ks", "subset_ks")) and p["ks"])
        if not ok:
            raise HslDemoError(f"{where}: query {line}: \"protocol\" needs \"gallery\", \"category\", "
                               "\"remove_reference\", \"ks\" and \"subset_ks\"")
        if p["subset_ks"] and not isinstance(q.get("img_set"), list):
            raise HslDemoError(f"{where}: query {line}: Recall_subset needs the query's \"img_set\" (image ids)")


def protocol_of(query: dict) -> Protocol:
    p = query["protocol"]
    return Protocol(tuple(p["ks"]), tuple(p["subset_ks"]), p["remove_reference"])


def evaluate_protocol_queries(retriever: Retriever, queries: list[dict], variant: str | None = None,
                              keep_reference: bool = False, batch_size: int = 64, progress: bool = True) -> dict:
    """`evaluate_composed_splits`' result for a converted data set's queries over its catalog:
    each query ranks the catalog items of its gallery (their "galleries" name it), by its
    protocol; references are the catalog's embeddings, texts are encoded in batches."""
    import numpy as np

    from .data.composed_datasets import join_captions

    variant = variant or "adaptive"
    catalog = retriever.catalog
    rows: dict[str, list[int]] = {}
    for row in range(len(catalog)):
        for name in catalog.items[row].get("galleries", ()):
            rows.setdefault(name, []).append(row)
    by_gallery: dict[str, list[dict]] = {}
    for q in queries:
        by_gallery.setdefault(q["protocol"]["gallery"], []).append(q)
    unknown = [g for g in by_gallery if g not in rows]
    if unknown:
        raise HslDemoError(f"catalog {catalog.name!r} has no item of gallery {unknown[0]!r} (index the converted "
                           "metadata.jsonl, whose records name their galleries)")
    texts = encode_texts(retriever.backbone, [join_captions([q["text"]]) for q in queries], batch_size, progress,
                         "encoding query texts")
    text_of = {id(q): texts[i] for i, q in enumerate(queries)}
    per: dict[str, ComposedScores] = {}
    for name, group in by_gallery.items():
        protocol = protocol_of(group[0])
        ids = [catalog.items[r]["id"] for r in rows[name]]
        refs = [q["reference"] for q in group]
        missing = sorted({r for r in refs if r not in catalog})
        if missing:
            raise HslDemoError(f"{len(missing)} references are not in catalog {catalog.name!r} (e.g. {missing[0]})")
        image = catalog.vectors([catalog.row(r) for r in refs])
        empty = [not join_captions([q["text"]]) for q in group]
        embeds, w_text = compose(retriever.composed, image, np.stack([text_of[id(q)] for q in group]), empty,
                                 variant)
        ranked = rank_composed(embeds, catalog.vectors(rows[name]), ids, refs,
                               [tuple(q.get("img_set", ())) for q in group],
                               protocol.remove_reference and not keep_reference, max(protocol.ks))
        p = group[0]["protocol"]
        per[p["category"]] = score_rankings(ranked, [tuple(q["targets"]) for q in group], protocol, ids, w_text,
                                            p.get("dropped", 0), p.get("missing_images", 0))
    return summarise(per)
