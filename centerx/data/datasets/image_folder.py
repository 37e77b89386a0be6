"""Image-only datasets: every image under a folder, without annotations.

Used for label-free distillation (the teachers provide the targets). Each
dataset dict is ``{"file_name", "image_id", "annotations": [], "unlabeled": True}``:
the empty annotation list keeps detectron2's loader and mappers working, and
``unlabeled`` tells a distiller trained with labels not to treat the image as
pure background. No ``thing_classes`` are set, so detectron2 skips its class
consistency check when such a folder is mixed with labelled datasets.
"""
import functools
import os
from typing import Dict, List, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog
from ...config import ConfigValueError

__all__ = ["IMAGE_EXTENSIONS", "load_image_folder", "register_image_folders"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
"""File name endings (case-insensitive) taken as images."""


def load_image_folder(name: str, folder: str) -> List[Dict]:
    """Dataset dicts for every image below ``folder`` (recursively, sorted by path).

    Raises:
        FileNotFoundError: ``folder`` does not exist.
        ValueError: it holds no image.
    """
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"Dataset '{name}': image folder '{folder}' does not exist (relative paths are taken from the "
            f"current directory {os.getcwd()}). Fix its entry in DATASETS.IMAGE_FOLDERS."
        )
    files = sorted(
        os.path.join(root, f)
        for root, _, names in os.walk(folder)
        for f in names
        if f.lower().endswith(IMAGE_EXTENSIONS)
    )
    if not files:
        raise ValueError(f"Dataset '{name}': no image ({', '.join(IMAGE_EXTENSIONS)}) under '{folder}'.")
    return [{"file_name": f, "image_id": i, "annotations": [], "unlabeled": True} for i, f in enumerate(files)]


def register_image_folders(entries: Sequence[Sequence[str]]) -> None:
    """Register the (name, folder) pairs of ``cfg.DATASETS.IMAGE_FOLDERS``.

    A pair whose name is already registered with the same folder is skipped, so
    calling this twice is harmless. The folder is listed when the dataset is
    first loaded.

    Raises:
        ConfigValueError: an entry is not a pair of non-empty strings, or its name is
            already registered for something else.
    """
    if isinstance(entries, (str, bytes)) or not isinstance(entries, Sequence):
        raise ConfigValueError(f"DATASETS.IMAGE_FOLDERS must be a list of (name, folder) pairs, got {entries!r}")
    for index, entry in enumerate(entries):
        if (
            isinstance(entry, (str, bytes))
            or not isinstance(entry, Sequence)
            or len(entry) != 2
            or not all(isinstance(v, str) and v for v in entry)
        ):
            raise ConfigValueError(
                f"DATASETS.IMAGE_FOLDERS[{index}] must be a (name, folder) pair of non-empty strings, got {entry!r}"
            )
        name, folder = entry
        if name in DatasetCatalog.list():
            if MetadataCatalog.get(name).get("image_folder") == folder:
                continue
            raise ConfigValueError(
                f"DATASETS.IMAGE_FOLDERS[{index}]: dataset name '{name}' is already registered; choose another name."
            )
        DatasetCatalog.register(name, functools.partial(load_image_folder, name, folder))
        MetadataCatalog.get(name).set(image_folder=folder, image_root=folder)
