"""Search in two stages: FAISS candidates by global cosine, then a re-rank by the head.

`Retriever` is the Python API behind the CLI and the app:

    r = Retriever.from_pretrained()                # embedded model + products catalog
    for hit in r.search_text("green dotted scarf", k=5):
        print(hit.rank, hit.id, hit.title, hit.score, hit.levels)

`levels` explains the score: for HSL, the backbone's global cosine and, per level, the
object- and image-granularity similarities, each with its weight, and the final sum.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .backbone import Backbone
from .catalog import Catalog, HmrnStore
from .defaults import COMPOSED_VARIANTS, HSL_VARIANTS, default_catalog, default_model
from .errors import HslDemoError
from .images import open_image
from .models import load_head
from .models.composed import ComposedHead, compose_query
from .models.hmrn import TERMS as HMRN_TERMS
from .models.hmrn import VARIANTS as HMRN_VARIANTS
from .models.hmrn import HMRNHead
from .models.hsl import HSLHead

DEFAULT_CANDIDATES = 200
HMRN_CACHE_ITEMS = 50_000  # catalogs up to this size keep their HMRN image side in memory (~1.5 KB an item)


@dataclass
class SearchResult:
    rank: int
    id: str
    title: str
    score: float  # the final score the ranking is sorted by
    image: Path
    levels: dict = field(default_factory=dict)  # the score's breakdown (filled by the heads)
    metadata: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "rank": self.rank,
            "id": self.id,
            "title": self.title,
            "score": round(self.score, 6),
            "image": str(self.image),
            "levels": self.levels,
        }


def _check_text(text: object, what: str) -> str:
    """`text` with its whitespace collapsed ("" for None); anything but a string is an error."""
    if text is not None and not isinstance(text, str):
        raise HslDemoError(f"{what} must be a string, not {type(text).__name__} ({str(text)[:40]!r})")
    return " ".join((text or "").split())


def clean_text(text: str | None) -> str:
    text = _check_text(text, "the query")
    if not text:
        raise HslDemoError("empty query: type a description of the product")
    return text


class Retriever:
    """A backbone, its heads and a catalog, checked to belong together."""

    def __init__(self, backbone: Backbone, catalog: Catalog, candidates: int = DEFAULT_CANDIDATES,
                 hsl: HSLHead | None = None, composed: ComposedHead | None = None, hmrn: HMRNHead | None = None):
        catalog.check_model(backbone)
        for name, head in (("HSL", hsl), ("composed", composed), ("HMRN", hmrn)):
            if head is not None and head.embed_dim != backbone.embed_dim:
                raise HslDemoError(f"the {name} head expects {head.embed_dim}-d features, the backbone gives "
                                   f"{backbone.embed_dim}-d (a head trained on another backbone?)")
        self.backbone = backbone
        self.catalog = catalog
        self.candidates = _check_k(candidates)
        self.hsl = hsl
        # Without a trained head, composed queries are the equal-weight sum (zero-shot baseline).
        self.composed = (composed or ComposedHead(embed_dim=backbone.embed_dim)).eval()
        # Without a trained HMRN head, drill-down ranks by its (untrained) local and global levels.
        self.hmrn = (hmrn or HMRNHead(embed_dim=backbone.embed_dim)).eval()
        self.hmrn_variant = "full" if hmrn is not None else "local+global"
        self._hmrn_cache: HmrnStore | None = None
        self._hmrn_lock = threading.Lock()
        self.hsl_store = catalog.hsl_image_side(hsl) if hsl is not None else None

    @classmethod
    def from_pretrained(
        cls, model: str | None = None, catalog: str | Path | None = None, device: str | None = None,
        candidates: int = DEFAULT_CANDIDATES,
    ) -> Retriever:
        """Load a model (folder, Hub repo id or open_clip name; default: the embedded demo
        model, with its heads) and open a catalog (name or folder; default: the demo products)."""
        opened = Catalog.open(catalog or default_catalog())  # cheap checks first
        backbone = Backbone.load(model or default_model(), device=device)
        heads = load_heads(backbone)
        return cls(backbone, opened, candidates, **heads)

    def _results(self, rows: np.ndarray, scores: np.ndarray, levels: list[dict]) -> list[SearchResult]:
        out = []
        for i, (row, score) in enumerate(zip(rows.tolist(), scores.tolist())):
            item = self.catalog.items[row]
            out.append(SearchResult(
                rank=i + 1,
                id=item["id"],
                title=item.get("title", item["id"]),
                score=float(score),
                image=self.catalog.image_path(row),
                levels=levels[i],
                metadata={k: v for k, v in item.items() if k not in ("id", "title", "image")},
            ))
        return out

    @torch.no_grad()
    def search_text(self, text: str, k: int = 10, variant: str = "full") -> list[SearchResult]:
        """The k best items for a description, best first.

        Stage 1 takes the top `candidates` (at least k) by global cosine from FAISS; stage 2
        re-ranks them with the HSL head. `variant` ranks by only some HSL terms (ablations):
        full, image or object (one granularity, its levels summed), or global (stage 1 alone).
        """
        text = clean_text(text)
        k = _check_k(k)
        if variant not in HSL_VARIANTS:
            raise HslDemoError(f"unknown variant {variant!r} (one of {', '.join(HSL_VARIANTS)})")
        feats = self.backbone.text_features([text])
        scores, rows = self.catalog.search(feats.embeds.cpu().numpy(), max(k, self.candidates))
        keep = rows[0] >= 0
        rows, scores = rows[0][keep], scores[0][keep]
        if self.hsl is None or variant == "global":
            return self._results(rows[:k], scores[:k], [
                {"global": {"similarity": round(float(s), 6), "weight": 1.0}, "final": round(float(s), 6)}
                for s in scores[:k]])
        side = self.hsl_store.take(rows)
        used = int(feats.mask.any(0).nonzero().max()) + 1  # drop the trailing padding: faster, same result
        query = self.hsl.encode_text_side(feats.tokens[:, :used].cpu(), feats.mask[:, :used].cpu())
        terms = self.hsl.similarities(query, side, torch.from_numpy(scores)[None])[0]  # (n, terms)
        final = self.hsl.combine(terms, variant)
        order = torch.argsort(final, descending=True, stable=True)[:k]
        return self._results(rows[order.numpy()], final[order].numpy(), self.hsl.breakdown(terms[order]))


    @torch.no_grad()
    def search_composed(self, reference: str | Path | Image.Image, text: str | None, k: int = 10,
                        variant: str = "adaptive") -> list[SearchResult]:
        """The k best items for a reference (catalog id, image file or PIL image) changed as
        `text` says. Each result's `levels` carries the query's (w_image, w_text) and the
        result's similarity to the reference image and to the text.

        variant: adaptive (the head's weights), sum (equal weights), image or text alone.
        An empty text is an image-only query (with a warning).
        """
        k = _check_k(k)
        if variant not in COMPOSED_VARIANTS:
            raise HslDemoError(f"unknown variant {variant!r} (one of {', '.join(COMPOSED_VARIANTS)})")
        text = _check_text(text, "the modification text")
        image, ref_row = self._reference(reference)
        if not text:
            warnings.warn("no modification text: searching by the reference image alone", stacklevel=2)
            variant = "image"
            text_emb = torch.zeros_like(image)
        else:
            text_emb = torch.from_numpy(self.backbone.encode_text([text]))
        q, w_image, w_text = compose_query(self.composed, image, text_emb, variant)
        w_image, w_text = float(w_image[0]), float(w_text[0])
        scores, rows = self.catalog.search(q.numpy(), k + 1)  # +1: the reference itself is dropped
        keep = (rows[0] >= 0) & (rows[0] != ref_row)
        rows, scores = rows[0][keep][:k], scores[0][keep][:k]
        items = torch.from_numpy(self.catalog.embeddings[rows])
        image_sims, text_sims = (items @ image[0]).tolist(), (items @ text_emb[0]).tolist()
        levels = [{"w_image": round(w_image, 6), "w_text": round(w_text, 6), "image_similarity": round(a, 6),
                   "text_similarity": round(b, 6), "final": round(float(f), 6)}
                  for a, b, f in zip(image_sims, text_sims, scores)]
        return self._results(rows, scores, levels)

    def session(self, k: int = 10, variant: str | None = None) -> DrillDownSession:
        """A drill-down search: add a region query per round, undo, reset (see DrillDownSession)."""
        return DrillDownSession(self, k, variant)

    def search_multi(self, regions: list[str], k: int = 10, variant: str | None = None) -> list[DrillDownRound]:
        """Drill down through `regions`, one per round; the ranking after every round."""
        if isinstance(regions, (str, bytes)) or not isinstance(regions, (list, tuple)):
            raise HslDemoError(f"regions must be a list of strings, one query per round (e.g. [\"a red handbag\", "
                               f"\"white sneakers\"]), not {type(regions).__name__}")
        session = self.session(k, variant)
        for text in regions:
            session.add(text)
        return session.rounds

    @torch.no_grad()
    def _rank_multi(self, queries: np.ndarray, variant: str, k: int) -> tuple[np.ndarray, np.ndarray, list[dict]]:
        """Rank the catalog for a set of region queries (T, D): FAISS candidates for each query
        (from the regions that match it), then the HMRN re-rank. Returns every candidate row,
        best first, its final score, and the breakdown of the first k."""
        q = torch.from_numpy(queries)[None]
        query_mask = torch.ones(q.shape[:2], dtype=torch.bool)
        # One candidate budget shared by the queries, so a round's cost grows with its queries
        # (each candidate is scored against all of them), not also with its candidate count.
        per_query = max(k, -(-self.candidates // len(queries)))
        store = self.hmrn_store()
        if store is not None:
            rows = store.candidates(self.hmrn.encode_queries(q, query_mask)[0][0], per_query)
            images = store.side.take(torch.from_numpy(rows))
        else:  # a large catalog: candidates by global embedding, image side computed for them alone
            _, found = self.catalog.search(queries, per_query)
            rows = np.array(list(dict.fromkeys(r for r in found.T.reshape(-1).tolist() if r >= 0)), dtype=np.int64)
            images = self.hmrn.encode_images(torch.from_numpy(self.catalog.embeddings[rows]),
                                             *self.catalog.region_features(rows))
        scores = self.hmrn.scores(q, query_mask, images)
        rounds = len(queries)
        final = self.hmrn.combine(scores, rounds, variant)[0]
        order = torch.argsort(final, descending=True, stable=True)
        weights = dict(zip(HMRN_TERMS, self.hmrn.variant_weights(rounds, variant)))
        terms = {"local": scores.local[0], "global": scores.global_[0], "reasoning": scores.reasoning[0]}
        levels = []
        for i in order[:k].tolist():
            entry = {name: {"similarity": round(float(terms[name][i]), 6), "weight": round(w, 6)}
                     for name, w in weights.items()}
            entry["per_query"] = [round(float(v), 6) for v in scores.per_query[0, i]]
            entry["final"] = round(float(final[i]), 6)
            levels.append(entry)
        return rows[order.numpy()], final[order].numpy(), levels

    def hmrn_store(self) -> HmrnStore | None:
        """The catalog's HMRN image side and region index, built on first use; None for catalogs
        above HMRN_CACHE_ITEMS, which compute the image side per round for their candidates."""
        if len(self.catalog) > HMRN_CACHE_ITEMS:
            return None
        with self._hmrn_lock:  # the app's sessions share this retriever: build it once
            if self._hmrn_cache is None:
                self._hmrn_cache = self.catalog.hmrn_store(self.hmrn)
        return self._hmrn_cache

    def _reference(self, reference: str | Path | Image.Image) -> tuple[torch.Tensor, int]:
        """(1, D) unit embedding of the reference, and its catalog row (-1 for a file)."""
        if not isinstance(reference, (str, Path, Image.Image)):
            raise HslDemoError(f"reference must be a catalog item id, an image file or a PIL image, not "
                               f"{type(reference).__name__}")
        if isinstance(reference, str) and reference in self.catalog:
            row = self.catalog.row(reference)
            return torch.from_numpy(self.catalog.embeddings[row:row + 1].copy()), row
        if isinstance(reference, (str, Path)) and not Path(reference).is_file():
            raise HslDemoError(f"reference {str(reference)!r}: not an item id in catalog {self.catalog.name!r} "
                               "and not an image file")
        image = open_image(reference)
        return torch.from_numpy(self.backbone.encode_images([image])), -1


@dataclass
class DrillDownRound:
    """The ranking after one round: every result's `levels` has local / global / reasoning
    (similarity and weight), the local score of each query so far (`per_query`), `final`, and
    `earlier_ranks`: its rank after each earlier round (None where it was not a candidate)."""

    round: int
    queries: list[str]
    results: list[SearchResult]

    def to_dict(self) -> dict:
        return {"round": self.round, "queries": self.queries, "results": [r.to_dict() for r in self.results]}


class DrillDownSession:
    """The rounds of one drill-down search. Each round adds a region query ("a red handbag",
    then "white sneakers") and re-ranks the catalog with all the queries so far.

    Bad input never breaks the state: an empty or repeated query is ignored with a warning, a
    round past the maximum is an HslDemoError, and undo with no rounds only warns.
    """

    def __init__(self, retriever: Retriever, k: int = 10, variant: str | None = None):
        variant = variant or retriever.hmrn_variant
        if variant not in HMRN_VARIANTS:
            raise HslDemoError(f"unknown variant {variant!r} (one of {', '.join(HMRN_VARIANTS)})")
        self.retriever, self.k, self.variant = retriever, _check_k(k), variant
        self.queries: list[str] = []
        self._embeds: list[np.ndarray] = []
        self._ranks: list[dict[str, int]] = []  # per round: id -> rank of every candidate
        self.rounds: list[DrillDownRound] = []

    @property
    def max_rounds(self) -> int:
        return self.retriever.hmrn.max_rounds

    @property
    def current(self) -> DrillDownRound | None:
        return self.rounds[-1] if self.rounds else None

    def add(self, text: str | None) -> DrillDownRound | None:
        """Add a round with query `text`; returns the new ranking (or the current one, if the
        query was ignored)."""
        text = _check_text(text, "a region query")
        if not text:
            warnings.warn("empty region query: ignored (describe one product, e.g. \"a red handbag\")", stacklevel=2)
            return self.current
        if len(self.queries) >= self.max_rounds:
            raise HslDemoError(f"at most {self.max_rounds} rounds: undo a round or reset to start over")
        seen = [q.lower() for q in self.queries]
        if text.lower() in seen:
            warnings.warn(f"{text!r} was already asked in round {seen.index(text.lower()) + 1}: ignored", stacklevel=2)
            return self.current
        embed = self.retriever.backbone.encode_text([text])[0]  # before any state changes
        rows, scores, levels = self.retriever._rank_multi(np.stack([*self._embeds, embed]), self.variant, self.k)
        ids = [self.retriever.catalog.items[r]["id"] for r in rows.tolist()]
        for entry, item_id in zip(levels, ids):
            entry["earlier_ranks"] = [ranks.get(item_id) for ranks in self._ranks]
        results = self.retriever._results(rows[:self.k], scores[:self.k], levels)
        self.queries.append(text)
        self._embeds.append(embed)
        self._ranks.append({item_id: rank for rank, item_id in enumerate(ids, 1)})
        self.rounds.append(DrillDownRound(len(self.queries), list(self.queries), results))
        return self.rounds[-1]

    def undo(self) -> DrillDownRound | None:
        """Drop the last round; returns the ranking before it (None when no round is left)."""
        if not self.rounds:
            warnings.warn("no round to undo", stacklevel=2)
            return None
        for stack in (self.queries, self._embeds, self._ranks, self.rounds):
            stack.pop()
        return self.current

    def reset(self) -> None:
        for stack in (self.queries, self._embeds, self._ranks, self.rounds):
            stack.clear()


def load_heads(backbone: Backbone) -> dict:
    """The trained heads in the backbone's model folder (none for a bare open_clip name)."""
    heads = {}
    folder = backbone.folder
    for name, cls in (("hsl", HSLHead), ("composed", ComposedHead), ("hmrn", HMRNHead)):
        if folder is not None and (folder / name).is_dir():
            heads[name] = load_head(cls, folder / name)
    return heads


def _check_k(k: int) -> int:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise HslDemoError(f"k must be a positive whole number, not {k!r}")
    return int(k)
