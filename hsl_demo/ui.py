"""The Gradio demo (gr.Blocks). For now: the Describe tab, HSL text search with its breakdown."""

from __future__ import annotations

import gradio as gr

from .errors import HslDemoError
from .search import Retriever, SearchResult

EXAMPLES = ["green dotted scarf", "red striped t-shirt", "a backpack in blue with checks", "plain white sneaker"]


def breakdown_table(results: list[SearchResult]) -> dict:
    """One row per result: its final score and each term as "similarity × weight"."""
    headers = ["rank", "title", "final", "global"]
    rows = []
    for r in results:
        lv = r.levels
        terms = {"global": lv["global"]}
        for name, value in lv.items():
            if name.startswith("level"):
                terms.update({f"{name} {g}": v for g, v in value.items()})
        for name in terms:
            if name not in headers:
                headers.append(name)
        rows.append([r.rank, r.title, round(r.score, 4)] + [
            f"{t['similarity']:.3f} × {t['weight']:.2f}" if "weight" in t else f"{t['similarity']:.3f}"
            for t in terms.values()])
    return {"headers": headers, "data": rows}


def build_demo(retriever: Retriever) -> gr.Blocks:
    """The app; `retriever` is loaded once and shared by every session."""

    def describe(text: str, k: float):
        try:
            results = retriever.search_text(text, k=int(k))
        except HslDemoError as e:
            raise gr.Error(str(e), print_exception=False) from None
        gallery = [(str(r.image), f"#{r.rank} {r.title} · {r.score:.3f}") for r in results]
        return gallery, breakdown_table(results)

    with gr.Blocks(title="hsl-demo: product search") as demo:
        gr.Markdown(
            "# Product search\n"
            f"Describe a product. Catalog: **{retriever.catalog.name}** "
            f"({len(retriever.catalog)} items); model: `{retriever.backbone.model_id}`."
        )
        with gr.Row():
            text = gr.Textbox(label="Description", placeholder="e.g. green dotted scarf", scale=4)
            k = gr.Slider(1, 50, value=12, step=1, label="Results", scale=1)
        search = gr.Button("Search", variant="primary")
        gallery = gr.Gallery(label="Results", columns=6, height="auto", object_fit="contain")
        why = gr.Dataframe(label="Why they ranked: similarity × weight per level and granularity",
                           interactive=False, wrap=True)
        gr.Examples(EXAMPLES, inputs=[text])
        search.click(describe, [text, k], [gallery, why], api_name="describe")
        text.submit(describe, [text, k], [gallery, why], api_name=False)
        gr.Markdown(
            f"<small>Device: {retriever.backbone.device.type} · dtype: "
            f"{str(retriever.backbone.dtype).removeprefix('torch.')}</small>"
        )
    return demo
