"""Thumbnails with the matched regions marked: where a mark lands, what is drawn, and that the
folder only ever loses files this object wrote."""

from PIL import Image

from hsl_demo.results import RegionMark
from hsl_demo.thumbnails import MARK_COLOURS, Thumbnails, draw_marks, mark_box


def photo(path, size=(400, 200), colour=(200, 200, 200)):
    Image.new("RGB", size, colour).save(path)
    return path


def test_a_grid_cell_lies_on_the_centred_square_the_backbone_saw():
    # a 400x200 photo: the backbone saw its centred 200x200 square, cut in 4x4 cells of 50 px
    assert mark_box(RegionMark("x", cell=(0, 0, 4)), (400, 200), (400, 200)) == (100, 0, 150, 50)
    assert mark_box(RegionMark("x", cell=(3, 3, 4)), (400, 200), (400, 200)) == (250, 150, 300, 200)
    # the same cell on a 256x128 thumbnail of it
    assert mark_box(RegionMark("x", cell=(0, 0, 4)), (256, 128), (400, 200)) == (64, 0, 96, 32)


def test_a_box_is_scaled_from_the_photo_to_the_thumbnail():
    assert mark_box(RegionMark("x", box=(40, 20, 200, 100)), (200, 100), (400, 200)) == (20, 10, 100, 50)


def test_marks_are_drawn_in_their_colours_with_labels(tmp_path):
    thumb = Image.new("RGB", (256, 256), (255, 255, 255))
    marks = [RegionMark("1. a red handbag", box=(10, 60, 120, 200)), RegionMark("2. white sneakers", cell=(3, 3, 4))]
    out = draw_marks(thumb, (256, 256), marks)
    colours = {c for _, c in out.getcolors(256 * 256)}
    rgb = [tuple(int(c[i:i + 2], 16) for i in (1, 3, 5)) for c in MARK_COLOURS[:2]]
    assert set(rgb) <= colours and (0, 0, 0) in colours  # both boxes and their tags' text
    assert thumb.getcolors() == [(256 * 256, (255, 255, 255))]  # the input is left alone


def test_marked_thumbnails_are_made_once_and_the_oldest_removed(tmp_path):
    images = [photo(tmp_path / f"p{i}.png") for i in range(3)]
    folder = tmp_path / "thumbs"
    thumbs = Thumbnails(folder, max_marked=2)
    planted = folder / "not-ours.webp"
    planted.write_bytes(b"x")
    mark = [RegionMark("object match", cell=(1, 2, 4))]
    first = thumbs.marked(images[0], mark)
    assert thumbs.marked(images[0], mark) == first  # cached: the same file
    plain = thumbs.of(images[0])
    assert plain != first and Image.open(first).size == Image.open(plain).size == (256, 128)
    assert thumbs.marked(images[0], []) == plain
    later = [thumbs.marked(image, mark) for image in images[1:]]
    assert not os_exists(first) and all(os_exists(p) for p in later)  # the oldest marked one went
    assert planted.exists() and os_exists(plain)  # never a file it did not write, nor a plain thumbnail


def os_exists(path: str) -> bool:
    from pathlib import Path

    return Path(path).is_file()
