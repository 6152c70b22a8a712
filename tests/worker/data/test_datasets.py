"""Data sets: what a trainer (and a user looking at the images) gets from each source."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from gantry.jobs.datasets import BUILTIN_DATASETS
from gantry.jobs.errors import InvalidInput
from gantry.worker.data import BUILTIN, ImageData, load_dataset, shapes
from gantry.worker.data import digits as digits_module


def test_builtin_names_are_the_ones_the_api_accepts() -> None:
    assert set(BUILTIN) == set(BUILTIN_DATASETS)


# --- shapes -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample64() -> ImageData:
    return shapes.generate(64, seed=7, count=600)


def _background(data: ImageData) -> np.ndarray:
    return np.asarray(list(shapes.BACKGROUNDS.values()), dtype=np.uint8)[data.labels[:, 4]]


def _foreground_mask(data: ImageData) -> np.ndarray:
    """Pixels at least half way from the background colour to the shape's colour (N x H x W)."""
    diff = np.abs(data.images.astype(np.int32) - _background(data)[:, None, None, :].astype(np.int32)).max(-1)
    return diff >= diff.max(axis=(1, 2), keepdims=True) / 2


def test_shapes_default_sizes_and_layout() -> None:
    train = load_dataset("shapes", image_size=8)
    test = load_dataset("shapes", image_size=16, split="test")
    assert train.images.shape == (20_000, 8, 8, 3) and train.images.dtype == np.uint8
    assert test.images.shape == (2_000, 16, 16, 3) and test.channels == 3
    assert train.labels is not None and train.labels.shape == (20_000, 5) and train.labels.dtype == np.int64
    assert train.attributes == shapes.ATTRIBUTES
    assert list(train.attributes) == ["shape", "colour", "size", "position", "background"]
    for column, values in enumerate(train.attributes.values()):
        assert set(np.unique(train.labels[:, column])) == set(range(len(values)))
    assert train.captions is not None and len(train.captions) == 20_000


def test_shapes_colour_and_background_labels_match_the_pixels(sample64: ImageData) -> None:
    colours = np.asarray(list(shapes.COLOURS.values()))
    packed = sample64.images.astype(np.int64) @ np.array([1 << 16, 1 << 8, 1])  # N x H x W, one int per RGB
    for image, label, bg in zip(packed, sample64.labels, _background(sample64), strict=True):
        values, counts = np.unique(image, return_counts=True)
        first, second = values[np.argsort(-counts)[:2]]
        assert first == int(bg[0]) << 16 | int(bg[1]) << 8 | int(bg[2])  # the background covers most
        # The shape is solid: its most common colour is exactly its palette colour.
        rgb = np.array([second >> 16, second >> 8 & 255, second & 255])
        assert np.argmin(((colours - rgb) ** 2).sum(-1)) == label[1]
        assert (colours[label[1]] == rgb).all()


