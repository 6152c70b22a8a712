"""Options of "Improved Techniques for Training GANs" (Salimans et al. 2016, arXiv 1606.03498).

A mixin for a model's options class (`gan` and `dcgan` take them), validated at submit time like
every other `--set` option. Torch-free: the layers and losses are in `gantry.worker.gan.improved`.
"""

from __future__ import annotations

from typing import Final

from pydantic import BaseModel, ConfigDict, Field, model_validator

# The 2-D built-in data sets (points, not images): only the MLP `gan` trains on them.
POINT_DATASETS: Final = ("ring8", "grid25")


class ImprovedTechniques(BaseModel):
    """The paper's §3 techniques, each off by default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    minibatch_discrimination: bool = Field(
        False, description="D compares each sample with the rest of its minibatch (§3.2)"
    )
    # Defaults of the paper's code (openai/improved-gan, MinibatchLayer(num_kernels=100, dim_per_kernel=5)).
    mbd_kernels: int = Field(100, ge=1, le=1024, description="minibatch discrimination: kernels B")
    mbd_kernel_dim: int = Field(5, ge=1, le=256, description="minibatch discrimination: kernel size C")
    feature_matching: bool = Field(
        False, description="G matches the mean of D's last hidden features on real data (§3.1)"
    )
    label_smoothing: float = Field(
        1.0, ge=0.5, le=1.0, description="one-sided: D's target for real data, e.g. 0.9 (§3.4); 1 = off"
    )
    historical_averaging: float = Field(
        0.0, ge=0.0, le=1000.0, description="weight of ||θ - mean of past θ||² in both losses (§3.3); 0 = off"
    )
    virtual_batch_norm: bool = Field(
        False, description="G normalises with a fixed reference batch instead of its minibatch (§3.5)"
    )

    @model_validator(mode="after")
    def _kernels_need_minibatch_discrimination(self) -> ImprovedTechniques:
        # Compared with the defaults, not `model_fields_set`: a stored spec re-read has every field set.
        defaults = type(self).model_fields
        asked = {n for n in ("mbd_kernels", "mbd_kernel_dim") if getattr(self, n) != defaults[n].default}
        if asked and not self.minibatch_discrimination:
            raise ValueError(f"{sorted(asked)[0]} only applies with minibatch_discrimination=true")
        return self
