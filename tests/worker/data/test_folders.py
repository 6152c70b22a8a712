"""A folder or .zip of pictures as users have them (gantry.worker.data.folders and files): alpha on a
chosen background, grayscale, odd sizes cropped or padded, classes from sub-folders, captions from a
CSV or JSON-lines sidecar, and bad files skipped with a warning or refused, naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gantry.jobs.errors import InvalidInput
from gantry.worker.data import ImageData, load_dataset
from gantry.worker.data.folders import ReadOptions
from gantry.worker.data.limits import DataLimits
from tests.pictures import BAD, BLUE, GOOD, MAX_PIXELS, RED, make_folder, make_zip, picture_files

LIMITS = DataLimits(max_pixels=MAX_PIXELS)
WHITE, BLACK = (255, 255, 255), (0, 0, 0)


def near(pixels: np.ndarray, colour: tuple[int, ...]) -> bool:
    """Within a little of `colour` (Lanczos resizing rings a few levels over and under an edge)."""
    return bool(np.abs(pixels.astype(int) - colour).max() <= 16)


def load(path: Path, size: int = 8, **options: object) -> ImageData:
    data = load_dataset(str(path), image_size=size, limits=LIMITS, options=ReadOptions(**options))  # type: ignore[arg-type]
    assert isinstance(data, ImageData)
    return data


def test_bad_files_are_skipped_and_named_and_the_rest_load(tmp_path: Path) -> None:
    data = load(make_folder(tmp_path / "pets"))
    assert data.images.shape == (len(GOOD), 8, 8, 3)  # one colour picture makes them all RGB
    (skipped,) = [w for w in data.warnings if w.startswith("skipped")]
    assert skipped.startswith(f"skipped {len(BAD)} bad files (bad_files=skip)")
    for name, problem in BAD.items():
        assert f"{tmp_path / 'pets' / name}: {problem}" in skipped


def test_refuse_fails_on_the_first_bad_file_naming_it(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "pets")
    with pytest.raises(InvalidInput) as info:
        load(root, bad_files="refuse")
    first = sorted(BAD)[0]
    assert info.value.field == "dataset"
    assert f"{root / first}: {BAD[first]}" in info.value.message


def test_transparent_pixels_take_the_chosen_background(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "pets", captions=None)
    names = sorted(GOOD)
    white = load(root, 8, fit="pad").images[names.index("cats/rgba.png")]
    black = load(root, 8, fit="pad", background=(0, 0, 0)).images[names.index("cats/rgba.png")]
    # 20x12 padded to 20x20: the left half is transparent, the right half red.
    assert near(white[4, 1], WHITE) and near(black[4, 1], BLACK) and near(white[4, 6], RED)
    # Palette transparency too: the transparent index's green is never seen.
    palette = load(root, 8).images[names.index("dogs/palette.png")]
    assert near(palette[4, 1], WHITE)
    assert not ((palette[..., 1] > 200) & (palette[..., 0] < 50)).any()


def test_crop_or_pad_a_picture_that_is_not_square(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "pets", captions=None)
    wide = sorted(GOOD).index("cats/wide.webp")  # 30x10 blue
    cropped = load(root, 8, fit="crop").images[wide]
    padded = load(root, 8, fit="pad", background=(0, 0, 0)).images[wide]
    assert near(cropped, BLUE)  # the centre 10x10: blue throughout
    assert near(padded[0], BLACK) and near(padded[-1], BLACK) and near(padded[4], BLUE)  # bands above, below


def test_grayscale_pictures_alone_stay_one_channel(tmp_path: Path) -> None:
    every = picture_files()
    files = {"a/gray.jpg": every["cats/gray.jpg"], "b/la.png": every["dogs/la.png"]}
    data = load(make_folder(tmp_path / "g", captions=None, files=files), 8)
    assert data.images.shape == (2, 8, 8, 1)
    # LA: the transparent top half on white, the opaque bottom half grey (100).
    assert near(data.images[1, 0, 4], (255,)) and near(data.images[1, 7, 4], (100,))


def test_labels_from_sub_folders_keep_their_names(tmp_path: Path) -> None:
    data = load(make_folder(tmp_path / "pets"), labels=True)
    assert data.attributes == {"folder": ["cats", "dogs"]}
    kept = [name for name in GOOD if name != "top.png"]
    assert data.labels is not None and data.labels.shape == (len(kept), 1)
    assert data.labels[:, 0].tolist() == [0 if name.startswith("cats/") else 1 for name in kept]
    assert "top.png: not in a sub-folder, so it has no class (labels=folder)" in data.warnings[0]


def test_captions_from_a_csv_by_path_or_bare_name(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "pets")
    plain = load(root)
    assert plain.captions is None  # dogs/tall.png has none, and this model does not need them
    data = load(root, need_captions=True)
    assert data.captions == [
        "a grey cat",
        "a red cat, half see-through",  # by its bare name, rgba.png
        "a wide blue cat",
        "a grey dog, see-through",
        "a red dog on a palette",
        "a blue thing at the top",
    ]
    assert any("dogs/tall.png: no caption in captions.csv" in w for w in data.warnings)
    assert any("captions.csv has captions for 1 files that are not pictures in it (cats/gone.png)" in w
               for w in data.warnings)  # fmt: skip


def test_a_zipped_folder_with_json_lines_captions_and_labels(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "pets.zip")
    data = load(path, labels=True, need_captions=True)
    assert data.attributes == {"folder": ["cats", "dogs"]}  # the zip's top folder "pets" is not a class
    assert data.captions is not None and data.captions[0] == "a grey cat" and len(data.captions) == 5
    assert f"{path}: pets/dogs/tall.png: no caption in captions.jsonl" in data.warnings[0]


def test_a_named_captions_file_and_one_that_is_missing(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "pets", captions="names.jsonl")
    assert load(root, need_captions=True, captions_file="names.jsonl").captions is not None
    with pytest.raises(InvalidInput, match=r"no captions: put captions\.csv or captions\.jsonl"):
        load(root, need_captions=True)
    with pytest.raises(InvalidInput, match=r"no captions file other\.csv inside"):
        load(root, captions_file="other.csv")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"file,caption\njust-a-name\n", "captions.csv line 2: expected file,caption"),
        (b'{"file": "top.png", "caption": "x"}\n{nope\n', "captions.csv line 2 is not JSON"),
        (b"\xff\xfe bad", "captions.csv is not UTF-8 text"),
    ],
)
def test_a_malformed_captions_file_is_refused_naming_the_line(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    root = make_folder(tmp_path / "pets", captions=None)
    (root / "captions.csv").write_bytes(content)
    with pytest.raises(InvalidInput, match=expected):
        load(root)