def test_shapes_position_label_matches_the_centroid_third(sample64: ImageData) -> None:
    mask = _foreground_mask(sample64)
    ys, xs = np.mgrid[0:64, 0:64] + 0.5
    area = mask.sum((1, 2))
    cy = (mask * ys).sum((1, 2)) / area
    cx = (mask * xs).sum((1, 2)) / area
    cell = (cy // (64 / 3)).astype(int) * 3 + (cx // (64 / 3)).astype(int)
    np.testing.assert_array_equal(cell, sample64.labels[:, 3])


def test_shapes_large_shapes_cover_more_pixels_than_small_ones(sample64: ImageData) -> None:
    area = _foreground_mask(sample64).sum((1, 2))
    shape, size = sample64.labels[:, 0], sample64.labels[:, 2]
    for k in range(len(shapes.SHAPES)):
        small, large = area[(shape == k) & (size == 0)], area[(shape == k) & (size == 1)]
        assert small.max() * 1.5 < large.min()


def test_shapes_shape_label_matches_the_silhouette(sample64: ImageData) -> None:
    # Ideal silhouettes in the shape's bounding box, coordinates u (right), v (down) in [-1, 1].
    ideal = {
        "circle": lambda u, v: u * u + v * v <= 1,
        "square": lambda u, v: np.ones_like(u, dtype=bool),
        "triangle": lambda u, v: np.abs(u) <= (v + 1) / 2,  # apex up
        "cross": lambda u, v: (np.abs(u) <= 0.36) | (np.abs(v) <= 0.36),
    }
    predicted = []
    for mask in _foreground_mask(sample64):
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        box = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        v, u = np.meshgrid(*((np.arange(n) + 0.5) / n * 2 - 1 for n in box.shape), indexing="ij")
        iou = [(box & ideal[s](u, v)).sum() / (box | ideal[s](u, v)).sum() for s in shapes.SHAPES]
        predicted.append(int(np.argmax(iou)))
    np.testing.assert_array_equal(predicted, sample64.labels[:, 0])


def test_shapes_captions_name_colour_shape_and_size(sample64: ImageData) -> None:
    names = sample64.attributes
    assert sample64.captions is not None and len(set(sample64.captions)) > len(sample64.captions) // 2
    short = 0  # "a red circle": the one phrasing that leaves size, position and background free
    for text, (shape, colour, size, _, _) in zip(sample64.captions, sample64.labels, strict=True):
        assert names["colour"][colour] in text
        assert any(word in text for word in shapes.SHAPE_WORDS[names["shape"][shape]])
        if text.split()[:2] in (["a", names["colour"][colour]], ["an", names["colour"][colour]]):
            short += 1
            continue
        assert any(word in re.findall(r"[a-z]+", text) for word in shapes.SIZE_WORDS[names["size"][size]])
    assert 0 < short < len(sample64.captions) // 3
    # Several phrasings are in use, including the plain one.
    assert sum(text.startswith("a ") for text in sample64.captions) < len(sample64.captions) * 0.6
    assert (
        shapes.caption("circle", "red", "small", "top left", "black") == "a small red circle in the top left"
    )


def test_shapes_knows_which_attributes_a_caption_names() -> None:
    names = list(shapes.ATTRIBUTES)  # shape, colour, size, position, background
    named = shapes.named_attributes(
        [
            "a red circle",
            "a small red circle in the top left",
            "top-left: little red disc",
            "large magenta square, middle right, grey background",
            "there is a big blue plus sign at the bottom centre",
        ],
        names,
    )
    assert named.tolist() == [
        [True, True, False, False, False],
        [True, True, True, True, False],
        [True, True, True, True, False],
        [True, True, True, True, True],
        [True, True, True, True, False],
    ]
    # Over a whole split: every caption names shape and colour; the short phrasing (one in seven)
    # leaves size and position out together.
    data = shapes.generate(8, seed=0, count=700)
    assert data.captions is not None
    every = shapes.named_attributes(data.captions, names)
    assert every[:, :2].all() and (every[:, 2] == every[:, 3]).all()
    assert 0.1 < 1 - every[:, 2].mean() < 0.2
    assert set(shapes.LEFT_FREE) == {
        name for name, column in zip(names, every.T, strict=True) if not column.all()
    }


def test_value_phrases_name_their_attribute_and_only_it() -> None:
    """code_words reads a code as these words: each must name its own attribute and no other."""
    names = list(shapes.LEFT_FREE)
    for k, name in enumerate(names):
        phrases = [shapes.value_phrase(name, value) for value in shapes.ATTRIBUTES[name]]
        named = shapes.named_attributes(phrases, names)
        assert named[:, k].all() and not np.delete(named, k, axis=1).any(), phrases
        assert len(set(phrases)) == len(phrases)
    assert shapes.value_phrase("position", "top left") == "in the top left"
    with pytest.raises(ValueError, match="colour"):
        shapes.value_phrase("colour", "red")


def test_held_out_combinations_are_only_in_test() -> None:
    train = shapes.generate(8, seed=3)
    test = shapes.generate(8, seed=3, split="test")
    shape_names, colour_names = shapes.ATTRIBUTES["shape"], shapes.ATTRIBUTES["colour"]

    def pairs(data: ImageData) -> set[tuple[str, str]]:
        return {(colour_names[c], shape_names[s]) for s, c in data.labels[:, :2].tolist()}

    held_out = set(shapes.HELD_OUT_COMBINATIONS)
    assert len(held_out) >= 3
    assert not pairs(train) & held_out
    assert held_out <= pairs(test)
    # Each colour and each shape is still seen in training, only not together.
    assert {c for c, _ in pairs(train)} == set(colour_names) and {s for _, s in pairs(train)} == set(
        shape_names
    )
    for text in train.captions or []:
        assert not any(f"{c} {w}" in text for c, s in held_out for w in shapes.SHAPE_WORDS[s])


def test_shapes_are_deterministic_per_seed_and_split() -> None:
    a = shapes.generate(32, seed=5, count=300)
    b = shapes.generate(32, seed=5, count=300)
    assert a.images.tobytes() == b.images.tobytes() and a.captions == b.captions
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.images.tobytes() != shapes.generate(32, seed=6, count=300).images.tobytes()
    assert a.images.tobytes() != shapes.generate(32, seed=5, count=300, split="test").images.tobytes()


def test_render_image_draws_the_named_attributes() -> None:
    image = shapes.render_image("square", "blue", "large", "bottom right", "grey", image_size=32)
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    assert (image[0, 0] == shapes.BACKGROUNDS["grey"]).all()
    blue = (image == shapes.COLOURS["blue"]).all(-1)
    rows, cols = np.nonzero(blue)
    assert rows.min() > 32 * 2 / 3 - 6 and cols.min() > 32 * 2 / 3 - 6  # in the bottom-right cell
    assert blue.sum() > 64  # large: more than 8x8 solid pixels
    with pytest.raises(ValueError, match="colour 'purple'"):
        shapes.render_image("square", "purple", "large", "centre")


# --- digits -----------------------------------------------------------------------------------------


def test_digits_images_labels_and_fixed_split() -> None:
    train = load_dataset("digits", image_size=32)
    test = load_dataset("digits", image_size=32, split="test", seed=9)
    assert train.images.shape == (1438, 32, 32, 1) and test.images.shape == (359, 32, 32, 1)
    assert train.images.dtype == np.uint8 and train.channels == 1
    assert train.images.min() == 0 and train.images.max() == 255
    # Ink is bright on a dark background, as in scikit-learn (the corners are background).
    assert train.images[:, :4, :4].mean() < 10 < train.images.mean()
    for data in (train, test):
        assert data.labels is not None and data.labels.dtype == np.int64
        assert set(np.unique(data.labels)) == set(range(10))
    # The split partitions the 1,797 digits and does not depend on the seed.
    raw_train = digits_module.load(8, seed=0)
    raw_test = digits_module.load(8, seed=123, split="test")
    everything = load_digits()
    together = sorted(im.tobytes() for im in np.concatenate([raw_train.images, raw_test.images]))
    expected = np.rint(everything.images * 255 / 16).astype(np.uint8)[..., None]
    assert together == sorted(im.tobytes() for im in expected)
    assert load_dataset("digits", image_size=32, seed=4).images.tobytes() == train.images.tobytes()


# --- user data --------------------------------------------------------------------------------------


def _write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_npz_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 16, 16, 3), dtype=np.uint8)
    labels = np.arange(10, dtype=np.int32)
    captions = np.array([f"picture {i}" for i in range(10)])
    path = tmp_path / "data.npz"
    np.savez(path, images=images, labels=labels, captions=captions)

    data = load_dataset(str(path), image_size=16)
    np.testing.assert_array_equal(data.images, images)
    np.testing.assert_array_equal(data.labels, labels)
    assert data.labels is not None and data.labels.dtype == np.int64
    assert data.captions == [f"picture {i}" for i in range(10)]
    assert load_dataset(str(path), image_size=8).images.shape == (10, 8, 8, 3)

    gray = tmp_path / "gray.npz"
    np.savez(gray, images=images[..., 0])  # N x H x W
    assert load_dataset(str(gray), image_size=16).images.shape == (10, 16, 16, 1)


