"""How often Describe's region mark lands on the product, not on the backdrop or a prop.

    python scripts/region_marks_check.py [--queries FILE] [--n 150] [--model M --catalog C] [--scenes-only]

For the top result of each query (the held-out combinations by default), the mark the app
draws (a cell of the region grid) counts as on the product:
- for a photo with context (its metadata has the product's `box`: `make-demo-catalog
  --scenes N`), when at least half of the cell lies inside that box;
- for a studio shot, when at least a quarter of its pixels differ from the photo's backdrop
  (the median colour of its border).
Printed with the same share for a cell drawn at random and for the backbone's own best cell
(the region most similar to the query's global text embedding), measured on the same photos.
`--scenes-only` keeps the queries whose top result is a photo with context (looking deeper
into the ranking for one, up to k = 20).
"""

from __future__ import annotations

import argparse
import json
import random

import numpy as np
import torch
from PIL import Image

from hsl_demo.search import Retriever

ON_PRODUCT = 0.25  # share of a studio cell's pixels that must differ from the backdrop
IN_BOX = 0.5  # share of a scene cell that must lie inside the product's box
BACKDROP_DISTANCE = 60  # sum of absolute RGB differences


def foreground(path) -> np.ndarray:
    image = np.asarray(Image.open(path).convert("RGB")).astype(float)
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    return np.abs(image - np.median(border, 0)).sum(-1) > BACKDROP_DISTANCE


def cell_box(shape: tuple[int, int], cell: tuple[int, int, int]) -> tuple[float, float, float, float]:
    """A grid cell in pixels: the backbone saw the centred square of the photo."""
    row, col, n = cell
    h, w = shape
    side = min(h, w)
    top, left, size = (h - side) / 2, (w - side) / 2, side / n
    return left + col * size, top + row * size, left + (col + 1) * size, top + (row + 1) * size


def on_product(photo, record: dict, cell: tuple[int, int, int]) -> bool:
    if "box" in record:  # a scene: the cell against the product's box
        x0, y0, x1, y1 = cell_box(photo.shape[:2], cell)
        bx0, by0, bx1, by1 = record["box"]
        inside = max(0.0, min(x1, bx1) - max(x0, bx0)) * max(0.0, min(y1, by1) - max(y0, by0))
        return inside >= IN_BOX * (x1 - x0) * (y1 - y0)
    x0, y0, x1, y1 = (int(v) for v in cell_box(photo.shape[:2], cell))
    return photo[y0:y1, x0:x1].mean() >= ON_PRODUCT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", default="assets/demo/products/queries.test.heldout.jsonl")
    parser.add_argument("--n", type=int, default=150)
    parser.add_argument("--model", default=None, help="model folder (default: the embedded one)")
    parser.add_argument("--catalog", default=None, help="catalog folder (default: the demo products)")
    parser.add_argument("--scenes-only", action="store_true", help="only results that are photos with context")
    args = parser.parse_args()
    retriever = Retriever.from_pretrained(args.model, args.catalog)
    texts = [json.loads(line)["text"] for line in open(args.queries)][: args.n]
    rng = random.Random(0)
    hits = {"the app's mark (HSL object term)": 0, "a random cell": 0, "backbone: region nearest the text": 0}
    counted = 0
    for text in texts:
        results = retriever.search_text(text, k=20 if args.scenes_only else 1).results
        if args.scenes_only:
            results = [r for r in results if r.metadata.get("scene")]
        if not results or not results[0].marks:
            continue
        top, counted = results[0], counted + 1
        record = retriever.catalog.items[retriever.catalog.row(top.id)]
        photo = (np.zeros(Image.open(top.image).size[::-1]) if "box" in record else foreground(top.image))
        (mark,) = top.marks
        n = mark.cell[2]
        regions, _ = retriever.catalog.region_features(np.array([retriever.catalog.row(top.id)]))
        query = torch.from_numpy(retriever.backbone.encode_text([text]))[0]
        nearest = int((regions[0] @ query).argmax())
        hits["the app's mark (HSL object term)"] += on_product(photo, record, mark.cell)
        hits["a random cell"] += on_product(photo, record, (rng.randrange(n), rng.randrange(n), n))
        hits["backbone: region nearest the text"] += on_product(photo, record, (nearest // n, nearest % n, n))
    print(f"{counted} queries ({args.queries}{', scenes only' if args.scenes_only else ''}), top result; "
          "share of marks on the product:")
    for name, count in hits.items():
        print(f"  {name}: {count / max(counted, 1):.3f}")


if __name__ == "__main__":
    main()
