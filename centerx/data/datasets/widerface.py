"""WIDER FACE (.txt) -> COCO json ("face"), for the built-in widerface_* datasets."""
import logging
import os

from .coco_json import clip_xywh, image_size, write_single_class_coco

__all__ = ["convert_widerface_txt"]

logger = logging.getLogger(__name__)


def convert_widerface_txt(txt_path: str, image_root: str, out_json: str) -> str:
    """
    Convert a WIDER FACE ground-truth file (``wider_face_{train,val}_bbx_gt.txt``) to
    a COCO json with the single class "face".

    The format is, per image: its path relative to ``image_root``; the number of
    faces n; n lines "x1 y1 w h blur expression illumination invalid occlusion pose".
    An image with n = 0 is followed by one dummy line of zeros, which is skipped.
    Faces with ``invalid == 1`` or with no area (zero width/height, or nothing left
    after clipping to the image, whose size is read from the file) are dropped. The
    counts are logged and stored in the json's "info"; images without faces are kept
    with no annotations.

    Args:
        txt_path: the ground-truth txt file.
        image_root: e.g. "WIDER_train/images".
        out_json: output path (written atomically).

    Returns:
        str: ``out_json``.
    """
    with open(txt_path) as f:
        lines = [line.strip() for line in f if line.strip()]
    images, annotations = [], []
    counts = {"num_invalid": 0, "num_zero_size": 0}
    pos = 0
    while pos < len(lines):
        file_name = lines[pos]
        try:
            num_faces = int(lines[pos + 1])
        except (IndexError, ValueError) as e:
            raise ValueError(
                f"{txt_path}: expected a face count after '{file_name}' (line {pos + 2})"
            ) from e
        pos += 2
        width, height = image_size(os.path.join(image_root, file_name))
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        if num_faces == 0:
            if pos < len(lines) and len(lines[pos].split()) == 10:
                pos += 1
            continue
        for fields in (lines[i].split() for i in range(pos, pos + num_faces)):
            if len(fields) < 8:
                raise ValueError(f"{txt_path}: malformed face line {' '.join(fields)!r}")
            x, y, w, h = (float(v) for v in fields[:4])
            if int(fields[7]) == 1:
                counts["num_invalid"] += 1
                continue
            box = clip_xywh((x, y, w, h), width, height) if w > 0 and h > 0 else None
            if box is None:
                counts["num_zero_size"] += 1
                continue
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                }
            )
        pos += num_faces
    info = {
        "converter": "centerx widerface v1",
        "source": os.path.basename(txt_path),
        "num_images": len(images),
        "num_boxes": len(annotations),
        **counts,
    }
    logger.info(
        "WIDER FACE %s: %d images, %d faces; dropped %d invalid and %d zero-size -> %s",
        txt_path, len(images), len(annotations), counts["num_invalid"],
        counts["num_zero_size"], out_json,
    )
    return write_single_class_coco(out_json, info, images, annotations, "face")
