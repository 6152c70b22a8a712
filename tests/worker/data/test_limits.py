"""Data sets are read within limits that hold before the memory is spent (gantry.worker.data.limits):
pixels per image in every loader, files per data set, bytes per file or .zip member and in all."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gantry.api.service import Service
from gantry.jobs.errors import InvalidInput
from gantry.jobs.settings import Settings
from gantry.worker.data import load_dataset
from gantry.worker.data.limits import ByteBudget, DataLimitExceeded, DataLimits, read_capped


def _png(side: int, value: int = 128) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((side, side, 3), value, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _folder(root: Path, count: int, side: int = 16) -> Path:
    root.mkdir(parents=True)
    for i in range(count):
        (root / f"{i:03d}.png").write_bytes(_png(side, i))
    return root


def _zip(path: Path, count: int, side: int = 16) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(count):
            archive.writestr(f"set/{i:03d}.png", _png(side, i))
    return path


def _npz(path: Path, count: int, side: int = 16) -> Path:
    np.savez(path, images=np.zeros((count, side, side, 3), dtype=np.uint8))
    return path


# --- pixels per image: every loader -------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "full_size", "named"),
    [
        (lambda t: _folder(t / "pics", 3, side=40), False, "000.png"),
        (lambda t: _folder(t / "pics", 3, side=40), True, "000.png"),
        (lambda t: _zip(t / "pics.zip", 3, side=40), False, "set/000.png"),
        (lambda t: _zip(t / "pics.zip", 3, side=40), True, "set/000.png"),
        (lambda t: _npz(t / "pics.npz", 3, side=40), False, "'images'"),
    ],
    ids=["folder", "folder-full-size", "zip", "zip-full-size", "npz"],
)
def test_an_image_over_the_pixel_limit_is_refused_by_every_loader(
    tmp_path, monkeypatch, make, full_size, named
) -> None:
    # 40x40 = 1,600 pixels against a limit of 1,000: a 169-megapixel PNG against 64 million, small.
    monkeypatch.setenv("GANTRY_MAX_INPUT_PIXELS", "1000")
    path = make(tmp_path)
    with pytest.raises(DataLimitExceeded) as info:
        load_dataset(str(path), image_size=16, full_size=full_size)
    assert isinstance(info.value, InvalidInput) and info.value.field == "dataset"
    message = str(info.value)
    assert str(path) in message and named in message
    assert "40x40 = 1,600 pixels is over the limit of 1,000 (GANTRY_MAX_INPUT_PIXELS)" in message
    monkeypatch.setenv("GANTRY_MAX_INPUT_PIXELS", "1600")
    assert len(load_dataset(str(path), image_size=16, full_size=full_size)) == 3


def test_an_npz_is_sized_from_its_headers_before_its_arrays_are_read(tmp_path) -> None:
    # The header declares 1 x 100,000 x 100,000 x 3 (30 GB) over 16 bytes of data: np.load would
    # try to allocate it all. The header alone is read.
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": (1, 100_000, 100_000, 3)}
    )
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("images.npy", header.getvalue() + bytes(16))  # the header starts with the magic
    tracemalloc.start()
    try:
        with pytest.raises(DataLimitExceeded, match=r"huge.npz: 'images'.*GANTRY_MAX_DATA_BYTES"):
            load_dataset(str(path), image_size=16)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5 * 2**20
    limits = DataLimits(max_bytes=2**40)
    with pytest.raises(DataLimitExceeded, match=r"100000x100000 = 10,000,000,000 pixels"):
        load_dataset(str(path), image_size=16, limits=limits)


# --- files per data set ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda t: _folder(t / "pics", 4),
        lambda t: _zip(t / "pics.zip", 4),
        lambda t: _npz(t / "pics.npz", 4),
    ],
    ids=["folder", "zip", "npz"],
)
def test_too_many_files_are_refused_before_they_are_read(tmp_path, monkeypatch, make) -> None:
    monkeypatch.setenv("GANTRY_MAX_DATA_FILES", "3")
    path = make(tmp_path)
    with pytest.raises(
        DataLimitExceeded, match=r"4 (files|images).* over the limit of 3 \(GANTRY_MAX_DATA_FILES\)"
    ) as info:
        load_dataset(str(path), image_size=16)
    assert str(path) in str(info.value)
    monkeypatch.setenv("GANTRY_MAX_DATA_FILES", "4")
    assert len(load_dataset(str(path), image_size=16)) == 4


# --- bytes: per file or .zip member, and in all -------------------------------------------------------


def _declare(path: Path, member: str, size: int) -> None:
    """Rewrite the uncompressed size a .zip declares for `member` (local header and central
    directory) without touching its data: a crafted archive, as an attacker would make it."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    local = info.header_offset
    assert data[local : local + 4] == b"PK\x03\x04"
    struct.pack_into("<I", data, local + 22, size)
    central = data.index(b"PK\x01\x02")
    while data[central + 46 : central + 46 + len(member)] != member.encode():
        central = data.index(b"PK\x01\x02", central + 4)
    struct.pack_into("<I", data, central + 24, size)
    path.write_bytes(bytes(data))


