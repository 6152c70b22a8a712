"""The Inception metrics (gantry.worker.metrics.inception): gantry's values are torch-fidelity's own,
the real side comes from the cache the second time, the weights file is checked, and a metric asked
for without weights is refused at submit.

The extractor is torch-fidelity's Inception-v3 with random weights (the real file is 91 MB and not
downloadable here), its batch norms calibrated on noise so that features are of order one and the
metrics far from zero. On one CPU core Inception at 299x299 costs about 0.8 s an image."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from gantry.api.cli import cli
from gantry.api.service import Service
from gantry.jobs import keys
from gantry.jobs import store as db
from gantry.jobs.errors import InvalidInput
from gantry.jobs.settings import Settings
from gantry.jobs.specs import load_train_spec
from gantry.jobs.storage import FileStore
from gantry.worker.metrics.cache import Cache
from gantry.worker.metrics.inception import (
    EXTRACTOR,
    PUBLISHED_SHA256_PREFIX,
    check_weights_digest,
    fidelity_values,
    file_sha256,
    inception_weights,
)
from gantry.worker.metrics.torchvision_shim import import_torch_fidelity

N = 10  # images per side; each side costs about 8 s per extraction


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """torch-fidelity's FeatureExtractorInceptionV3, randomly initialised, saved with torch.save."""
    import_torch_fidelity()
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class RandomInception(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):  # type: ignore[no-untyped-def]
            return None  # keep the random initialisation (the constructor loads a file)

    folder = tmp_path_factory.mktemp("inception")
    torch.save({}, folder / "nothing.pt")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = RandomInception(EXTRACTOR, ["2048"], feature_extractor_weights_path=str(folder / "nothing.pt"))
        # Batch norms with the statistics of one noise batch: activations keep their scale through
        # the 90-odd random layers instead of vanishing (features of order 1e-8 otherwise).
        for bn in (m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.reset_running_stats()
            bn.momentum = None
        net.train()
        with torch.no_grad():
            net((torch.rand(4, 3, 32, 32) * 255).to(torch.uint8))
            # The logits without the features' common direction, which alone would put every image
            # in one class (an Inception Score of 1 whatever the images).
            net.eval()
            mean = net((torch.rand(4, 3, 32, 32) * 255).to(torch.uint8))[0].mean(0)
            net.fc.weight -= torch.outer(net.fc.weight @ mean, mean) / mean.dot(mean)
    path = folder / "random-inception.pth"
    torch.save(net.state_dict(), path)
    return path


def _images(seed: int, stripes: bool) -> np.ndarray:
    """N 32x32 RGB images: coloured stripes of random frequency and angle ("generated"), or noisy
    colour ramps ("real")."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32]
    colour = rng.uniform(0, 255, size=(N, 1, 1, 3))
    if stripes:
        fx, fy, phase = (rng.uniform(0, b, size=(N, 1, 1)) for b in (0.6, 0.6, 6.3))
        wave = 0.5 + 0.5 * np.sin(fx * xx + fy * yy + phase)
        return (wave[..., None] * colour).astype(np.uint8)
    ramp = (xx * yy / 31**2)[None, :, :, None]
    return (ramp * colour + rng.uniform(0, 40, size=(N, 32, 32, 3))).astype(np.uint8)


class _Tensors(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """The images as torch-fidelity's docs say to give them: uint8 3 x H x W tensors."""

    def __init__(self, images: np.ndarray) -> None:
        self.images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


@pytest.mark.slow  # ~70 s on one CPU core: five extractions of ten images
def test_values_equal_torch_fidelitys_and_the_real_side_is_cached(
    random_weights: Path, tmp_path: Path
) -> None:
    tf = import_torch_fidelity()
    generated, real = _images(1, stripes=True), _images(2, stripes=False)
    reference = tf.calculate_metrics(
        input1=_Tensors(generated),
        input2=_Tensors(real),
        cuda=False,
        isc=True,
        fid=True,
        kid=True,
        prc=True,
        feature_extractor=EXTRACTOR,
        feature_extractor_weights_path=str(random_weights),
        kid_subset_size=N,
        isc_splits=1,  # gantry's for 10 images (a split of one image always scores 1)
        rng_seed=0,  # gantry's: the evaluate job's seed
        cache=False,
        save_cpu_ram=True,
        verbose=False,
    )
    extracted: list[int] = []  # images through the Inception network, per call

    def count(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        if type(module).__name__ == "FeatureExtractorInceptionV3":
            extracted.append(len(args[0]))

    objects = FileStore(tmp_path / "objects")
    digest = file_sha256(random_weights)
    hook = torch.nn.modules.module.register_module_forward_pre_hook(count)
    try:
        first = fidelity_values(
            generated,
            real,
            weights=random_weights,
            weights_sha256=digest,
            device=torch.device("cpu"),
            cache=Cache.of_store(objects),
        )
        first_count, extracted[:] = sum(extracted), []
        second = fidelity_values(
            generated,
            real,
            weights=random_weights,
            weights_sha256=digest,
            device=torch.device("cpu"),
            cache=Cache.of_store(objects),
        )
        second_count = sum(extracted)
    finally:
        hook.remove()

    expected = {
        "fid": reference[tf.KEY_METRIC_FID],
        "kid": reference[tf.KEY_METRIC_KID_MEAN],
        "kid_std": reference[tf.KEY_METRIC_KID_STD],
        "inception_score": reference[tf.KEY_METRIC_ISC_MEAN],
        "inception_score_std": reference[tf.KEY_METRIC_ISC_STD],
        "precision": reference[tf.KEY_METRIC_PRECISION],
        "recall": reference[tf.KEY_METRIC_RECALL],
    }
    assert first == pytest.approx(expected, rel=1e-4)
    assert expected["fid"] > 1 and expected["inception_score"] > 1  # far from the degenerate values
    # The second evaluation reads the real side's features from object storage: generated images only.
    assert first_count == 2 * N and second_count == N
    assert [key.startswith("cache/fidelity/") and key.endswith(".npz") for key in objects.list("cache/")] == [
        True
    ]
    assert second == pytest.approx(first, rel=1e-6)


def test_the_weights_file_must_have_the_published_hash_prefix_or_the_named_sha256(
    random_weights: Path, tmp_path: Path
) -> None:
    digest = file_sha256(random_weights)
    # torch.hub's rule: the file's sha256 begins with the prefix in its published name.
    check_weights_digest(PUBLISHED_SHA256_PREFIX + "0" * 56, None)
    with pytest.raises(InvalidInput, match="6726825d") as refused:
        check_weights_digest(digest, None)
    assert refused.value.field == "GANTRY_INCEPTION_WEIGHTS"

    def weights(**env: str | None) -> tuple[Path, str]:
        return inception_weights(Settings(home=tmp_path, **env), tmp_path)  # type: ignore[arg-type]

    assert weights(inception_weights=str(random_weights), inception_weights_sha256=digest) == (
        random_weights,
        digest,
    )
    with pytest.raises(InvalidInput, match="does not begin with the published 6726825d"):
        weights(inception_weights=str(random_weights))  # a random network is not the FID network
    wrong = hashlib.sha256(b"another file").hexdigest()
    with pytest.raises(InvalidInput, match=f"not {wrong}"):
        weights(inception_weights=str(random_weights), inception_weights_sha256=wrong)
    with pytest.raises(InvalidInput, match="no such file"):
        weights(inception_weights=str(tmp_path / "missing.pth"))


def test_weights_from_an_s3_uri_are_copied_and_checked(s3_settings: Settings, tmp_path: Path) -> None:
    import boto3

    data = b"a small stand-in: only its hash is checked here"
    boto3.client("s3").put_object(Bucket="wiring", Key="models/inception.pth", Body=data)
    digest = hashlib.sha256(data).hexdigest()
    settings = Settings(inception_weights="s3://wiring/models/inception.pth", inception_weights_sha256=digest)
    path, got = inception_weights(settings, tmp_path)
    assert got == digest and path.read_bytes() == data
    with pytest.raises(InvalidInput, match="6726825d"):
        inception_weights(Settings(inception_weights="s3://wiring/models/inception.pth"), tmp_path)
    with pytest.raises(InvalidInput, match="no such object"):
        inception_weights(Settings(inception_weights="s3://wiring/models/none.pth"), tmp_path)


def _train_job_with_checkpoint(svc: Service) -> str:
    train = svc.submit_train("dcgan", dataset="digits", steps=10, image_size=16)
    key = keys.checkpoint_key(train.id, 10, attempt=1)
    uri = svc.objects.put_bytes(key, b"weights")
    sha256 = hashlib.sha256(b"weights").hexdigest()
    manifest = keys.Manifest(step=10, key=key, uri=uri, bytes=7, time=db.utcnow(), sha256=sha256)
    svc.objects.put_bytes(keys.manifest_key(train.id), manifest.dump())
    return train.id


def test_an_inception_metric_without_weights_is_refused_at_submit(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GANTRY_INCEPTION_WEIGHTS", raising=False)
    train_id = _train_job_with_checkpoint(Service(settings))
    result = CliRunner().invoke(cli, ["evaluate", train_id, "--metric", "fid"])
    assert result.exit_code == 2, result.output
    assert "GANTRY_INCEPTION_WEIGHTS" in result.output and "torch-fidelity" in result.output
    # Every metric that applies, without weights: the others, not the Inception ones.
    spec = load_train_spec({"model": "dcgan", "dataset": "shapes"})
    assert "fid" not in spec.resolve_metrics([])
    assert spec.resolve_metrics([], inception_weights=True)[-4:] == [
        "fid",
        "kid",
        "inception_score",
        "precision_recall",
    ]
    # text2img on a user's folder: without the weights, fd_classifier alone, and fid asked for is
    # refused; 2-D points have none of them.
    folder = load_train_spec({"model": "text2img", "dataset": "/data/pictures"})
    assert folder.resolve_metrics([]) == ["fd_classifier"]
    with pytest.raises(InvalidInput, match="GANTRY_INCEPTION_WEIGHTS"):
        folder.resolve_metrics(["fid"])
    assert "fid" not in load_train_spec({"model": "gan", "dataset": "ring8"}).metric_names()


@pytest.mark.slow  # ~60 s on one CPU core: 12 real and 16 generated images, then 16 more
def test_gantry_evaluate_measures_a_checkpoint_and_reuses_the_real_side(
    random_weights: Path, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "pictures.npz"
    np.savez(data, images=np.concatenate([_images(3, stripes=False), _images(4, stripes=True)])[:12])
    monkeypatch.setenv("GANTRY_INCEPTION_WEIGHTS", str(random_weights))
    monkeypatch.setenv("GANTRY_INCEPTION_WEIGHTS_SHA256", file_sha256(random_weights))

    def gantry(*args: str) -> str:
        result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    train = gantry(
        "train",
        "dcgan",
        "--dataset",
        str(data),
        "--steps",
        "2",
        "--batch-size",
        "4",
        "--image-size",
        "16",
        "--wait",
        "--json",
    )
    train_id = json.loads(train[train.index("{") :])["id"]
    values = []
    for _ in range(2):
        out = gantry("evaluate", train_id, "--samples", "16", "--wait", "--json")
        values.append(json.loads(out[out.index("{") :])["metrics"])
    assert set(values[0]) >= {"fid", "kid", "kid_std", "inception_score", "precision", "recall"}
    assert values[0]["fid"] > 0 and values[1] == values[0]  # same seed, same images, same values
    assert (
        "fd_classifier" not in values[0]
    )  # every metric that applies, less those the data has no labels for
    objects = FileStore(Path(settings.storage.removeprefix("file://")))
    assert len(objects.list("cache/fidelity/")) == 1  # written by the first, read by the second