def test_folder_round_trip_sorted_recursive_and_grayscale(tmp_path: Path) -> None:
    root = tmp_path / "faces"
    values = [10, 60, 110, 160, 210]
    names = ["b/2.png", "a.png", "b/1.PNG", "c/d/0.bmp", "z.png"]
    for value, name in zip(values, names, strict=True):
        _write_png(root / name, np.full((12, 12), value, dtype=np.uint8))
    (root / "notes.txt").write_text("not an image, ignored")
    _write_png(root / ".hidden" / "x.png", np.zeros((12, 12), dtype=np.uint8))

    data = load_dataset(str(root), image_size=12)
    assert data.images.shape == (5, 12, 12, 1)
    by_name = dict(zip(names, values, strict=True))
    expected = [by_name[n] for n in sorted(names)]  # a.png, b/1.PNG, b/2.png, c/d/0.bmp, z.png
    assert data.images[:, 0, 0, 0].tolist() == expected
    assert data.labels is None and data.captions is None

    # One colour image makes the whole data set RGB.
    _write_png(root / "colour.png", np.zeros((12, 12, 3), dtype=np.uint8))
    assert load_dataset(str(root), image_size=12).images.shape == (6, 12, 12, 3)


def test_images_are_centre_cropped_and_resized(tmp_path: Path) -> None:
    wide = np.zeros((20, 40, 3), dtype=np.uint8)
    wide[:, :10] = (255, 0, 0)  # red margins left and right of a green centre square
    wide[:, 10:30] = (0, 255, 0)
    wide[:, 30:] = (255, 0, 0)
    _write_png(tmp_path / "pics" / "wide.png", wide)
    image = load_dataset(str(tmp_path / "pics"), image_size=8).images[0]
    assert image.shape == (8, 8, 3)
    assert image[..., 1].min() > 250 and image[..., 0].max() < 5


