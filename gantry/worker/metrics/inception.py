"""FID, KID, Inception Score and precision/recall, computed by torch-fidelity (docs/real-images.md,
"Metrics"): gantry generates the images and hands them and the training images to
`torch_fidelity.calculate_metrics` in one call, so every number is the library's own.

- The extractor is torch-fidelity's `inception-v3-compat` (the TensorFlow FID network ported to
  PyTorch) with the weights file `GANTRY_INCEPTION_WEIGHTS` names, a path or an `s3://` URI, passed
  as `feature_extractor_weights_path`: nothing is downloaded. The file is checked as `torch.hub`
  checks its downloads: its sha256 must begin with the prefix in its published name
  (weights-inception-2015-12-05-6726825d.pth), or equal `GANTRY_INCEPTION_WEIGHTS_SHA256` in full,
  which admits another file of the same network (the tests' randomly initialised one).
- Precision and recall (Kynkäänniemi et al. 2019) are computed in the same Inception pool features
  as FID: the paper's VGG16 needs torchvision's network and weights, which gantry does not ship.
- The real side's features are cached in object storage through the metrics' cache
  (`gantry.worker.metrics.cache`, as `cache/fidelity/<reference>.npz`), named by a hash of the images
  as the metric sees them (content and size), the weights' sha256 and the torch-fidelity version: a
  later evaluation on the same data extracts the generated side only. The cache holds plain arrays
  (read with `allow_pickle=False`), written into torch-fidelity's own cache folder (a temporary one)
  before the call, so the library finds them where it keeps them.
"""

from __future__ import annotations

import hashlib
import io
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlparse

import numpy as np
import torch
from torch.utils.data import Dataset

from gantry.jobs.errors import InvalidInput
from gantry.jobs.settings import Settings
from gantry.jobs.specs.metrics import INCEPTION_WEIGHTS_HELP
from gantry.jobs.storage import ObjectNotFound, split_uri
from gantry.worker.gan.sampler import generated_images
from gantry.worker.metrics import EvalContext
from gantry.worker.metrics.cache import Cache
from gantry.worker.metrics.torchvision_shim import import_torch_fidelity

log = logging.getLogger(__name__)

PUBLISHED_SHA256_PREFIX: Final = "6726825d"  # the "-6726825d" of the published file's name
EXTRACTOR: Final = "inception-v3-compat"
REAL_IMAGES: Final = 50_000  # training images compared, at most (the field's usual 50k)
KID_SUBSET: Final = 1000  # torch-fidelity's and StyleGAN2-ADA's subset size, or all images if fewer
ISC_SPLITS: Final = 10
BATCH: Final = 64  # images per extractor forward
_FIELD: Final = "GANTRY_INCEPTION_WEIGHTS"


# -- the weights ------------------------------------------------------------------------------------
def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_weights_digest(digest: str, expected_sha256: str | None) -> None:
    """InvalidInput unless a weights file with sha256 `digest` is the one wanted: its published hash
    prefix (torch.hub's rule for files named NAME-<sha256 prefix>.pth), or `expected_sha256` in full."""
    if expected_sha256:
        if digest != expected_sha256.strip().lower():
            raise InvalidInput(
                _FIELD,
                f"the weights file's sha256 is {digest}, not {expected_sha256} (GANTRY_INCEPTION_WEIGHTS_SHA256)",
            )
    elif not digest.startswith(PUBLISHED_SHA256_PREFIX):
        raise InvalidInput(
            _FIELD,
            f"the weights file's sha256 {digest[:16]}... does not begin with the published "
            f"{PUBLISHED_SHA256_PREFIX}: not the FID Inception weights ({INCEPTION_WEIGHTS_HELP}; for "
            "another file of the same network set GANTRY_INCEPTION_WEIGHTS_SHA256 to its sha256)",
        )


def inception_weights(settings: Settings, scratch: Path) -> tuple[Path, str]:
    """(local path, sha256) of the checked weights file `settings` names; an `s3://` one is copied
    into `scratch`. InvalidInput naming GANTRY_INCEPTION_WEIGHTS if unset, missing or not the file."""
    uri = settings.inception_weights
    if not uri:
        raise InvalidInput(_FIELD, f"the Inception metrics need their weights: {INCEPTION_WEIGHTS_HELP}")
    if urlparse(uri).scheme == "s3":
        store, key = split_uri(uri, endpoint_url=settings.s3_endpoint_url)
        try:
            data = store.get_bytes(key)
        except ObjectNotFound:
            raise InvalidInput(_FIELD, f"{uri}: no such object ({INCEPTION_WEIGHTS_HELP})") from None
        path = scratch / "inception-weights.pth"
        path.write_bytes(data)
    else:
        path = Path(uri.removeprefix("file://")).expanduser()
        if not path.is_file():
            raise InvalidInput(_FIELD, f"{uri}: no such file ({INCEPTION_WEIGHTS_HELP})")
    digest = file_sha256(path)
    check_weights_digest(digest, settings.inception_weights_sha256)
    return path, digest


# -- the images -------------------------------------------------------------------------------------
class _Images(Dataset):  # type: ignore[type-arg]
    """uint8 N x H x W x C images as the uint8 3 x H x W tensors torch-fidelity reads (grey repeated
    to RGB). `seen(i)` is told of each image read: progress, and where a cancel is noticed."""

    def __init__(self, images: np.ndarray, seen: Callable[[int], None] = lambda i: None) -> None:
        self.images, self.seen = images, seen

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        self.seen(i)
        chw = torch.from_numpy(np.ascontiguousarray(self.images[i])).permute(2, 0, 1)
        return chw.expand(3, -1, -1).contiguous() if chw.shape[0] == 1 else chw.contiguous()


