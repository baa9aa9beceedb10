"""A fourth retrieval mode, "hash", in one module outside the package: what a plugin provides,
and all it provides. Its head hashes a global embedding to 64 sign bits (random hyperplanes,
seeded: every process draws the same); a search ranks by how many bits an item shares with
the text's. Index time stores every item's bits in the catalog (`hash_bits.npy`); without them,
the bits are computed from the catalog's embeddings when first needed.

tests/test_toy_mode.py registers it and reaches it through the CLI, `evaluate`, `hsl-demo
index` and the served app, with no file of the package naming it.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import gradio as gr
import numpy as np
import torch
from torch import nn

from hsl_demo.errors import HslDemoError
from hsl_demo.modes import CliOption, Mode, SearchCli, Store
from hsl_demo.query import clean_text
from hsl_demo.results import SearchResponse, result_lines, rounded
from hsl_demo.widgets import PRIVATE, TabParts, as_messages, gallery_items, results_gallery

NAME, HEAD, BITS = "hash", "hash", 64


class SignHash(nn.Module):
    def __init__(self, embed_dim: int, bits: int = BITS):
        super().__init__()
        self.embed_dim = embed_dim
        self.register_buffer("planes", torch.randn(embed_dim, bits, generator=torch.Generator().manual_seed(0)))

    def bits(self, embeds: torch.Tensor) -> np.ndarray:
        return (embeds.float() @ self.planes > 0).numpy()


@dataclass(frozen=True)
class HashQuery:
    text: str

    @classmethod
    def parse(cls, record: dict, where: str) -> HashQuery:
        if not isinstance(record.get("text"), str) or not record["text"].strip():
            raise HslDemoError(f"{where}: \"text\" must be a non-empty string")
        return cls(record["text"])


@dataclass
class HashBreakdown:
    shared_bits: int
    final: float

    def to_dict(self) -> dict:
        return {"shared_bits": self.shared_bits, "final": rounded(self.final)}


def compute(head: SignHash, embeds, regions, mask) -> dict[str, np.ndarray]:
    return {"bits": head.bits(embeds)}


def prepare(retriever) -> np.ndarray:
    catalog, head = retriever.catalog, retriever.heads[HEAD]
    from hsl_demo.models import head_fingerprint

    if HEAD in catalog.stores and catalog.head_fingerprint(HEAD) == head_fingerprint(head):
        return np.asarray(catalog.stores[HEAD]["bits"])
    return head.bits(torch.from_numpy(np.asarray(catalog.embeddings)))


def search(retriever, query: HashQuery, k: int, variant: str) -> list[SearchResponse]:
    bits = retriever.prepared(NAME)
    text = retriever.heads[HEAD].bits(torch.from_numpy(retriever.backbone.encode_text([clean_text(query.text)])))
    shared = (bits == text).sum(1) if variant == "bits" else np.zeros(len(bits), int)
    rows = np.argsort(-shared, kind="stable")[:k]
    scores = shared[rows] / BITS
    breakdowns = [HashBreakdown(int(shared[r]), float(s)) for r, s in zip(rows, scores)]
    return [SearchResponse(retriever.results(rows, scores, breakdowns))]


def tab(context) -> TabParts:
    def hash_search(text: str, k: float):
        with as_messages():
            response = context.retriever().search(NAME, HashQuery(text), int(k))[0]
        return gallery_items(response.results, context.thumbnails), [r.id for r in response]

    text = gr.Textbox(label="Words to hash", elem_id="hash-text")
    k = gr.Number(value=5, label="Results", elem_id="hash-k")
    button = gr.Button("Hash search", elem_id="hash-search")
    notice = gr.Markdown("", elem_id="hash-notice")
    gallery, ids = results_gallery("hash-gallery"), gr.JSON(elem_id="hash-ids")
    button.click(hash_search, [text, k], [gallery, ids], api_name="hash_search")
    text.submit(hash_search, [text, k], [gallery, ids], **PRIVATE)
    return TabParts(notice, "hq", lambda params, request: {}, outputs=[])


def query_from_args(args: argparse.Namespace) -> HashQuery:
    return HashQuery(clean_text(args.hash_text))


def show(rankings: list[SearchResponse]) -> None:
    print(f"hash search, {BITS} bits")
    for line in result_lines(rankings[-1].results):
        print(line)


MODE = Mode(
    name=NAME, title="Hash", head=HEAD, head_class=lambda: SignHash, head_summary="sign-bit hashing (a toy)",
    variants=("bits", "none"), breakdown=HashBreakdown, parse=HashQuery.parse, search=search,
    untrained=SignHash, store=Store(("bits",), compute, untrained=True), prepare=prepare,
    cli=SearchCli(CliOption(("--hash-text",), {"metavar": "TEXT", "help": "hash search: words to hash"}),
                  query_from_args, show),
    tab=tab, warm_up_query=lambda catalog: HashQuery("a product"),
)
