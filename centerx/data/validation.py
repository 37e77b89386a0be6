"""Checking datasets before the first iteration, so that nothing fails after
training that could have been known before it.

- :func:`check_coco_json`: the structure of a COCO json (images, annotations,
  categories, bbox shapes), each problem named with the file and the image or
  annotation id, before detectron2 reads it.
- :func:`validate_datasets`: for every dataset of a config, its classes against
  the model's number of classes, boxes that will be skipped (negative, zero,
  infinite or NaN size), and its image files (present, decodable, of the size
  the annotations give). Unreadable images are a counted, logged skip: they are
  recorded in the dataset's metadata (``unreadable_images``), and training and
  evaluation both leave them out (:func:`readable_dataset_dicts`).
"""

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from detectron2.utils import comm
from tqdm import tqdm

from ..console import on_screen
from ..modeling.meta_arch import detector_class
from ..suggestions import did_you_mean
from ..text_files import read_text
from .image_io import read_image

logger = logging.getLogger(__name__)

UNREADABLE_KEY = "unreadable_images"
# image checks of at least this many files show a progress bar (with its ETA)
PROGRESS_MIN_IMAGES = 500


class DatasetError(ValueError):
    """A dataset that cannot be used as it is, with the file and the entry at fault."""


# ---------------------------------------------------------------------------- COCO json structure
def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_coco_json(json_file: str, name: str) -> None:
    """Raise :class:`DatasetError` for the first structural problem of a COCO
    instances json, naming ``json_file``, the dataset ``name`` and the image or
    annotation id: not json, not an object with ``images``, ``annotations`` and
    ``categories`` lists, no categories, an image without ``id`` / ``file_name`` /
    positive ``width`` and ``height``, an annotation without ``id`` / ``image_id`` /
    ``category_id`` / a ``bbox`` of 4 numbers, or referring to an image or category
    that is not there. Box *values* (negative, zero, infinite or NaN sizes) are not
    errors: those annotations are skipped and counted when the data is used."""
    where = f"Dataset '{name}', {json_file}"
    if os.path.getsize(json_file) == 0:
        raise DatasetError(f"{where}: the file is empty (expected a COCO instances json).")
    with open(json_file, "rb") as f:
        if f.read(3) == b"\xef\xbb\xbf":
            raise DatasetError(
                f"{where}: the file starts with a UTF-8 byte-order mark, which pycocotools cannot read; "
                "save it as UTF-8 without BOM."
            )
    try:
        data = json.loads(read_text(json_file, f"Dataset '{name}': COCO json"))
    except json.JSONDecodeError as e:
        raise DatasetError(f"{where}: not valid json ({e.msg} at line {e.lineno}, column {e.colno}).") from e
    if not isinstance(data, dict):
        raise DatasetError(
            f"{where}: expected a COCO json object with 'images', 'annotations' and 'categories', "
            f"got a {type(data).__name__}."
        )
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)]
    if missing:
        raise DatasetError(
            f"{where}: not a COCO instances json: no list {' / '.join(repr(k) for k in missing)}"
            f" (keys found: {sorted(data)[:8]})."
        )
    if not data["categories"]:
        raise DatasetError(f'{where}: \'categories\' is empty; list every class as {{"id": 1, "name": "..."}}.')
    category_ids = set()
    for i, c in enumerate(data["categories"]):
        if not isinstance(c, dict) or not isinstance(c.get("id"), int) or not isinstance(c.get("name"), str):
            raise DatasetError(f"{where}: categories[{i}] = {c!r} needs an integer 'id' and a string 'name'.")
        category_ids.add(c["id"])
    image_ids = set()
    for i, im in enumerate(data["images"]):
        label = f"images[{i}] (id {im.get('id')!r})" if isinstance(im, dict) else f"images[{i}]"
        if not isinstance(im, dict) or "id" not in im:
            raise DatasetError(f"{where}: {label} has no 'id'.")
        if not isinstance(im.get("file_name"), str) or not im["file_name"]:
            raise DatasetError(f"{where}: {label} has no 'file_name'.")
        for key in ("width", "height"):
            if not _number(im.get(key)) or im[key] <= 0:
                raise DatasetError(
                    f"{where}: {label} ('{im['file_name']}') needs a positive '{key}' in pixels, got {im.get(key)!r}."
                )
        image_ids.add(im["id"])
    for i, a in enumerate(data["annotations"]):
        label = f"annotations[{i}] (id {a.get('id')!r})" if isinstance(a, dict) else f"annotations[{i}]"
        if not isinstance(a, dict) or "id" not in a:
            raise DatasetError(f"{where}: {label} has no 'id'.")
        if a.get("image_id") not in image_ids:
            raise DatasetError(f"{where}: {label} refers to image_id {a.get('image_id')!r}, which no image has.")
        if a.get("category_id") not in category_ids:
            raise DatasetError(
                f"{where}: {label} has category_id {a.get('category_id')!r}, not one of the "
                f"categories {sorted(category_ids)}."
            )
        box = a.get("bbox")
        if not isinstance(box, list) or len(box) != 4 or not all(_number(v) for v in box):
            raise DatasetError(
                f"{where}: {label} of image_id {a['image_id']!r} has bbox {box!r}; expected "
                "[x, y, width, height], 4 numbers in pixels."
            )