def test_a_zip_member_declaring_2_gib_is_refused_before_it_is_extracted(tmp_path) -> None:
    path = _zip(tmp_path / "bomb.zip", 2)
    _declare(path, "set/001.png", 2 * 2**30)
    assert path.stat().st_size < 10_000
    with pytest.raises(DataLimitExceeded) as info:
        load_dataset(str(path), image_size=16)
    assert f"{path}: set/001.png: 2,147,483,648 bytes is over the limit of 268,435,456" in str(info.value)
    assert "GANTRY_MAX_DATA_FILE_BYTES" in str(info.value)


def test_a_compressible_zip_member_is_refused_without_being_decompressed(tmp_path, monkeypatch) -> None:
    # 32 MB of one colour, a few kB compressed: the classic bomb, against a 1 MB limit set low here.
    monkeypatch.setenv("GANTRY_MAX_DATA_FILE_BYTES", str(2**20))
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a.png", _png(8))
        with archive.open("b.bmp", "w") as member:
            for _ in range(32):
                member.write(bytes(2**20))
    assert path.stat().st_size < 100_000
    tracemalloc.start()
    try:
        with pytest.raises(
            DataLimitExceeded, match=r"bomb.zip: b.bmp: 33,554,432 bytes.*GANTRY_MAX_DATA_FILE_BYTES"
        ):
            load_dataset(str(path), image_size=16)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20


def test_a_zip_over_the_bytes_in_all_is_refused(tmp_path, monkeypatch) -> None:
    path = _zip(tmp_path / "pics.zip", 5)
    total = sum(i.file_size for i in zipfile.ZipFile(path).infolist())
    monkeypatch.setenv("GANTRY_MAX_DATA_BYTES", str(total - 1))
    with pytest.raises(DataLimitExceeded, match=r"pics.zip: set/004.png.*GANTRY_MAX_DATA_BYTES"):
        load_dataset(str(path), image_size=16)
    monkeypatch.setenv("GANTRY_MAX_DATA_BYTES", str(total))
    assert len(load_dataset(str(path), image_size=16)) == 5


def test_a_folder_over_the_bytes_per_file_or_in_all_is_refused(tmp_path, monkeypatch) -> None:
    root = _folder(tmp_path / "pics", 3)
    sizes = [p.stat().st_size for p in sorted(root.iterdir())]
    monkeypatch.setenv("GANTRY_MAX_DATA_FILE_BYTES", str(max(sizes) - 1))
    with pytest.raises(DataLimitExceeded, match="GANTRY_MAX_DATA_FILE_BYTES"):
        load_dataset(str(root), image_size=16)
    monkeypatch.delenv("GANTRY_MAX_DATA_FILE_BYTES")
    monkeypatch.setenv("GANTRY_MAX_DATA_BYTES", str(sum(sizes) - 1))
    with pytest.raises(DataLimitExceeded, match=r"002.png.*GANTRY_MAX_DATA_BYTES"):
        load_dataset(str(root), image_size=16)


def test_read_capped_stops_at_the_limit_whatever_a_header_declared() -> None:
    limits = DataLimits(max_file_bytes=2**20)
    stream = io.BytesIO(bytes(8 * 2**20))
    with pytest.raises(DataLimitExceeded, match="member: 2,097,152 bytes is over the limit of 1,048,576"):
        read_capped(stream, "member", limits, ByteBudget(limits))
    assert stream.tell() == 2 * 2**20  # one chunk past the limit, not the whole stream


# --- a breach fails the job, once, with the reason ------------------------------------------------


def test_a_data_set_over_a_limit_fails_the_job_with_the_reason(settings, tmp_path, monkeypatch) -> None:
    from gantry.worker.run import run_job

    root = _folder(tmp_path / "pics", 3, side=40)
    monkeypatch.setenv("GANTRY_MAX_INPUT_PIXELS", "1000")
    svc = Service(settings)
    job = svc.submit_train("dcgan", dataset=str(root), image_size=16, batch_size=2, steps=2)
    assert run_job(job.id, settings=Settings()) == "failed"
    done = svc.get(job.id)
    assert done.state == "failed" and done.attempt == 1
    assert done.error is not None
    assert f"{root / '000.png'}: 40x40 = 1,600 pixels is over the limit of 1,000" in done.error
    assert "GANTRY_MAX_INPUT_PIXELS" in done.error


# --- super-resolution inputs: names and counts ------------------------------------------------------


def test_super_resolution_inputs_are_counted_and_their_names_checked(tmp_path) -> None:
    from gantry.worker.sr.upscale import _input_files

    root = _folder(tmp_path / "in", 3)
    assert [name for name, _ in _input_files(root, DataLimits())] == ["000.png", "001.png", "002.png"]
    with pytest.raises(DataLimitExceeded, match=r"GANTRY_MAX_DATA_FILES") as info:
        _input_files(root, DataLimits(max_files=2))
    assert info.value.field == "input"
    (root / "a\\..\\b.png").write_bytes(_png(8))
    with pytest.raises(InvalidInput, match="backslash") as refused:
        _input_files(root, DataLimits())
    assert refused.value.field == "input"
