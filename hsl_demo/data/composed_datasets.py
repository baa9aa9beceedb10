"""Public composed-image-retrieval data sets: reference image + modification text -> target.

Two layouts are read as published (no conversion step):

Fashion-IQ (Wu et al., CVPR 2021)::

    ROOT/captions/cap.{dress,shirt,toptee}.{train,val,test}.json
        [{"candidate": ASIN, "target": ASIN, "captions": [str, str]}, ...]   (test: no "target")
    ROOT/image_splits/split.{dress,shirt,toptee}.{train,val,test}.json   [ASIN, ...]
    ROOT/images/<ASIN>.jpg   (or .png)

  One `ComposedSplit` per category; its gallery is that category's split images. As in the
  original protocol (and CLIP4Cir's validate.py) the reference image stays in the gallery.
  Images may also sit in ROOT/resized_images/ (the start kit's name).

Shoes (Guo et al., NeurIPS 2018, relative captions)::

    ROOT/relative_captions_shoes.json
        [{"ImageName": target, "ReferenceImageName": reference, "RelativeCaption": str}, ...]
    ROOT/train_im_names.txt, ROOT/eval_im_names.txt   (one image name per line)
    ROOT/images/**/<name>   (found by file name at any depth)

  A triplet is in a split when its target is in that split's name list; the gallery is the
  split's name list; the reference stays in it.

Images not on disk are left out with a warning (community copies of Fashion-IQ have gaps): a
triplet whose reference or target is missing is dropped and counted in `ComposedSplit.dropped`,
never the whole split. `PROTOCOLS` says how each data set's papers score a split.

tests/dataset_fixtures.py renders tiny data sets in these exact layouts from the demo products,
with captions that describe the change ("is blue", "has stripes").
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import HslDemoError
from ..fileio import read_json_list
from ..images import IMAGE_SUFFIXES
from .cirr import load_cirr
from .composed_split import ComposedSplit, Triplet, check_root, field_str, keep_present
from .fashion200k import load_fashion200k

log = logging.getLogger(__name__)

FASHIONIQ_CATEGORIES = ("dress", "shirt", "toptee")
FASHIONIQ_SPLITS = ("train", "val", "test")
COMPOSED_DATASETS = ("fashioniq", "shoes", "cirr", "fashion200k")
SHOES_SPLITS = {"train": "train", "eval": "eval", "test": "eval", "val": "eval"}
SHOES_CAPTIONS = "relative_captions_shoes.json"
SHOES_NAME_FILES = {"train": "train_im_names.txt", "eval": "eval_im_names.txt"}


@dataclass(frozen=True)
class Protocol:
    """How a data set's papers score composed retrieval of one split."""

    ks: tuple[int, ...]  # Recall@k reported
    subset_ks: tuple[int, ...] = ()  # CIRR: Recall_subset@k over the query's img_set (reference excluded)
    remove_reference: bool = False  # the reference image is taken out of its own ranking
    follows: str = ""  # whose evaluation code this copies


PROTOCOLS = {
    "fashioniq": Protocol((10, 50), follows="CLIP4Cir validate.py (compute_fiq_val_metrics): per category over "
                          "its split's images, reference kept, average over categories"),
    "shoes": Protocol((1, 10, 50), follows="Guo et al. 2018: over the eval images, reference kept"),
    "cirr": Protocol((1, 5, 10, 50), (1, 2, 3), True,
                     "CIRR / CLIP4Cir validate.py (compute_cirr_val_metrics): over the split's images, reference "
                     "removed; Recall_subset over img_set members"),
    "fashion200k": Protocol((1, 10, 50), (), True, "TIRG test_retrieval.py: over the test images, source image "
                            "removed, any image with the target's caption is a hit"),
}
def join_captions(captions: Sequence[str], rng: random.Random | None = None) -> str:
    """One modification text from several captions: "cap1 and cap2".

    Each caption is stripped of white space and of the stray ".?, " at its ends (as CLIP4Cir
    does), empty ones are dropped. Without `rng` the given order is kept (evaluation); with
    one the order is shuffled (training-time augmentation).
    """
    parts = [" ".join(c.split()).strip(".?, ") for c in captions]
    parts = [p for p in parts if p]
    if rng is not None:
        rng.shuffle(parts)
    return " and ".join(parts)


# ---- Fashion-IQ ------------------------------------------------------------------------------

def load_fashioniq(root: str | Path, split: str,
                   categories: Sequence[str] = FASHIONIQ_CATEGORIES) -> list[ComposedSplit]:
    """One `ComposedSplit` per category of Fashion-IQ `split` (train, val or test)."""
    root = check_root(root, "Fashion-IQ", "captions/, image_splits/ and images/")
    if split not in FASHIONIQ_SPLITS:
        raise HslDemoError(f"Fashion-IQ has no split {split!r} (one of {', '.join(FASHIONIQ_SPLITS)})")
    if not categories:
        raise HslDemoError("no Fashion-IQ categories given")
    out = []
    for cat in categories:
        cap_path = root / "captions" / f"cap.{cat}.{split}.json"
        records = read_json_list(cap_path, "Fashion-IQ captions")
        triplets = []
        for i, r in enumerate(records):
            where = f"{cap_path}: entry {i}"
            if not isinstance(r, dict):
                raise HslDemoError(f"{where}: expected an object with \"candidate\", \"target\", \"captions\"")
            reference = field_str(r, "candidate", where)
            target = field_str(r, "target", where) if (split != "test" or "target" in r) else None
            captions = r.get("captions")
            if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
                raise HslDemoError(f"{where}: \"captions\" must be a list of strings")
            triplets.append(Triplet(reference, tuple(captions), target))
        if not triplets:
            raise HslDemoError(f"{cap_path}: empty split (no triplets)")
        split_path = root / "image_splits" / f"split.{cat}.{split}.json"
        gallery = read_json_list(split_path, "Fashion-IQ image split")
        if not all(isinstance(g, str) and g for g in gallery):
            raise HslDemoError(f"{split_path}: expected a JSON list of image ids (ASIN strings)")
        if not gallery:
            raise HslDemoError(f"{split_path}: empty split (no images)")
        gallery = list(dict.fromkeys(gallery))
        folder = fashioniq_image_folder(root)

        def find(asin: str, folder: Path = folder) -> Path | None:
            return next((p for p in (folder / f"{asin}.jpg", folder / f"{asin}.png") if p.is_file()), None)

        part = keep_present(cat, split, gallery, triplets, find, f"looked for {folder}/<ASIN>.jpg or .png")
        part.image_root = root
        out.append(part)
    return out