# ---------------------------------------------------------------------------- boxes
def invalid_box_reason(bbox: Sequence[float], bbox_mode: BoxMode = BoxMode.XYWH_ABS) -> str | None:
    """Why an annotation's box cannot be trained on, or None: "not finite"
    (infinite or NaN) or "non-positive size" (negative or zero width or height).
    Such boxes are skipped, never repaired.

    Every dataset format goes through this one check: COCO json boxes are
    [x, y, w, h] (``BoxMode.XYWH_ABS``); Pascal VOC and YOLO boxes are
    [x1, y1, x2, y2] (``BoxMode.XYXY_ABS``), whose width is x2 - x1, so a VOC box
    with xmin > xmax is a non-positive size, as its COCO twin would be."""
    if not all(math.isfinite(float(v)) for v in bbox):
        return "not finite"
    if bbox_mode == BoxMode.XYXY_ABS:
        width, height = float(bbox[2]) - float(bbox[0]), float(bbox[3]) - float(bbox[1])
    elif bbox_mode == BoxMode.XYWH_ABS:
        width, height = float(bbox[2]), float(bbox[3])
    else:
        raise ValueError(f"bbox_mode {bbox_mode} is not read here; dataset boxes are XYWH_ABS or XYXY_ABS.")
    if width <= 0 or height <= 0:
        return "non-positive size"
    return None


# ---------------------------------------------------------------------------- datasets of a config
@dataclass
class DatasetReport:
    """What :func:`validate_datasets` found in one dataset."""

    name: str
    images: int = 0
    annotations: int = 0
    images_checked: int = 0
    unreadable: list[str] = field(default_factory=list)
    invalid_boxes: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        text = (
            f"Dataset '{self.name}': {self.images} images, {self.annotations} annotations; "
            f"{self.images_checked} image files checked"
        )
        if self.unreadable:
            shown = ", ".join(self.unreadable[:3]) + (" ..." if len(self.unreadable) > 3 else "")
            text += f", {len(self.unreadable)} missing or unreadable, skipped in training and evaluation ({shown})"
        if self.invalid_boxes:
            text += "; boxes skipped: " + ", ".join(f"{n} {reason}" for reason, n in self.invalid_boxes.items())
        return text + "."


def model_num_classes(cfg) -> tuple[str, int] | None:
    """(config key, value) of the number of classes of the config's detector (a
    Distiller's student), or None for a meta-architecture without such a key."""

    detector = detector_class(cfg)
    if detector is None:
        return None
    return f"{detector.config_prefix}.NUM_CLASSES", detector.config_node(cfg).NUM_CLASSES


