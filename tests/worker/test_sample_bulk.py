"""Plain samples streamed a batch at a time (gantry.worker.sample): the same pixels as the whole
sampler gives, every image recorded, and `format=npz|tar` shards holding exactly those images."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from gantry.api.service import Service
from gantry.jobs.errors import InvalidInput
from gantry.jobs.keys import image_key
from gantry.jobs.settings import Settings
from gantry.worker.gan.sampler import GENERATE_BATCH, sample

COUNT = GENERATE_BATCH * 2 + 88  # three batches, the last one short


@pytest.fixture
def trained(settings: Settings) -> tuple[Service, str]:
    svc = Service(settings)
    train = svc.submit_train(
        "dcgan", dataset="digits", image_size=16, batch_size=16, steps=4, options={"ngf": "8", "ndf": "8"}
    )
    assert svc.run_embedded(train) == "succeeded"
    return svc, train.id


def _sample(svc: Service, train_id: str, **fields: object) -> str:
    job = svc.submit_sample(train_id, count=COUNT, seed=5, **fields)
    assert svc.run_embedded(job) == "succeeded"
    assert svc.get(job.id).progress.step == COUNT
    return job.id


def test_streamed_pngs_are_the_samplers_images_each_recorded(trained: tuple[Service, str]) -> None:
    svc, train_id = trained
    job_id = _sample(svc, train_id)
    artifacts = {a.key: a for a in svc.get(job_id).artifacts}
    names = [image_key(job_id, f"{i:06d}.png") for i in range(COUNT)]
    assert set(names) <= artifacts.keys() and image_key(job_id, "grid.png") in artifacts
    assert len(artifacts) == COUNT + 1
    # The same seed gives the same bytes as the sampler that makes them all at once.
    checkpoint, _ = svc_checkpoint(svc, train_id)
    whole = sample(checkpoint, count=COUNT, seed=5, device="cpu")
    assert [svc.objects.get_bytes(key) for key in names] == whole.images
    assert all(artifacts[key].bytes == len(png) for key, png in zip(names, whole.images, strict=True))


@pytest.mark.parametrize("fmt", ["npz", "tar"])
def test_shards_hold_exactly_the_png_images(
    trained: tuple[Service, str], fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gantry.worker.sample.SHARD_IMAGES", 250)
    svc, train_id = trained
    pngs = _sample(svc, train_id)
    sharded = _sample(svc, train_id, format=fmt)
    keys = sorted(a.key for a in svc.get(sharded).artifacts if a.kind == "data")
    assert keys == [image_key(sharded, f"samples-{first:06d}.{fmt}") for first in (0, 250, 500)]
    expected = [svc.objects.get_bytes(image_key(pngs, f"{i:06d}.png")) for i in range(COUNT)]
    if fmt == "npz":
        arrays = [np.load(io.BytesIO(svc.objects.get_bytes(key)))["images"] for key in keys]
        got = np.concatenate(arrays)
        decoded = np.stack(
            [np.asarray(Image.open(io.BytesIO(png)).convert("L"))[..., None] for png in expected]
        )
        assert got.dtype == np.uint8 and got.shape == decoded.shape and np.array_equal(got, decoded)
    else:
        members: dict[str, bytes] = {}
        for key in keys:
            with tarfile.open(fileobj=io.BytesIO(svc.objects.get_bytes(key))) as tar:
                for info in tar.getmembers():
                    members[info.name] = tar.extractfile(info).read()  # type: ignore[union-attr]
        assert members == {f"{i:06d}.png": png for i, png in enumerate(expected)}
    assert image_key(sharded, "grid.png") in {a.key for a in svc.get(sharded).artifacts}


def test_bulk_counts_and_formats_are_for_plain_samples(trained: tuple[Service, str]) -> None:
    svc, train_id = trained
    with pytest.raises(InvalidInput) as err:
        svc.submit_sample(train_id, interpolate="1:2", format="npz")
    assert err.value.field == "format" and "plain samples" in err.value.message
    with pytest.raises(InvalidInput) as err:
        svc.submit_sample(train_id, arithmetic="1 - 2 + 3", count=20_000)
    assert err.value.field == "count" and "10,000" in err.value.message
    with pytest.raises(InvalidInput) as err:
        svc.submit_sample(train_id, count=1_000_001)
    assert err.value.field == "count"
    assert svc.submit_sample(train_id, count=100_000, format="tar").progress.total_steps == 100_000


def test_a_2d_jobs_samples_take_no_image_format(settings) -> None:
    # Its samples are one points.npy and a scatter plot: npz or tar shards was accepted and ignored.
    svc = Service(settings)
    train = svc.submit_train(model="gan", dataset="ring8", steps=2)
    svc.run_embedded(train)
    for fmt in ("npz", "tar"):
        with pytest.raises(InvalidInput) as err:
            svc.submit_sample(train.id, count=10, format=fmt)
        assert err.value.field == "format" and "points.npy" in err.value.message


def svc_checkpoint(svc: Service, train_id: str) -> tuple[bytes, int]:
    from gantry.jobs.keys import Manifest, manifest_key

    manifest = Manifest.parse(svc.objects.get_bytes(manifest_key(train_id)))
    return svc.objects.get_bytes(manifest.key), manifest.step


def test_a_stopped_sampler_leaves_no_thread_waiting() -> None:
    import threading
    import time

    from gantry.worker.sample import _ahead

    made = (np.zeros((1, 2, 2, 1), dtype=np.uint8) for _ in range(2))  # its end is handed over last
    batches = _ahead(made)
    next(batches)
    time.sleep(0.5)  # G has handed over its last batch and waits to say it is done
    batches.close()  # the job stopped after its first batch (a cancel)
    # Gone when close returns: a process that exits with torch running on another thread is
    # aborted by the C++ runtime (Ctrl-C on `gantry sample` ended with SIGABRT, not exit 1).
    assert not any(t.name == "gantry-generate" for t in threading.enumerate())

    def failing():
        yield np.zeros((1, 2, 2, 1), dtype=np.uint8)
        raise RuntimeError("G ran out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        list(_ahead(failing()))
