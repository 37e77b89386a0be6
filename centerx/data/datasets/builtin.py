"""
Registration of centerX's built-in datasets and of user COCO-json datasets (the
CrowdHuman and WIDER FACE converters: crowdhuman.py, widerface.py).

Registration does no file I/O: every dataset is loaded lazily by its DatasetCatalog
function. The on-disk layout under ``$DETECTRON2_DATASETS`` is described in
``datasets/README.md``.
"""

import functools
import json
import logging
import os
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json, register_coco_instances
from detectron2.data.datasets.builtin_meta import _get_builtin_metadata
from PIL import Image

from ..validation import check_coco_json
from .crowdhuman import convert_crowdhuman_odgt
from .photos import PHOTOS_CLASSES, ensure_photos
from .shapes import SHAPES_CLASSES, datasets_root, ensure_shapes
from .widerface import convert_widerface_txt
from ...config import ConfigValueError

__all__ = [
    "register_all_builtin",
    "ensure_datasets",
    "register_coco_json_datasets",
]

logger = logging.getLogger(__name__)

# name -> (image root, json file), relative to the datasets root
_SHAPES = {
    "shapes_train": ("shapes/train", "shapes/annotations/train.json"),
    "shapes_val": ("shapes/val", "shapes/annotations/val.json"),
}
_PHOTOS = {
    "photos_train": ("photos/train", "photos/annotations/train.json"),
    "photos_val": ("photos/val", "photos/annotations/val.json"),
}
_COCO = {
    "coco_2017_train": ("coco/train2017", "coco/annotations/instances_train2017.json"),
    "coco_2017_val": ("coco/val2017", "coco/annotations/instances_val2017.json"),
}
# name -> (image root, source annotation, converted json cached next to it)
_CROWDHUMAN = {
    "crowdhuman_train": (
        "crowdhuman/Images",
        "crowdhuman/annotation_train.odgt",
        "crowdhuman/annotation_train_fbox_coco.json",
    ),
    "crowdhuman_val": (
        "crowdhuman/Images",
        "crowdhuman/annotation_val.odgt",
        "crowdhuman/annotation_val_fbox_coco.json",
    ),
}
_WIDERFACE = {
    "widerface_train": (
        "widerface/WIDER_train/images",
        "widerface/wider_face_split/wider_face_train_bbx_gt.txt",
        "widerface/wider_face_split/wider_face_train_bbx_gt_coco.json",
    ),
    "widerface_val": (
        "widerface/WIDER_val/images",
        "widerface/wider_face_split/wider_face_val_bbx_gt.txt",
        "widerface/wider_face_split/wider_face_val_bbx_gt_coco.json",
    ),
}


def _single_class_metadata(name: str) -> Dict:
    return {"thing_classes": [name], "thing_dataset_id_to_contiguous_id": {1: 0}}


# name -> (the loader registered for it, the function that writes the files it reads)
_PREPARE: Dict[str, Tuple[Callable[[], List[Dict]], Callable[[], None]]] = {}


def _prepare_and_load(
    name: str, prepare: Callable[[], None], json_file: str, image_root: str
) -> List[Dict]:
    prepare()
    return load_coco_json(json_file, image_root, name)


def _register(name: str, prepare: Callable[[], None], metadata: Dict) -> None:
    """
    Register ``name`` (a COCO json dataset whose json ``prepare`` writes when needed)
    unless it already is; then keep the existing registration.
    """
    if name in DatasetCatalog.list():
        existing = MetadataCatalog.get(name).get("json_file")
        if existing != metadata["json_file"]:
            logger.warning(
                "Dataset '%s' is already registered with json_file=%s; keeping it (not %s).",
                name, existing, metadata["json_file"],
            )
        return
    loader = functools.partial(
        _prepare_and_load, name, prepare, metadata["json_file"], metadata["image_root"]
    )
    _PREPARE[name] = (loader, prepare)
    DatasetCatalog.register(name, loader)
    MetadataCatalog.get(name).set(evaluator_type="coco", **metadata)


def _convert_if_stale(
    name: str,
    convert: Callable[[str, str, str], str],
    source: str,
    image_root: str,
    json_file: str,
) -> None:
    if not os.path.isfile(source):
        raise FileNotFoundError(
            f"Dataset '{name}' needs its annotation file '{source}', which does not exist. "
            "Lay the dataset out as described in datasets/README.md under "
            "$DETECTRON2_DATASETS (default: ./datasets)."
        )
    if not os.path.isfile(json_file) or os.path.getmtime(json_file) < os.path.getmtime(source):
        logger.info("Converting %s to COCO json %s ...", source, json_file)
        convert(source, image_root, json_file)


def ensure_datasets(names: Iterable[str]) -> None:
    """
    Write now the files that the built-in datasets among ``names`` otherwise create
    on first load (shapes: generate; CrowdHuman / WIDER FACE: convert to COCO json).
    Call it once in the main process before starting workers, so that ranks do not
    all do it at once. Names not registered by :func:`register_all_builtin` are
    ignored, as are names re-registered by someone else since.

    Raises:
        FileNotFoundError: the source annotations of a CrowdHuman / WIDER FACE
            dataset in ``names`` are missing.
    """
    for name in names:
        loader, prepare = _PREPARE.get(name, (None, None))
        if loader is not None and name in DatasetCatalog and DatasetCatalog[name] is loader:
            prepare()


