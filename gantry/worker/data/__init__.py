"""Data sets for the trainers: built-in (`shapes`, `digits`) and user data (.npz, .zip, a folder)."""

from gantry.worker.data.base import BUILTIN, ImageData, load_dataset

__all__ = ["BUILTIN", "ImageData", "load_dataset"]
