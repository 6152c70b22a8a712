"""Data sets for the trainers: built-in (`shapes`, `digits`) and user data (.npz, .zip, a folder)."""

from gantry.worker.data.base import (
    BUILTIN,
    CaptionGrammar,
    ImageData,
    builtin_caption_grammar,
    label_space,
    load_dataset,
)

__all__ = ["BUILTIN", "CaptionGrammar", "ImageData", "builtin_caption_grammar", "label_space", "load_dataset"]