def _check_classes(name: str, dicts: list[dict], cfg) -> None:
    classes = MetadataCatalog.get(name).get("thing_classes")
    expected = model_num_classes(cfg)
    if classes is None or expected is None:
        return
    key, num = expected
    if len(classes) != num:
        raise DatasetError(
            f"Dataset '{name}' has {len(classes)} classes ({', '.join(classes[:6])}"
            f"{' ...' if len(classes) > 6 else ''}) but {key} is {num}: set {key} {len(classes)}."
        )
    for d in dicts:
        for a in d.get("annotations", []):
            if not 0 <= a.get("category_id", 0) < num:
                raise DatasetError(
                    f"Dataset '{name}', image {d.get('file_name')}: an annotation has class index "
                    f"{a.get('category_id')}, outside the {num} classes of {key}."
                )


def _check_images(name: str, dicts: list[dict], limit: int) -> tuple[int, list[str]]:
    """Decode the images of ``dicts`` (all when ``limit`` < 0, else ``limit`` evenly
    spread); return (number checked, unreadable file names). An image whose size
    differs from its record's is an error."""
    if limit == 0 or not dicts:
        return 0, []
    step = 1 if limit < 0 or limit >= len(dicts) else len(dicts) / limit
    picked = [dicts[int(i * step)] for i in range(len(dicts) if step == 1 else limit)]
    unreadable = []
    for d in tqdm(
        picked, desc=f"checking the images of '{name}'", unit="image", disable=len(picked) < PROGRESS_MIN_IMAGES
    ):
        try:
            image = read_image(d["file_name"], "RGB")
        except (OSError, ValueError) as e:
            logger.warning(f"Dataset '{name}': skipping {d['file_name']}: {e}")
            unreadable.append(d["file_name"])
            continue
        h, w = image.shape[:2]
        if ("height" in d and d["height"] != h) or ("width" in d and d["width"] != w):
            raise DatasetError(
                f"Dataset '{name}': {d['file_name']} is {w} x {h} pixels but its annotations say "
                f"{d.get('width')} x {d.get('height')}; fix the json (or the image)."
            )
    return len(picked), unreadable


def validate_dataset(name: str, cfg, check_images: int) -> DatasetReport:
    """Validate one registered dataset (see :func:`validate_datasets`)."""
    registered = DatasetCatalog.list()
    if name not in registered:
        raise DatasetError(
            f"Dataset '{name}' (DATASETS.TRAIN / TEST) is not registered{did_you_mean(name, registered, cutoff=0.6)}"
            " Register your own data from the config (DATASETS.COCO_JSON, DATASETS.PASCAL_VOC or "
            "DATASETS.YOLO, docs/config.md), or use a built-in set: shapes_train / shapes_val, "
            "photos_train / photos_val."
        )
    dicts = DatasetCatalog.get(name)
    report = DatasetReport(name, images=len(dicts), annotations=sum(len(d.get("annotations", [])) for d in dicts))
    if not dicts:
        raise DatasetError(f"Dataset '{name}' has no images.")
    _check_classes(name, dicts, cfg)
    for d in dicts:
        for a in d.get("annotations", []):
            reason = invalid_box_reason(a["bbox"], a.get("bbox_mode", BoxMode.XYWH_ABS)) if "bbox" in a else None
            if reason:
                report.invalid_boxes[reason] = report.invalid_boxes.get(reason, 0) + 1
    if name in cfg.DATASETS.TEST and report.annotations == 0:
        raise DatasetError(
            f"Dataset '{name}' is a test set (DATASETS.TEST) with {report.images} images and no "
            "annotation: there is nothing to score the model against. Check its labels (for YOLO "
            "txt: the labels folder and that each label file has the image's name with .txt)."
        )
    report.images_checked, report.unreadable = _check_images(name, dicts, check_images)
    if report.images_checked and len(report.unreadable) == report.images_checked:
        raise DatasetError(
            f"Dataset '{name}': none of the {report.images_checked} image files checked can be read "
            f"(e.g. {report.unreadable[0]}); is the image folder right?"
        )
    _record_unreadable(name, report.unreadable)
    return report


