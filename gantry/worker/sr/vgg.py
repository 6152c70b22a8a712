"""VGG19's convolutional layers up to relu5_4 (Simonyan & Zisserman 2014, arXiv 1409.1556), for SRGAN's
VGG54 content loss (Ledig et al. 2016, §2.2.1: phi_5,4, the 4th conv after activation before the 5th
max-pool). Weights are the user's file, never downloaded: torchvision's `vgg19-dcbb9e9d.pth` layout
(`features.<i>.weight`), checked by SHA-256.
"""

from __future__ import annotations

import hashlib
import io
import logging
import tempfile
from pathlib import Path
from typing import Final

import torch
from torch import nn

from gantry.jobs.errors import InvalidInput
from gantry.jobs.settings import get_settings
from gantry.jobs.storage import fetch_to_local

log = logging.getLogger(__name__)

# Configuration "E" of the paper: widths, "M" a 2x2 max-pool. features[:36] ends at relu5_4.
VGG19: Final = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    512,
)
RELU5_4: Final = 36  # layers in torchvision's `features` up to and including relu5_4
# torchvision names its files <name>-<first 8 hex digits of the SHA-256>.pth and checks that prefix.
TORCHVISION_SHA256_PREFIX: Final = "dcbb9e9d"


def vgg54_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    width = 3
    for v in VGG19:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(width, int(v), 3, 1, 1), nn.ReLU(inplace=False)]
            width = int(v)
    assert len(layers) == RELU5_4
    return nn.Sequential(*layers)


def load_vgg54(uri: str, *, sha256: str | None = None) -> nn.Sequential:
    """VGG19 up to relu5_4 with the weights at `uri` (path or URI). InvalidInput when the file is
    missing, its SHA-256 is not the expected one, or it does not hold VGG19's conv weights."""
    with tempfile.TemporaryDirectory(prefix="gantry-vgg-") as scratch:
        try:
            path = fetch_to_local(uri, Path(scratch), endpoint_url=get_settings().s3_endpoint_url)
            content = path.read_bytes()
        except (OSError, InvalidInput) as exc:
            raise InvalidInput("set.vgg_weights", f"cannot read {uri}: {exc}") from None
    digest = hashlib.sha256(content).hexdigest()
    ok = digest == sha256 if sha256 else digest.startswith(TORCHVISION_SHA256_PREFIX)
    if not ok:
        expected = sha256 or f"{TORCHVISION_SHA256_PREFIX}... (torchvision's vgg19-dcbb9e9d.pth)"
        raise InvalidInput("set.vgg_weights", f"{uri} has SHA-256 {digest}, expected {expected}")
    try:
        state = torch.load(io.BytesIO(content), map_location="cpu", weights_only=True)
        net = vgg54_features()
        wanted = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
        net.load_state_dict({k: v for k, v in wanted.items() if int(k.split(".")[0]) < RELU5_4})
    except Exception as exc:  # a wrong file: unpickling refused, missing keys, wrong shapes
        raise InvalidInput("set.vgg_weights", f"{uri} does not hold VGG19 weights ({exc})") from None
    log.info("VGG19 relu5_4 loaded from %s", uri)
    return net