def register_all_builtin(root: Optional[str] = None) -> None:
    """
    Register shapes_{train,val}, photos_{train,val}, coco_2017_{train,val} (unless detectron2 already
    has), crowdhuman_{train,val} and widerface_{train,val}, with paths under
    ``root`` (default: ``$DETECTRON2_DATASETS``, else ``datasets``). Idempotent: a
    name that is already registered is left as it is. Touches no file; the shapes
    and photos loaders generate their dataset on first use, and the CrowdHuman / WIDER FACE
    loaders convert their annotations to a COCO json cached next to them (redone
    when the source is newer).

    Metadata of each: thing_classes, json_file, image_root, evaluator_type="coco".
    """
    root = datasets_root(root)
    shapes_meta = {
        "thing_classes": list(SHAPES_CLASSES),
        "thing_dataset_id_to_contiguous_id": {i + 1: i for i in range(len(SHAPES_CLASSES))},
    }
    for name, (image_root, json_file) in _SHAPES.items():
        image_root, json_file = os.path.join(root, image_root), os.path.join(root, json_file)
        prepare = functools.partial(ensure_shapes, root)
        _register(name, prepare, dict(json_file=json_file, image_root=image_root, **shapes_meta))

    photos_meta = {
        "thing_classes": list(PHOTOS_CLASSES),
        "thing_dataset_id_to_contiguous_id": {i + 1: i for i in range(len(PHOTOS_CLASSES))},
    }
    for name, (image_root, json_file) in _PHOTOS.items():
        image_root, json_file = os.path.join(root, image_root), os.path.join(root, json_file)
        _register(name, functools.partial(ensure_photos, root), dict(json_file=json_file, image_root=image_root,
                                                                     **photos_meta))

    for name, (image_root, json_file) in _COCO.items():
        if name not in DatasetCatalog.list():
            register_coco_instances(
                name,
                _get_builtin_metadata("coco"),
                os.path.join(root, json_file),
                os.path.join(root, image_root),
            )

    for table, convert, class_name in (
        (_CROWDHUMAN, convert_crowdhuman_odgt, "person"),
        (_WIDERFACE, convert_widerface_txt, "face"),
    ):
        for name, (image_root, source, json_file) in table.items():
            image_root, source, json_file = (
                os.path.join(root, p) for p in (image_root, source, json_file)
            )
            prepare = functools.partial(
                _convert_if_stale, name, convert, source, image_root, json_file
            )
            metadata = dict(
                json_file=json_file, image_root=image_root, **_single_class_metadata(class_name)
            )
            _register(name, prepare, metadata)


def _load_user_coco_json(name: str, json_file: str, image_root: str) -> List[Dict]:
    if not os.path.isfile(json_file):
        raise FileNotFoundError(
            f"Dataset '{name}': COCO json file '{json_file}' does not exist "
            f"(relative paths are taken from the current directory {os.getcwd()}). "
            f"Fix the entry ('{name}', '{json_file}', '{image_root}') of the config key "
            "DATASETS.COCO_JSON, e.g. on the command line: DATASETS.COCO_JSON "
            f"\"[('{name}', '/path/to/annotations.json', '/path/to/images')]\"."
        )
    check_coco_json(json_file, name)
    return load_coco_json(json_file, image_root, name)


def register_coco_json_datasets(entries: Sequence[Sequence[str]]) -> None:
    """
    Register user datasets in COCO json format, as listed in ``cfg.DATASETS.COCO_JSON``.

    Args:
        entries: (name, json_file, image_root) triples of strings. A triple whose
            name is already registered with the same json_file and image_root is
            skipped, so calling this twice is harmless.

    Raises:
        ConfigValueError: an entry is not a triple of non-empty strings, or its name is
            already registered with another json_file / image_root (or by another
            component, e.g. a builtin dataset).

    The json is read when the dataset is first loaded (a missing file raises a
    FileNotFoundError naming the file and DATASETS.COCO_JSON then); thing_classes
    are taken from its categories at that point, like detectron2's
    ``register_coco_instances``.
    """
    if isinstance(entries, (str, bytes)) or not isinstance(entries, Sequence):
        raise ConfigValueError(
            "DATASETS.COCO_JSON must be a list of (name, json_file, image_root) triples, "
            f"got {entries!r}"
        )
    for index, entry in enumerate(entries):
        if (
            isinstance(entry, (str, bytes))
            or not isinstance(entry, Sequence)
            or len(entry) != 3
            or not all(isinstance(v, str) and v for v in entry)
        ):
            raise ConfigValueError(
                f"DATASETS.COCO_JSON[{index}] must be a (name, json_file, image_root) triple "
                f"of non-empty strings, got {entry!r}"
            )
        name, json_file, image_root = entry
        if name in DatasetCatalog.list():
            meta = MetadataCatalog.get(name)
            if (meta.get("json_file"), meta.get("image_root")) == (json_file, image_root):
                continue
            raise ConfigValueError(
                f"DATASETS.COCO_JSON[{index}]: dataset name '{name}' is already registered "
                f"(json_file={meta.get('json_file')!r}, image_root={meta.get('image_root')!r}); "
                "choose another name."
            )
        DatasetCatalog.register(
            name, functools.partial(_load_user_coco_json, name, json_file, image_root)
        )
        MetadataCatalog.get(name).set(
            json_file=json_file, image_root=image_root, evaluator_type="coco"
        )
