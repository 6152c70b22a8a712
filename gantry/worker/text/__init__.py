"""Text encoders for text-to-image (see `encoders`)."""

from gantry.worker.text.encoders import ENCODERS, TextEncoder, encoder_from_state, fit_encoder

__all__ = ["ENCODERS", "TextEncoder", "encoder_from_state", "fit_encoder"]