def test_zip_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "images.zip"
    rng = np.random.default_rng(1)
    arrays = {f"set/{i}.png": rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for i in (3, 1, 2)}
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("set/", "")
        archive.writestr("__MACOSX/set/._1.png", b"resource fork")
        archive.writestr("readme.md", "hello")
        for name, array in arrays.items():
            png = tmp_path / "tmp.png"
            Image.fromarray(array).save(png)
            archive.write(png, name)
    data = load_dataset(str(path), image_size=16)
    np.testing.assert_array_equal(data.images, np.stack([arrays[f"set/{i}.png"] for i in (1, 2, 3)]))


def _npz(tmp_path: Path, **arrays: np.ndarray) -> Path:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def _zip_with_garbage(tmp_path: Path) -> Path:
    path = tmp_path / "bad.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("ok/broken.jpg", b"this is not a jpeg")
    return path


def _folder_with_garbage(tmp_path: Path) -> Path:
    # Nothing but bad files: nothing left to train on once they are skipped (tests/worker/data/
    # test_folders.py has the mixed cases).
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "broken.png").write_bytes(b"\x89PNG but not really")
    return tmp_path / "imgs"


def _empty_folder(tmp_path: Path) -> Path:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "labels.csv").write_text("a,b\n")
    return tmp_path / "empty"


def _file(tmp_path: Path, name: str, content: bytes) -> Path:
    (tmp_path / name).write_bytes(content)
    return tmp_path / name


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda t: t / "missing", "no such file or folder"),
        (_empty_folder, "no images inside"),
        (_folder_with_garbage, "broken.png: not a readable image"),
        (_zip_with_garbage, "ok/broken.jpg: not a readable image"),
        (lambda t: _file(t, "junk.zip", b"PK not a zip"), "not a readable .zip"),
        (lambda t: _file(t, "junk.npz", b"nope"), "not a readable .npz"),
        (lambda t: _file(t, "table.csv", b"a,b"), "not a folder, .zip or .npz"),
        (lambda t: _file(t, "photo.png", b"\x89PNG"), "a single image; give a folder or .zip"),
        (lambda t: _npz(t, pictures=np.zeros((2, 8, 8, 3), np.uint8)), "no 'images' array (found pictures)"),
        (lambda t: _npz(t, images=np.zeros((2, 8, 8, 3), np.float32)), "images are float32; expected uint8"),
        (
            lambda t: _npz(t, images=np.zeros((2, 8, 8, 4), np.uint8)),
            "expected N x H x W x C with C = 1 or 3",
        ),
        (lambda t: _npz(t, images=np.zeros((0, 8, 8, 3), np.uint8)), "no images inside"),
        (
            lambda t: _npz(t, images=np.zeros((2, 8, 8, 3), np.uint8), labels=np.zeros(3, np.int64)),
            "labels are int64 (3,)",
        ),
        (
            lambda t: _npz(
                t, images=np.zeros((2, 8, 8, 3), np.uint8), captions=np.array(["a", None], dtype=object)
            ),
            "cannot read 'captions' without pickle",
        ),
    ],
)
def test_user_data_errors_name_the_path_and_the_problem(tmp_path: Path, make, expected: str) -> None:  # type: ignore[no-untyped-def]
    path = make(tmp_path)
    with pytest.raises(InvalidInput) as info:
        load_dataset(str(path), image_size=8)
    assert info.value.field == "dataset"
    assert str(path) in info.value.message and expected in info.value.message
