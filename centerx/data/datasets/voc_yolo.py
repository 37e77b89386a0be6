"""Your data in Pascal VOC or YOLO txt format, registered from the config
(``DATASETS.PASCAL_VOC``, ``DATASETS.YOLO``) like ``DATASETS.COCO_JSON``.

Both give detectron2 dataset dicts with boxes in ``BoxMode.XYXY_ABS`` image
pixels and category ids 0..C-1 in the order of ``thing_classes``, so the same
boxes give the same dicts in COCO json, VOC and YOLO form (tests/data/test_datasets_voc_yolo.py).

- **Pascal VOC**, detectron2's ``register_pascal_voc`` layout: ``<dir>/ImageSets/Main/<split>.txt``
  lists image ids, ``<dir>/Annotations/<id>.xml`` holds the boxes and
  ``<dir>/JPEGImages/<id>.jpg`` the image. As detectron2 does, VOC's 1-based
  pixel indices become 0-based (x1 - 1, y1 - 1) and "difficult" objects are
  kept. Class names are given, or read from the data (every ``<name>``, sorted).
  An annotation file that is missing or does not parse is skipped and counted
  (one warning naming the first ones); an object of a class not in the given
  names, or a box that is not four numbers, stops loading naming the file.
- **YOLO txt**: every image under an images folder, its labels in the labels
  folder at the same relative path with a ``.txt`` ending, one object per line
  ``class cx cy w h`` (centre and size normalised by the image's width and
  height). Class names are a list, or a names file (one per line, or a YAML
  ``names:`` list / dict). An image without a label file has no objects (YOLO's
  convention; counted in the log); an unreadable image is skipped and counted; a
  line that is not five numbers, a class index out of range or values outside
  [0, 1] stop loading naming the file and the line.
"""
import functools
import logging
import math
import os
import xml.etree.ElementTree as ET
from typing import Dict, List, Optional, Sequence, Tuple, Union

import yaml
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from ...text_files import read_lines, read_text
from ..validation import DatasetError
from .coco_json import image_size
from .image_folder import IMAGE_EXTENSIONS
from ...config import ConfigValueError

__all__ = ["load_voc", "load_yolo", "read_class_names", "register_voc_datasets", "register_yolo_datasets"]

logger = logging.getLogger(__name__)

# normalised YOLO coordinates may exceed [0, 1] by rounding of this much
_YOLO_SLACK = 1e-3


def _skipped(name: str, what: str, files: List[str]) -> None:
    if files:
        shown = ", ".join(files[:3]) + (" ..." if len(files) > 3 else "")
        logger.warning(f"Dataset '{name}': {len(files)} {what} skipped ({shown}).")


