"""Data sets for the trainers: built-in (`shapes`, `digits`) and user data (.npz, .zip, a folder)."""

from gantry.worker.data.base import BUILTIN, ImageData, label_space, load_dataset

__all__ = ["BUILTIN", "ImageData", "label_space", "load_dataset"]
