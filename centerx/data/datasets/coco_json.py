"""Helpers of the converters that write COCO json files: an image's size from its
header, boxes clipped to the image, a single-class COCO json written atomically."""
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

from PIL import Image

from .shapes import atomic_write_bytes

__all__ = ["clip_xywh", "image_size", "write_single_class_coco"]


def image_size(path: str) -> Tuple[int, int]:
    """
    Returns:
        (width, height) of the image at ``path`` as detectron2's ``read_image`` sees
        it (EXIF orientation applied). Reads the header only.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Image '{path}' listed in the annotations does not exist.")
    with Image.open(path) as image:
        width, height = image.size
        orientation = image.getexif().get(0x0112, 1)
    if orientation in (5, 6, 7, 8):  # rotated by 90 or 270 degrees
        width, height = height, width
    return width, height


def clip_xywh(box: Sequence[float], width: int, height: int) -> Optional[List[float]]:
    """
    Returns:
        [x, y, w, h] of ``box`` (x, y, w, h) clipped to the image, or None if the
        clipped box has no area.
    """
    x, y, w, h = (float(v) for v in box)
    x0, y0 = max(x, 0.0), max(y, 0.0)
    x1, y1 = min(x + w, float(width)), min(y + h, float(height))
    if x1 <= x0 or y1 <= y0:
        return None
    return [x0, y0, x1 - x0, y1 - y0]


def write_single_class_coco(out_json: str, info: Dict, images, annotations, class_name: str) -> str:
    """Write a COCO json with the one category ``class_name`` (id 1) atomically; returns ``out_json``."""
    coco = {
        "info": info,
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": class_name, "supercategory": class_name}],
    }
    atomic_write_bytes(out_json, json.dumps(coco).encode("utf-8"))
    return out_json