def load_voc(name: str, dirname: str, split: str, class_names: Optional[Sequence[str]] = None) -> List[Dict]:
    """Dataset dicts of a Pascal VOC folder's ``split`` (see the module docstring).

    Sets ``thing_classes`` of ``name`` to ``class_names``, or to the sorted names
    found in the annotations when None.
    """
    ids_file = os.path.join(dirname, "ImageSets", "Main", f"{split}.txt")
    if not os.path.isfile(ids_file):
        raise FileNotFoundError(f"Dataset '{name}': '{ids_file}' does not exist (DATASETS.PASCAL_VOC needs "
                                "detectron2's VOC layout: ImageSets/Main/<split>.txt, Annotations/, JPEGImages/).")
    ids = [line.split()[0] for line in read_lines(ids_file, f"Dataset '{name}' image-id list") if line.strip()]
    parsed, unreadable = [], []
    for file_id in ids:
        xml_file = os.path.join(dirname, "Annotations", f"{file_id}.xml")
        try:
            parsed.append((file_id, xml_file, ET.parse(xml_file).getroot()))
        except (OSError, ET.ParseError):
            unreadable.append(xml_file)
    _skipped(name, "missing or unparsable annotation files", unreadable)
    names = list(class_names) if class_names else sorted({o.findtext("name", "").strip() for _, _, root in parsed
                                                          for o in root.findall("object")} - {""})
    index = {c: i for i, c in enumerate(names)}
    dicts = []
    for file_id, xml_file, root in parsed:
        image = os.path.join(dirname, "JPEGImages", f"{file_id}.jpg")
        size = root.find("size")
        try:
            width, height = int(float(size.findtext("width"))), int(float(size.findtext("height")))
        except (AttributeError, TypeError, ValueError):
            width, height = image_size(image)
        annotations = []
        for obj in root.findall("object"):
            cls = obj.findtext("name", "").strip()
            if cls not in index:
                raise DatasetError(f"Dataset '{name}', {xml_file}: object of class '{cls}', not one of the class "
                                   f"names {names} given in DATASETS.PASCAL_VOC.")
            box = obj.find("bndbox")
            try:
                x1, y1, x2, y2 = (float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            except (AttributeError, TypeError, ValueError):
                raise DatasetError(f"Dataset '{name}', {xml_file}: an object of class '{cls}' has no bndbox of four "
                                   "numbers (xmin, ymin, xmax, ymax).") from None
            annotations.append({"bbox": [x1 - 1.0, y1 - 1.0, x2, y2], "bbox_mode": BoxMode.XYXY_ABS,
                                "category_id": index[cls]})
        dicts.append({"file_name": image, "image_id": file_id, "width": width, "height": height,
                      "annotations": annotations})
    MetadataCatalog.get(name).set(thing_classes=names)
    return dicts


def read_class_names(names: Union[str, Sequence[str]], where: str) -> List[str]:
    """Class names given as a list, or as a file: one name per line (``.txt`` and
    others), or a YAML file with ``names:`` as a list or an {index: name} dict
    (Ultralytics' ``data.yaml``), ordered by the integer value of its keys
    (``'10'`` after ``'2'``), which must be 0..C-1. Files are read as UTF-8 (a
    BOM accepted)."""
    if not isinstance(names, str):
        return [str(n) for n in names]
    if not os.path.isfile(names):
        raise FileNotFoundError(f"{where}: class names file '{names}' does not exist.")
    if names.endswith((".yaml", ".yml")):
        try:
            data = yaml.safe_load(read_text(names, f"{where}: class names file"))
        except yaml.YAMLError as e:
            raise DatasetError(f"{where}: '{names}' is not valid YAML: {' '.join(str(e).split())}") from None
        value = data.get("names") if isinstance(data, dict) else None
        if isinstance(value, dict):
            return _names_by_index(value, names, where)
        if isinstance(value, list):
            return [str(v) for v in value]
        raise DatasetError(f"{where}: '{names}' has no 'names:' list or dict.")
    return [line.strip() for line in read_lines(names, f"{where}: class names file") if line.strip()]


def _names_by_index(value: Dict, names_file: str, where: str) -> List[str]:
    """An {index: name} dict as a list ordered by the integer index."""
    try:
        indexed = {int(str(k).strip()): str(v) for k, v in value.items()}
    except ValueError:
        raise DatasetError(f"{where}: '{names_file}': the keys of 'names:' must be class indices 0, 1, ..., got "
                           f"{list(value)[:6]}.") from None
    if sorted(indexed) != list(range(len(indexed))):
        raise DatasetError(f"{where}: '{names_file}': the keys of 'names:' must be 0..{len(indexed) - 1}, each once; "
                           f"got {sorted(indexed)[:10]}.")
    return [indexed[i] for i in range(len(indexed))]


def _yolo_objects(name: str, label_file: str, width: int, height: int, num_classes: int) -> List[Dict]:
    """The objects of one label file. A line that is not five numbers, a class out
    of range or finite values outside [0, 1] stop loading (naming the file and
    the line); a box of infinite / NaN values or of non-positive width or height
    is kept as such, to be counted and skipped like a COCO box
    (:func:`~centerx.data.validation.invalid_box_reason`)."""
    annotations = []
    for line_no, line in enumerate(read_lines(label_file, f"Dataset '{name}': YOLO label file"), 1):
        fields = line.split()
        if not fields:
            continue
        where = f"Dataset '{name}', {label_file} line {line_no}"
        try:
            if len(fields) != 5:
                raise ValueError
            cls, cx, cy, w, h = int(fields[0]), *(float(v) for v in fields[1:])
        except ValueError:
            raise DatasetError(f"{where}: '{line.strip()}' is not 'class cx cy w h' (an integer and four "
                               "numbers; segment lines are not read).") from None
        if not 0 <= cls < num_classes:
            raise DatasetError(f"{where}: class {cls} is not in 0..{num_classes - 1} (the class names given).")
        finite = all(math.isfinite(v) for v in (cx, cy, w, h))
        if finite and not (all(-_YOLO_SLACK <= v <= 1 + _YOLO_SLACK for v in (cx, cy)) and
                           max(w, h) <= 1 + _YOLO_SLACK):
            raise DatasetError(f"{where}: '{line.strip()}' is not normalised to [0, 1] by the image size "
                               f"({width} x {height} px).")
        annotations.append({"bbox": [(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width,
                                     (cy + h / 2) * height], "bbox_mode": BoxMode.XYXY_ABS, "category_id": cls})
    return annotations


def load_yolo(name: str, images: str, labels: str, class_names: Union[str, Sequence[str]]) -> List[Dict]:
    """Dataset dicts of a YOLO txt dataset (see the module docstring); sets ``thing_classes``."""
    where = f"Dataset '{name}' (DATASETS.YOLO)"
    names = read_class_names(class_names, where)
    if not os.path.isdir(images):
        raise FileNotFoundError(f"{where}: images folder '{images}' does not exist.")
    if not os.path.isdir(labels):
        raise FileNotFoundError(f"{where}: labels folder '{labels}' does not exist.")
    files = sorted(os.path.join(root, f) for root, _, fs in os.walk(images) for f in fs
                   if f.lower().endswith(IMAGE_EXTENSIONS))
    dicts, unreadable, unlabelled = [], [], []
    for i, image in enumerate(files):
        try:
            width, height = image_size(image)
        except (OSError, ValueError):
            unreadable.append(image)
            continue
        label_file = os.path.join(labels, os.path.splitext(os.path.relpath(image, images))[0] + ".txt")
        if os.path.isfile(label_file):
            annotations = _yolo_objects(name, label_file, width, height, len(names))
        else:
            annotations = []
            unlabelled.append(image)
        dicts.append({"file_name": image, "image_id": i, "width": width, "height": height,
                      "annotations": annotations})
    _skipped(name, "unreadable images", unreadable)
    if unlabelled:
        logger.info(f"Dataset '{name}': {len(unlabelled)} images without a label file, taken as images without "
                    "objects.")
    MetadataCatalog.get(name).set(thing_classes=names)
    return dicts


def _entries(key: str, entries, lengths: Tuple[int, ...], form: str) -> List[Tuple]:
    if isinstance(entries, (str, bytes)) or not isinstance(entries, Sequence):
        raise ConfigValueError(f"{key} must be a list of {form} entries, got {entries!r}")
    out = []
    for i, entry in enumerate(entries):
        if isinstance(entry, (str, bytes)) or not isinstance(entry, Sequence) or len(entry) not in lengths \
                or not all(isinstance(v, str) and v for v in entry[:3]):
            raise ConfigValueError(f"{key}[{i}] must be {form}, got {entry!r}")
        out.append(tuple(entry))
    return out


def _register(key: str, name: str, loader, source: Tuple) -> None:
    if name in DatasetCatalog.list():
        if MetadataCatalog.get(name).get("source") == source:
            return
        raise ConfigValueError(f"{key}: dataset name '{name}' is already registered for something else; choose another.")
    DatasetCatalog.register(name, loader)
    MetadataCatalog.get(name).set(source=source, evaluator_type="coco")


def register_voc_datasets(entries) -> None:
    """Register ``DATASETS.PASCAL_VOC``: (name, folder, split) or (name, folder,
    split, class names) entries. Registering the same entry twice is harmless."""
    form = "(name, folder, split) or (name, folder, split, class names)"
    for entry in _entries("DATASETS.PASCAL_VOC", entries, (3, 4), form):
        name, dirname, split = entry[:3]
        classes = tuple(entry[3]) if len(entry) == 4 and entry[3] else None
        _register("DATASETS.PASCAL_VOC", name, functools.partial(load_voc, name, dirname, split, classes),
                  ("voc", dirname, split, classes))
        if classes:
            MetadataCatalog.get(name).set(thing_classes=list(classes))


def register_yolo_datasets(entries) -> None:
    """Register ``DATASETS.YOLO``: (name, images folder, labels folder, class names
    or a names file) entries. Registering the same entry twice is harmless."""
    form = "(name, images folder, labels folder, class names or names file)"
    for name, images, labels, classes in _entries("DATASETS.YOLO", entries, (4,), form):
        classes = classes if isinstance(classes, str) else tuple(classes)
        _register("DATASETS.YOLO", name, functools.partial(load_yolo, name, images, labels, classes),
                  ("yolo", images, labels, classes))
