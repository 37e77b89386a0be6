"""CrowdHuman (.odgt) -> COCO json ("person"), for the built-in crowdhuman_* datasets."""
import json
import logging
import os

from .coco_json import clip_xywh, image_size, write_single_class_coco

__all__ = ["convert_crowdhuman_odgt"]

logger = logging.getLogger(__name__)


def convert_crowdhuman_odgt(
    odgt_path: str, image_dir: str, out_json: str, box_type: str = "fbox"
) -> str:
    """
    Convert a CrowdHuman annotation file (one json record per line:
    ``{"ID": ..., "gtboxes": [{"tag", "fbox", "vbox", "hbox", "extra", "head_attr"}]}``)
    to a COCO json with the single class "person".

    Boxes (x, y, w, h in pixels) are clipped to the image, whose size is read from
    ``image_dir/<ID>.jpg``. Ignore regions are kept as ``iscrowd=1`` annotations
    (COCO evaluation then ignores detections on them, and detectron2-style mappers
    drop them from the training targets): boxes tagged "mask" (reflections, posters,
    crowds), boxes with ``extra.ignore == 1``, and for ``box_type="hbox"`` also
    ``head_attr.ignore == 1``. Boxes with no area inside the image are dropped.
    The counts are logged and stored in the json's "info".

    Args:
        odgt_path: e.g. "annotation_train.odgt".
        image_dir: directory of the images; ``file_name`` in the json is relative to it.
        out_json: output path (written atomically).
        box_type: "fbox" (full body), "vbox" (visible body) or "hbox" (head).

    Returns:
        str: ``out_json``.
    """
    if box_type not in ("fbox", "vbox", "hbox"):
        raise ValueError(f"box_type must be 'fbox', 'vbox' or 'hbox', got {box_type!r}")
    images, annotations = [], []
    counts = {"num_ignore": 0, "num_dropped": 0}
    with open(odgt_path) as f:
        for line in f:
            if not line.strip():
                continue
            record = json.loads(line)
            file_name = record["ID"] + ".jpg"
            width, height = image_size(os.path.join(image_dir, file_name))
            image_id = len(images) + 1
            images.append(
                {"id": image_id, "file_name": file_name, "height": height, "width": width}
            )
            for gt in record.get("gtboxes", []):
                box = clip_xywh(gt[box_type], width, height)
                if box is None:
                    counts["num_dropped"] += 1
                    continue
                ignore = gt.get("tag") != "person" or gt.get("extra", {}).get("ignore", 0) == 1
                if box_type == "hbox":
                    ignore = ignore or gt.get("head_attr", {}).get("ignore", 0) == 1
                counts["num_ignore"] += int(ignore)
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": 1,
                        "bbox": box,
                        "area": box[2] * box[3],
                        "iscrowd": int(ignore),
                    }
                )
    info = {
        "converter": "centerx crowdhuman v1",
        "source": os.path.basename(odgt_path),
        "box_type": box_type,
        "num_images": len(images),
        "num_boxes": len(annotations) - counts["num_ignore"],
        **counts,
    }
    logger.info(
        "CrowdHuman %s: %d images, %d boxes, %d ignore regions (iscrowd=1), "
        "%d boxes dropped (no area inside the image) -> %s",
        odgt_path, len(images), info["num_boxes"], counts["num_ignore"],
        counts["num_dropped"], out_json,
    )
    return write_single_class_coco(out_json, info, images, annotations, "person")
