"""Fashion200k (Han et al., ICCV 2017), read as published, with TIRG's composed queries::

    ROOT/labels/{dress,jacket,pants,skirt,top}_{train,test}_detect_all.txt
        one image per line: PATH <tab> DETECTION_SCORE <tab> CAPTION
    ROOT/<PATH>   e.g. women/dresses/casual_and_day_dresses/51727804/51727804_0.jpeg
    ROOT/test_queries.txt   (TIRG's test queries, optional: "SOURCE_PATH TARGET_PATH" per line)

Image ids are their PATHs. Text-to-image queries are the captions (every image with that
caption is a target). Composed queries follow TIRG (Vo et al., CVPR 2019): two captions that
differ in one word make an attribute change, "replace SOURCE_WORD with TARGET_WORD"; the test
split's are those of test_queries.txt when the file is there, the train split's are every
such caption pair (at most `PAIRS_PER_CAPTION` per source caption). As in TIRG's
test_retrieval.py the source image is removed from its ranking and any image with the target's
caption is a hit. Not copied: TIRG's caption clean-up (".", "?", "&", "*" spelt out as words),
which would put "dotmark" into the modification texts.

tests/dataset_fixtures.py renders a tiny Fashion200k in this layout from the demo products.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

from ..errors import HslDemoError
from .composed_split import ComposedSplit, Triplet, check_root

log = logging.getLogger(__name__)

CATEGORIES = ("dress", "jacket", "pants", "skirt", "top")
SPLITS = ("train", "test")
ALIASES = {"val": "test", "eval": "test"}
TEST_QUERIES = "test_queries.txt"
PAIRS_PER_CAPTION = 3


def read_labels(root: str | Path, split: str) -> dict[str, str]:
    """Image PATH -> caption for every image of `split` that is on disk (label files in
    CATEGORIES order; the first line of a PATH wins)."""
    root = check_root(root, "Fashion200k", "labels/ and the image folders")
    split = ALIASES.get(split, split)
    if split not in SPLITS:
        raise HslDemoError(f"Fashion200k has no split {split!r} (one of train, test)")
    files = [root / "labels" / f"{c}_{split}_detect_all.txt" for c in CATEGORIES]
    if not any(f.is_file() for f in files):
        raise HslDemoError(f"{root / 'labels'}: no {split} label files (*_{split}_detect_all.txt)")
    captions: dict[str, str] = {}
    missing = []
    for path in (f for f in files if f.is_file()):
        lines = _read_lines(path)
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) < 3 or not parts[0].strip() or not parts[2].strip():
                raise HslDemoError(f"{path}: line {n}: expected PATH <tab> SCORE <tab> CAPTION")
            rel, caption = parts[0].strip(), " ".join(parts[2].split())
            if Path(rel).is_absolute() or ".." in Path(rel).parts:
                raise HslDemoError(f"{path}: line {n}: image path {rel!r} leads outside the Fashion200k folder")
            if rel in captions:
                continue
            if (root / rel).is_file():
                captions[rel] = caption
            else:
                missing.append(rel)
    if missing:
        log.warning("Fashion200k %s: %d labelled images are not on disk (e.g. %s); left out", split, len(missing),
                    missing[0])
    if not captions:
        raise HslDemoError(f"Fashion200k {split}: none of the labelled images is on disk below {root}")
    return captions


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise HslDemoError(f"{path}: not UTF-8 text") from None
    except OSError as e:
        raise HslDemoError(f"{path}: unreadable ({e.strerror or e})") from None


def replace_text(source: str, target: str) -> str:
    """TIRG's modification text for two captions: "replace SOURCE_WORD with TARGET_WORD"."""
    source_words, target_words = source.split(), target.split()
    old = next((w for w in source_words if w not in target_words), source_words[-1])
    new = next((w for w in target_words if w not in source_words), target_words[-1])
    return f"replace {old} with {new}"


def one_word_pairs(captions: dict[str, str], seed: int = 0) -> list[tuple[str, str]]:
    """Caption pairs that differ in exactly one word (same words but one, in place), at most
    PAIRS_PER_CAPTION per source caption, drawn with `seed`."""
    by_parent: dict[tuple, set[str]] = {}
    for caption in set(captions.values()):
        words = caption.split()
        for i in range(len(words)):
            by_parent.setdefault((i, *words[:i], *words[i + 1:]), set()).add(caption)
    rng = random.Random(seed)
    pairs = []
    for source in sorted(set(captions.values())):
        words = source.split()
        others = sorted({c for i in range(len(words)) for c in by_parent[(i, *words[:i], *words[i + 1:])]} - {source})
        pairs.extend((source, target) for target in rng.sample(others, min(PAIRS_PER_CAPTION, len(others))))
    return pairs


def load_fashion200k(root: str | Path, split: str, seed: int = 0,
                     captions: dict[str, str] | None = None) -> ComposedSplit:
    """The composed queries of Fashion200k `split` over its images (see the module docstring);
    `captions`: the split's labels when already read."""
    root = Path(root)
    split = ALIASES.get(split, split)
    captions = captions if captions is not None else read_labels(root, split)
    by_caption = same_caption(captions)
    triplets = []
    dropped = 0
    queries = root / TEST_QUERIES
    if split == "test" and queries.is_file():
        for n, line in enumerate(_read_lines(queries), 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2:
                raise HslDemoError(f"{queries}: line {n}: expected SOURCE_PATH TARGET_PATH")
            source, target = parts
            if source in captions and target in captions:
                triplets.append(Triplet(source, (replace_text(captions[source], captions[target]),), target,
                                        also_targets=_others(by_caption, captions[target], target)))
            else:  # an image not on disk: the query is dropped, not the split
                dropped += 1
        if dropped:
            log.warning("Fashion200k test: %d of %d test queries use an image not on disk; left out", dropped,
                        dropped + len(triplets))
    else:
        for source, target in one_word_pairs(captions, seed):
            text = replace_text(source, target)
            triplets.extend(Triplet(by_caption[source][0], (text,), t, also_targets=_others(by_caption, target, t))
                            for t in by_caption[target][:1])
    if not triplets:
        raise HslDemoError(f"Fashion200k {split}: no composed queries (no two captions differ in one word)")
    return ComposedSplit("fashion200k", {p: root / p for p in captions}, list(captions), triplets, split,
                         dropped=dropped, image_root=root)


def _others(by_caption: dict[str, list[str]], caption: str, target: str) -> tuple[str, ...]:
    """TIRG's hits besides the target: every other image with the target's caption."""
    return tuple(p for p in by_caption[caption] if p != target)


def same_caption(captions: dict[str, str]) -> dict[str, list[str]]:
    """Caption -> every image PATH with it (TIRG counts any of them as the target)."""
    by_caption: dict[str, list[str]] = {}
    for path, caption in captions.items():
        by_caption.setdefault(caption, []).append(path)
    return by_caption


def text_queries(captions: dict[str, str]) -> list[dict]:
    """Text-to-image queries of a split (its labels): each caption, with every image that has it
    as a target."""
    return [{"mode": "text", "text": c, "targets": paths} for c, paths in same_caption(captions).items()]