FASHIONIQ_IMAGE_FOLDERS = ("images", "resized_images")  # CLIP4Cir's name; the start kit's


def fashioniq_image_folder(root: Path) -> Path:
    """ROOT/images/ or ROOT/resized_images/, whichever is there."""
    for name in FASHIONIQ_IMAGE_FOLDERS:
        if (root / name).is_dir():
            return root / name
    raise HslDemoError(f"{root}: no images/ or resized_images/ folder (Fashion-IQ images go in "
                       "ROOT/images/<ASIN>.jpg)")


# ---- Shoes -----------------------------------------------------------------------------------

def load_shoes(root: str | Path, split: str) -> ComposedSplit:
    """The Shoes relative-captions `split`: train, or eval (also called test or val)."""
    root = check_root(root, "Shoes", f"{SHOES_CAPTIONS}, {', '.join(SHOES_NAME_FILES.values())} and images/")
    if split not in SHOES_SPLITS:
        raise HslDemoError(f"Shoes has no split {split!r} (one of train, eval; test and val mean eval)")
    names_path = root / SHOES_NAME_FILES[SHOES_SPLITS[split]]
    if not names_path.is_file():
        raise HslDemoError(f"{names_path}: no such file (the Shoes {SHOES_SPLITS[split]} image names)")
    gallery = list(dict.fromkeys(ln.strip() for ln in names_path.read_text(encoding="utf-8").splitlines()
                                 if ln.strip()))
    if not gallery:
        raise HslDemoError(f"{names_path}: empty split (no image names)")
    cap_path = root / SHOES_CAPTIONS
    records = read_json_list(cap_path, "Shoes relative captions")
    in_split, triplets = set(gallery), []
    for i, r in enumerate(records):
        where = f"{cap_path}: entry {i}"
        if not isinstance(r, dict):
            raise HslDemoError(f"{where}: expected an object with \"ImageName\", \"ReferenceImageName\", "
                               "\"RelativeCaption\"")
        target = field_str(r, "ImageName", where)
        reference = field_str(r, "ReferenceImageName", where)
        caption = r.get("RelativeCaption")
        if not isinstance(caption, str):
            raise HslDemoError(f"{where}: missing \"RelativeCaption\" (a string)")
        if target in in_split:
            triplets.append(Triplet(reference, (caption,), target))
    if not triplets:
        raise HslDemoError(f"{cap_path}: empty split (no triplet has its target in {names_path.name})")
    images_dir = root / "images"
    if not images_dir.is_dir():
        raise HslDemoError(f"{images_dir}: no such folder (Shoes images go anywhere below ROOT/images/)")
    by_name: dict[str, Path] = {}
    duplicates = []
    for p in sorted(images_dir.rglob("*")):
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
            if p.name in by_name:
                duplicates.append(p.name)
            else:
                by_name[p.name] = p
    if duplicates:
        log.warning("%s: %d image names occur in more than one folder (e.g. %s); the first one found is used",
                    images_dir, len(duplicates), duplicates[0])
    part = keep_present("shoes", SHOES_SPLITS[split], gallery, triplets, by_name.get,
                        f"looked for by name anywhere below {images_dir}")
    part.image_root = root
    return part


def load_composed_dataset(fmt: str, root: str | Path, split: str | None = None, images: str | Path | None = None,
                          targets: bool = True) -> list[ComposedSplit]:
    """The splits of a data set: fashioniq (one per category, default split val), shoes (one,
    default split eval), cirr (default val; `images`: where its image folders are, when not
    in ROOT) or fashion200k (default test). With `targets`, a split without public targets is
    an error."""
    if images is not None and fmt != "cirr":
        raise HslDemoError("--images goes with CIRR (its images are often kept apart from the annotations)")
    if fmt == "fashioniq":
        splits = load_fashioniq(root, split or "val")
    elif fmt == "shoes":
        splits = [load_shoes(root, split or "eval")]
    elif fmt == "cirr":
        splits = [load_cirr(root, split or "val", images)]
    elif fmt == "fashion200k":
        splits = [load_fashion200k(root, split or "test")]
    else:
        raise HslDemoError(f"unknown data set {fmt!r} (one of {', '.join(COMPOSED_DATASETS)})")
    if targets and any(t.target is None for s in splits for t in s.triplets):
        raise HslDemoError(f"{fmt} {split}: the targets of this split are not public; evaluate on val"
                           + (" or write the test server's files with --submission DIR" if fmt == "cirr" else ""))
    return splits