# -- torch-fidelity, with the real side cached --------------------------------------------------------
def reference_name(real: np.ndarray, weights_sha256: str) -> str:
    """What the real side's features depend on: the images as compared (content, count and size),
    the extractor's weights and torch-fidelity's version."""
    version = import_torch_fidelity().__version__
    digest = hashlib.sha256(f"{real.shape}|{weights_sha256}|{EXTRACTOR}|{version}".encode())
    digest.update(np.ascontiguousarray(real).tobytes())
    return digest.hexdigest()


def _cache_name(reference: str) -> str:
    return f"fidelity/{reference}.npz"


def _restore(cache: Cache, reference: str, cache_dir: Path) -> bool:
    """Write the cached arrays of `reference` into torch-fidelity's cache folder; False if none."""
    data = cache.get(_cache_name(reference))
    if data is None:
        return False
    files: dict[str, Any] = {}
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        for name in arrays.files:  # "<file>" a tensor, "<file>:<key>" an entry of a dict of arrays
            file, _, key = name.partition(":")
            if key:
                files.setdefault(file, {})[key] = arrays[name]
            else:
                files[file] = torch.from_numpy(arrays[name])
    for file, item in files.items():
        torch.save(item, cache_dir / f"{reference}{file}.pt")
    log.info("Inception features of the real images from the cache (%s)", reference[:12])
    return True


def _persist(cache: Cache, reference: str, cache_dir: Path) -> None:
    """Store what torch-fidelity cached for `reference` (features, FID statistics) as plain arrays."""
    arrays: dict[str, np.ndarray] = {}
    for path in sorted(cache_dir.glob(f"{reference}*.pt")):
        file = path.stem.removeprefix(reference)
        item = torch.load(path, map_location="cpu", weights_only=False)  # torch-fidelity's, just written
        if isinstance(item, dict):
            arrays.update({f"{file}:{key}": np.asarray(value) for key, value in item.items()})
        else:
            arrays[file] = item.numpy()
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    cache.put(_cache_name(reference), buffer.getvalue())


def fidelity_values(
    generated: np.ndarray,
    real: np.ndarray,
    *,
    weights: Path,
    weights_sha256: str,
    device: torch.device,
    seed: int = 0,
    cache: Cache | None = None,
    seen: Callable[[int, int], None] = lambda done, total: None,
) -> dict[str, float]:
    """fid, kid (kid_std), inception_score (_std), precision and recall of `generated` against `real`
    (uint8 N x H x W x C), by one `torch_fidelity.calculate_metrics` call. With `cache`, the real
    side's features are read from and kept in it. `seen(done, total)`: images extracted."""
    tf = import_torch_fidelity()
    reference = reference_name(real, weights_sha256)
    n = min(len(generated), len(real))
    with tempfile.TemporaryDirectory(prefix="gantry-fidelity-") as tmp:
        cache_dir = Path(tmp)
        cached = cache is not None and _restore(cache, reference, cache_dir)
        total = len(generated) + (0 if cached else len(real))
        count = [0]

        def one_more(i: int) -> None:
            count[0] += 1
            if count[0] % BATCH == 0 or count[0] == total:
                seen(count[0], total)

        got = tf.calculate_metrics(
            input1=_Images(generated, one_more),
            input2=_Images(real, one_more),
            input2_cache_name=reference,  # input1 (generated) is never cached
            cache=True,
            cache_root=str(cache_dir),
            cuda=device.type == "cuda",
            feature_extractor=EXTRACTOR,
            feature_extractor_weights_path=str(weights),
            isc=True,
            fid=True,
            kid=True,
            prc=True,
            isc_splits=max(1, min(ISC_SPLITS, len(generated) // 10)),  # 10 images a split at least
            kid_subset_size=min(KID_SUBSET, n),
            batch_size=BATCH,
            rng_seed=seed,
            save_cpu_ram=True,  # read the images in this process (no DataLoader workers)
            verbose=False,
        )
        if cache is not None and not cached:
            _persist(cache, reference, cache_dir)
    return {
        "fid": got[tf.KEY_METRIC_FID],
        "kid": got[tf.KEY_METRIC_KID_MEAN],
        "kid_std": got[tf.KEY_METRIC_KID_STD],
        "inception_score": got[tf.KEY_METRIC_ISC_MEAN],
        "inception_score_std": got[tf.KEY_METRIC_ISC_STD],
        "precision": got[tf.KEY_METRIC_PRECISION],
        "recall": got[tf.KEY_METRIC_RECALL],
    }


def fidelity(ctx: EvalContext) -> dict[str, float]:
    """The evaluator of fid, kid, inception_score and precision_recall (one pass for all four):
    generated images (an evaluate job's `--samples`, or eval_every's `eval_samples`) against the
    train job's data (up to REAL_IMAGES)."""
    from gantry.worker.data import ImageData

    data = ctx.load_data("train")
    if not isinstance(data, ImageData):
        raise InvalidInput("metric", f"the Inception metrics compare images; {ctx.train_spec.dataset} is not")
    with tempfile.TemporaryDirectory(prefix="gantry-inception-") as tmp:
        weights, digest = inception_weights(ctx.settings, Path(tmp))
        generated = generated_images(
            ctx.checkpoint,
            count=ctx.samples or ctx.spec.samples,
            seed=ctx.spec.seed,
            captions=data.captions,
            device=ctx.device,
        )
        return fidelity_values(
            generated,
            data.images[:REAL_IMAGES],
            weights=weights,
            weights_sha256=digest,
            device=ctx.device,
            seed=ctx.spec.seed,
            cache=ctx.cache,
            seen=ctx.report,
        )