def validate_datasets(cfg, names: Sequence[str] | None = None) -> list[DatasetReport]:
    """Validate the datasets of ``cfg`` (DATASETS.TRAIN and TEST, or ``names``) once,
    before training or evaluation, and log a summary line per dataset.

    Raises :class:`DatasetError` for what cannot work (a malformed json, classes
    that do not fit the model, image sizes that disagree, no readable image);
    missing or undecodable images and boxes of invalid size are skipped and
    counted. Training datasets check ``DATASETS.CHECK_IMAGES`` of their images;
    test datasets check all of them (evaluation reads them all). In a
    multi-process run the main process checks and the others receive its result.
    """
    names = list(names) if names is not None else list(dict.fromkeys([*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST]))
    reports, error, shared = [], None, None
    if comm.is_main_process():
        try:
            reports = [
                validate_dataset(n, cfg, -1 if n in cfg.DATASETS.TEST else cfg.DATASETS.CHECK_IMAGES) for n in names
            ]
            check_same_classes(cfg, names)
            shared = ("ok", [(r.name, r.unreadable) for r in reports])
        except (DatasetError, FileNotFoundError) as e:
            error, shared = e, ("error", str(e))
    if comm.get_world_size() > 1:
        shared = comm.all_gather(shared)[0]
    if error is not None:
        raise error
    if shared[0] == "error":
        raise DatasetError(shared[1])
    if not comm.is_main_process():
        for name, unreadable in shared[1]:
            _record_unreadable(name, unreadable)
    for report in reports:
        on_screen(logger, report.summary())
    return reports


def check_same_classes(cfg, names: Sequence[str]) -> None:
    """Raise :class:`DatasetError` when the datasets ``names`` (loaded already) or
    MODEL.CENTERX.CLASS_NAMES, where set, do not name the same classes in the same
    order: class index i must mean one class in training and in evaluation."""
    lists = (
        [("MODEL.CENTERX.CLASS_NAMES", list(cfg.MODEL.CENTERX.CLASS_NAMES))]
        if len(cfg.MODEL.CENTERX.CLASS_NAMES)
        else []
    )
    lists += [
        (f"dataset '{n}'", list(MetadataCatalog.get(n).get("thing_classes")))
        for n in names
        if MetadataCatalog.get(n).get("thing_classes") is not None
    ]
    if not lists:
        return
    first, reference = lists[0]
    for other, classes in lists[1:]:
        if classes == reference:
            continue
        if len(classes) != len(reference):
            raise DatasetError(
                f"{first} has {len(reference)} classes ({', '.join(reference[:6])}) but {other} has "
                f"{len(classes)} ({', '.join(classes[:6])}): a class index would mean different "
                "classes in training and evaluation."
            )
        i = next(i for i, (a, b) in enumerate(zip(reference, classes)) if a != b)
        raise DatasetError(
            f"{first} and {other} name their classes differently: class {i} is '{reference[i]}' in "
            f"the first and '{classes[i]}' in the second ({reference} vs {classes}). Give both the "
            "same class names in the same order (e.g. the 4th entry of DATASETS.PASCAL_VOC)."
        )


def _record_unreadable(name: str, files: Sequence[str]) -> None:
    meta = MetadataCatalog.get(name)
    if UNREADABLE_KEY in meta.as_dict():
        delattr(meta, UNREADABLE_KEY)
    meta.set(**{UNREADABLE_KEY: tuple(files)})


def readable_dataset_dicts(name: str) -> tuple[list[dict], list[str]]:
    """The dataset's dicts without the images :func:`validate_datasets` found
    unreadable, and those file names."""
    skip = set(MetadataCatalog.get(name).get(UNREADABLE_KEY, ()))
    dicts = DatasetCatalog.get(name)
    return [d for d in dicts if d["file_name"] not in skip], sorted(skip)
