"""`gantry data inspect PATH|URI`: what a folder or .zip of pictures holds, a contact sheet of it, and
what a base install (no Pillow, no numpy) says instead."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from gantry.api.cli import cli
from gantry.jobs.settings import Settings
from tests.pictures import BAD, GOOD, MAX_PIXELS, make_folder, make_zip
from tests.test_packaging import _without_worker_packages


@pytest.fixture
def limited(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("GANTRY_MAX_INPUT_PIXELS", str(MAX_PIXELS))
    return settings


def test_inspect_reports_a_folder_as_json_and_writes_a_contact_sheet(
    limited: Settings, tmp_path: Path
) -> None:
    root = make_folder(tmp_path / "pets")
    sheet = tmp_path / "out" / "sheet.png"
    result = CliRunner().invoke(cli, ["data", "inspect", str(root), "--sheet", str(sheet), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["count"] == len(GOOD) and report["kind"] == "folder"
    assert report["width"] == {"min": 8, "median": 16, "max": 30}  # tall 8x24 ... wide 30x10
    assert report["aspect"]["min"] == pytest.approx(1 / 3, abs=1e-3) and report["aspect"]["max"] == 3.0
    assert report["modes"] == {"RGB": 3, "L": 1, "RGBA": 1, "LA": 1, "P": 1}
    assert report["formats"] == {"PNG": 5, "JPEG": 1, "WEBP": 1}
    assert report["labels"] == {"cats": 3, "dogs": 3} and report["outside_folders"] == 1
    assert report["captions_file"] == "captions.csv"
    assert (report["captioned"], report["uncaptioned"]) == (6, 1)
    assert report["unmatched_captions"] == ["cats/gone.png"]
    assert {b["file"] for b in report["bad_files"]} == set(BAD)
    assert report["contact_sheet"] == str(sheet) and report["sheet_cells"] == len(GOOD)
    with Image.open(sheet) as image:  # 7 thumbnails of 64 px in one row, 2 px apart
        assert image.format == "PNG" and image.size == (7 * 66 + 2, 66 + 2)


def test_inspect_prints_what_a_user_checks_before_training(limited: Settings, tmp_path: Path) -> None:
    path = make_zip(tmp_path / "pets.zip")
    result = CliRunner().invoke(cli, ["data", "inspect", str(path), "--sheet", str(tmp_path / "s.png")])
    assert result.exit_code == 0, result.output
    text = result.output
    assert f"{path} (zip): {len(GOOD)} readable pictures" in text
    assert "2 sub-folders (labels=folder): cats 3, dogs 3; 1 outside any (no class)" in text
    assert "6 pictures captioned from captions.jsonl, 1 without" in text
    assert "pets/dogs/truncated.jpg: not a readable image" in text
    assert f"contact sheet ({len(GOOD)} pictures as training sees them): {tmp_path / 's.png'}" in text


def test_inspect_refuses_what_is_not_a_data_set(settings: Settings, tmp_path: Path) -> None:
    for source, expected in [("shapes", "built in"), (str(tmp_path / "nothing"), "no such file or folder")]:
        result = CliRunner().invoke(cli, ["data", "inspect", source])
        assert result.exit_code == 2 and expected in result.output


def test_inspect_without_the_worker_packages_says_what_to_install(tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        from click.testing import CliRunner
        from gantry.api.cli import cli
        result = CliRunner().invoke(cli, ["data", "inspect", {str(tmp_path)!r}])
        print(result.exit_code)
        print(result.output)
    """)
    result = _without_worker_packages(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "4"
    assert "pip install 'gantry[worker]'" in result.stdout
