"""How often Describe's region mark lands on the product, not on the backdrop.

    python scripts/region_marks_check.py [--queries FILE] [--n 150]

For the top result of each query (the held-out combinations by default), the mark the app
draws (a cell of the 4x4 region grid) counts as on the product when at least a quarter of
its pixels differ from the photo's backdrop (the median colour of its border). Printed with
the same share for a cell drawn at random and for the backbone's own best cell (the region
most similar to the query's global text embedding), measured on the same photos.
"""

from __future__ import annotations

import argparse
import json
import random

import numpy as np
import torch
from PIL import Image

from hsl_demo.search import Retriever

ON_PRODUCT = 0.25  # share of a cell's pixels that must differ from the backdrop
BACKDROP_DISTANCE = 60  # sum of absolute RGB differences


def foreground(path) -> np.ndarray:
    image = np.asarray(Image.open(path).convert("RGB")).astype(float)
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    return np.abs(image - np.median(border, 0)).sum(-1) > BACKDROP_DISTANCE


def on_product(mask: np.ndarray, cell: tuple[int, int, int]) -> bool:
    row, col, n = cell
    h, w = mask.shape
    side = min(h, w)
    top, left, size = (h - side) / 2, (w - side) / 2, side / n
    part = mask[int(top + row * size):int(top + (row + 1) * size), int(left + col * size):int(left + (col + 1) * size)]
    return part.mean() >= ON_PRODUCT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", default="assets/demo/products/queries.test.heldout.jsonl")
    parser.add_argument("--n", type=int, default=150)
    args = parser.parse_args()
    retriever = Retriever.from_pretrained()
    texts = [json.loads(line)["text"] for line in open(args.queries)][: args.n]
    rng = random.Random(0)
    hits = {"the app's mark (HSL object term)": 0, "a random cell": 0, "backbone: region nearest the text": 0}
    for text in texts:
        top = retriever.search_text(text, k=1)[0]
        mask = foreground(top.image)
        (mark,) = top.marks
        n = mark.cell[2]
        regions, _ = retriever.catalog.region_features(np.array([retriever.catalog.row(top.id)]))
        query = torch.from_numpy(retriever.backbone.encode_text([text]))[0]
        nearest = int((regions[0] @ query).argmax())
        hits["the app's mark (HSL object term)"] += on_product(mask, mark.cell)
        hits["a random cell"] += on_product(mask, (rng.randrange(n), rng.randrange(n), n))
        hits["backbone: region nearest the text"] += on_product(mask, (nearest // n, nearest % n, n))
    print(f"{len(texts)} queries ({args.queries}), top result; share of marks on the product:")
    for name, count in hits.items():
        print(f"  {name}: {count / len(texts):.3f}")


if __name__ == "__main__":
    main()
