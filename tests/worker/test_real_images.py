"""Train on a folder of pictures as users have them, end to end through the job runner: a dcgan
conditioned on the sub-folders (labels=folder) and sampled by a class name; text2img on the captions
sidecar of a zip. Bad files are skipped and the job's warnings name them."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from gantry.api.service import Service
from gantry.jobs import keys
from gantry.jobs.errors import InvalidInput
from gantry.jobs.settings import Settings
from gantry.worker.run import run_job
from tests.pictures import BAD, MAX_PIXELS, make_folder, make_zip, picture_files

TINY = {"image_size": 32, "batch_size": 4, "steps": 3, "checkpoint_every": 3, "sample_every": 3}
SMALL_NETS = {"ngf": "8", "ndf": "8"}


@pytest.fixture
def limited(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("GANTRY_MAX_INPUT_PIXELS", str(MAX_PIXELS))  # one picture is over it
    return Settings()


def test_dcgan_conditioned_on_sub_folders_samples_a_class_by_name(limited: Settings, tmp_path: Path) -> None:
    root = make_folder(tmp_path / "pets")
    svc = Service(limited)
    job = svc.submit_train("dcgan", dataset=str(root), options={**SMALL_NETS, "labels": "folder"}, **TINY)
    assert run_job(job.id, settings=limited) == "succeeded"
    warnings = svc.objects.get_bytes(keys.warnings_key(job.id)).decode()
    assert f"skipped {len(BAD) + 1} bad files" in warnings  # and top.png: it is in no sub-folder
    assert all(f"{root / name}" in warnings for name in [*BAD, "top.png"])

    sample = svc.submit_sample(job.id, prompts=["dogs", "a Cats"], count=2, seed=1)
    assert run_job(sample.id, settings=limited) == "succeeded"
    index = json.loads(svc.objects.get_bytes(f"{keys.job_prefix(sample.id)}/images/prompts.json"))
    assert [row["prompt"] for row in index] == ["dogs", "dogs", "a Cats", "a Cats"]

    # A class the folder does not have is refused by the sample job, naming the classes it has.
    wrong = svc.submit_sample(job.id, prompts=["horses"], count=1, seed=1)
    assert run_job(wrong.id, settings=limited) == "failed"
    error = svc.get(wrong.id).error or ""
    assert "'horses' names no label value (folder: cats, dogs)" in error


def _classes(n: int) -> dict[str, bytes]:
    """`n` pictures in each of two sub-folders, red and blue squares of varied sizes."""
    files = {}
    for i in range(n):
        for folder, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
            buffer = io.BytesIO()
            Image.new("RGB", (16 + i, 16 + i), colour).save(buffer, "PNG")
            files[f"{folder}/{i}.png"] = buffer.getvalue()
    return files


def test_an_unconditioned_run_tracks_fd_classifier_with_the_sub_folders_as_classes(
    limited: Settings, tmp_path: Path
) -> None:
    root = make_folder(tmp_path / "pets", files=_classes(10))
    svc = Service(limited)
    options = {**SMALL_NETS, "eval_every": "3", "eval_samples": "100"}  # fd_classifier: no labels=folder
    job = svc.submit_train("dcgan", dataset=str(root), options=options, **TINY)
    assert run_job(job.id, settings=limited) == "succeeded", svc.get(job.id).error
    assert [p.step for p in svc.metrics(job.id) if p.name == "fd_classifier"] == [3]


def test_text2img_tracks_fd_classifier_drawing_the_datas_captions(limited: Settings, tmp_path: Path) -> None:
    files = _classes(10)
    root = make_folder(tmp_path / "squares", files=files, captions=None)
    rows = [f"{name},a {name.split('/')[0]} square" for name in files]
    (root / "captions.csv").write_text("file,caption\n" + "\n".join(rows) + "\n")
    svc = Service(limited)
    options = {"eval_every": "3", "eval_samples": "100", "ngf": "8", "ndf": "8"}
    job = svc.submit_train("text2img", dataset=str(root), options=options, **TINY)
    assert job.spec["options"]["eval_metric"] == "fd_classifier"
    assert run_job(job.id, settings=limited) == "succeeded", svc.get(job.id).error
    assert [p.step for p in svc.metrics(job.id) if p.name == "fd_classifier"] == [3]


def test_a_labelled_eval_metric_on_pictures_without_classes_fails_before_training(
    limited: Settings, tmp_path: Path
) -> None:
    flat = {name.replace("/", "-"): data for name, data in picture_files().items()}  # no sub-folders
    root = make_folder(tmp_path / "flat", files=flat)
    svc = Service(limited)
    options = {**SMALL_NETS, "eval_every": "3", "eval_samples": "100"}
    job = svc.submit_train("dcgan", dataset=str(root), options={**options}, **{**TINY, "steps": 300})
    assert run_job(job.id, settings=limited) == "failed"
    failed = svc.get(job.id)
    assert failed.progress.step == 0 and "fd_classifier needs labelled images" in (failed.error or "")


def test_bad_files_refused_fail_the_job_naming_the_file(limited: Settings, tmp_path: Path) -> None:
    root = make_folder(tmp_path / "pets")
    svc = Service(limited)
    job = svc.submit_train("dcgan", dataset=str(root), options={**SMALL_NETS, "bad_files": "refuse"}, **TINY)
    assert run_job(job.id, settings=limited) == "failed"
    first = sorted(BAD)[0]
    assert f"{root / first}: {BAD[first]}" in (svc.get(job.id).error or "")


def test_text2img_trains_on_a_zip_with_captions_and_draws_a_prompt(limited: Settings, tmp_path: Path) -> None:
    path = make_zip(tmp_path / "pets.zip")
    svc = Service(limited)
    options = {"ngf": "8", "ndf": "8", "embed_dim": "8", "background": "black"}
    job = svc.submit_train("text2img", dataset=str(path), options=options, **TINY)
    assert run_job(job.id, settings=limited) == "succeeded", svc.get(job.id).error
    warnings = svc.objects.get_bytes(keys.warnings_key(job.id)).decode()
    assert "pets/dogs/tall.png: no caption in captions.jsonl" in warnings
    sample = svc.submit_sample(job.id, prompts=["a blue cat"], count=2, seed=1)
    assert run_job(sample.id, settings=limited) == "succeeded"


def test_folder_options_are_checked_at_submit(settings: Settings, tmp_path: Path) -> None:
    svc = Service(settings)
    with pytest.raises(InvalidInput) as info:
        svc.submit_train("dcgan", dataset="shapes", options={"labels": "folder"})
    assert info.value.field == "set.labels" and "sub-folder" in info.value.message
    with pytest.raises(InvalidInput) as info:
        svc.submit_train("dcgan", dataset=str(tmp_path), options={"background": "mauve"})
    assert info.value.field == "set.background" and "#rrggbb" in info.value.message
    assert svc.list_jobs().jobs == []
