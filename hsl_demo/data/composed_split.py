"""A composed-retrieval split as every public data set's reader gives it (Fashion-IQ, Shoes,
CIRR, Fashion200k), and the checks the readers share."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import HslDemoError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Triplet:
    reference: str  # image id (Fashion-IQ: ASIN; Shoes: file name)
    captions: tuple[str, ...]  # the modification text(s), as published
    target: str | None  # None where the split's targets are not public (Fashion-IQ test, CIRR test1)
    pairid: int | None = None  # CIRR: the query's id on the test server
    members: tuple[str, ...] = ()  # CIRR: the img_set the query's Recall_subset ranks (reference included)
    also_targets: tuple[str, ...] = ()  # Fashion200k: other images with the target's caption (hits too)

    @property
    def targets(self) -> tuple[str, ...]:
        return () if self.target is None else (self.target, *self.also_targets)


@dataclass
class ComposedSplit:
    name: str  # what a results table calls it: the Fashion-IQ category, or "shoes"
    images: dict[str, Path]  # image id -> file, for every id in the gallery and the triplets
    gallery: list[str]  # the ids searched over, in a fixed order
    triplets: list[Triplet]
    split: str = ""  # the published split it is (val, test1, ...)
    missing: list[str] = field(default_factory=list)  # referenced images not on disk, left out
    dropped: int = 0  # triplets left out because their reference or target image is missing
    image_root: Path | None = None  # the folder image paths are relative to in a conversion


MISSING_SHOWN = 3  # names given in a missing-images message


class NoImagesError(HslDemoError):
    """A split none of whose images is on disk (a conversion leaves it out; an evaluation stops)."""


def keep_present(name: str, split: str, gallery: list[str], triplets: list[Triplet],
                 find, where: str) -> ComposedSplit:
    """The split without the images `find(id)` (a Path or None) cannot find: they leave the
    gallery, and a triplet whose reference or target is among them is dropped and counted.
    `where`: where images were looked for, for the messages."""
    images, missing = {}, []
    for image_id in needed_ids(gallery, triplets):
        path = find(image_id)
        if path is None:
            missing.append(image_id)
        else:
            images[image_id] = path
    if not images:
        raise NoImagesError(f"{name} {split}: none of its {len(missing)} images is on disk ({where})")
    kept = [t for t in triplets if t.reference in images and all(x in images for x in t.targets[:1])]
    if missing:
        log.warning("%s %s: %d of %d images are missing (%s; e.g. %s): left out, with the %d queries that use "
                    "them", name, split, len(missing), len(missing) + len(images), where,
                    ", ".join(missing[:MISSING_SHOWN]), len(triplets) - len(kept))
    if not kept:
        raise HslDemoError(f"{name} {split}: every query uses a missing image ({len(missing)} missing, {where})")
    kept = [replace(t, also_targets=tuple(x for x in t.also_targets if x in images)) for t in kept]
    return ComposedSplit(name, images, [g for g in gallery if g in images], kept, split, missing,
                         len(triplets) - len(kept))


def check_root(root: str | Path, dataset: str, expected: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise HslDemoError(f"{root}: no such folder (a {dataset} root holds {expected})")
    return root


def field_str(record: dict, key: str, where: str) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value:
        raise HslDemoError(f"{where}: missing \"{key}\" (a non-empty string)")
    return value


def needed_ids(gallery: list[str], triplets: list[Triplet]) -> list[str]:
    ids = dict.fromkeys(gallery)
    for t in triplets:
        ids[t.reference] = None
        if t.target is not None:
            ids[t.target] = None
    return list(ids)
