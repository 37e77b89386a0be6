"""What a CenterNet-family detector will see of a dataset: box sizes in output
cells, objects per image, classes, and the boxes its targets treat specially
(``./run.sh check-data``, projects/data/check_data.py).

Sizes are taken at the training scale: an image's longer side fitted to
``INPUT.TRAIN_SIZE`` (the mapper's scale 1; its random scale range then
multiplies them by ``INPUT.SCALE_RANGE``), divided by the detector's output
stride. Flags, per box:

- ``degenerate``: width or height <= 0 pixels (detectron2 drops them);
- ``outside``: extends beyond the image (clipped in training);
- ``tiny``: under ``INPUT.MIN_BOX_SIZE`` pixels at the training scale (dropped by the mapper);
- the detector's own (its ``box_flags``): ``radius_0`` and ``over_max_objects``
  for CenterNet, ``single_cell`` for TTFNet.
"""

import math
from dataclasses import dataclass, field

import numpy as np
from detectron2.structures import BoxMode

from ..modeling.meta_arch import detector_class

__all__ = ["BoxStatistics", "box_statistics", "CELL_BINS"]

# upper edges of the size histogram, in output cells
CELL_BINS = (1, 2, 4, 8, 16, 32, 64, 128, math.inf)


@dataclass
class BoxStatistics:
    """Statistics of one dataset (see the module docstring)."""

    name: str
    images: int
    objects: int
    classes: list[str]
    per_class: dict[str, int]
    objects_per_image: np.ndarray  # [images]
    widths_cells: np.ndarray  # [objects] at the training scale
    heights_cells: np.ndarray
    flags: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)  # flag -> a few "file: box" strings

    def size_histogram(self) -> list[int]:
        """Objects per bin of max(w, h) in cells, bins :data:`CELL_BINS` (upper edges)."""
        longer = np.maximum(self.widths_cells, self.heights_cells)
        edges = (0.0,) + CELL_BINS
        return [int(((longer >= lo) & (longer < hi)).sum()) for lo, hi in zip(edges[:-1], edges[1:])]

    def summary(self) -> dict:
        per_image = self.objects_per_image
        sizes = np.maximum(self.widths_cells, self.heights_cells)
        return {
            "dataset": self.name,
            "images": self.images,
            "objects": self.objects,
            "objects per image (mean / median / max)": [
                round(float(per_image.mean()), 2) if self.images else 0,
                float(np.median(per_image)) if self.images else 0,
                int(per_image.max()) if self.images else 0,
            ],
            "images without objects": int((per_image == 0).sum()),
            "box size, max(w, h) in cells (5th / 50th / 95th percentile)": [
                round(float(np.percentile(sizes, q)), 2) for q in (5, 50, 95)
            ]
            if self.objects
            else [],
            "objects per class": self.per_class,
            "flags": self.flags,
        }


def box_statistics(name: str, dicts: list[dict], classes: list[str] | None, cfg, stride: int) -> BoxStatistics:
    """Statistics of detectron2 dataset dicts as the config's detector sees them.

    Args:
        dicts: the dataset's dicts (with "width", "height" and "annotations").
        classes: thing_classes, or None (category ids are then shown as numbers).
        cfg: the config (INPUT.TRAIN_SIZE, INPUT.MIN_BOX_SIZE, the detector's keys).
        stride: the detector's output stride (input pixels per cell).
    """
    rows, per_image = [], []
    for d in dicts:
        w_img, h_img = float(d["width"]), float(d["height"])
        anns = [a for a in d.get("annotations", []) if not a.get("iscrowd", 0)]
        per_image.append(len(anns))
        for a in anns:
            x1, y1, x2, y2 = BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS)
            rows.append((x1, y1, x2, y2, w_img, h_img, a["category_id"], len(per_image) - 1))
    boxes = np.asarray(rows, dtype=np.float64).reshape(-1, 8)
    x1, y1, x2, y2, w_img, h_img, cls, image = boxes.T
    scale = cfg.INPUT.TRAIN_SIZE / np.maximum(np.maximum(w_img, h_img), 1.0)
    w_px, h_px = (x2 - x1) * scale, (y2 - y1) * scale
    w_cells, h_cells = w_px / stride, h_px / stride
    flags = {
        "degenerate": (x2 <= x1) | (y2 <= y1),
        "outside": (x1 < 0) | (y1 < 0) | (x2 > w_img) | (y2 > h_img),
        "tiny": (np.minimum(w_px, h_px) < cfg.INPUT.MIN_BOX_SIZE) & (x2 > x1) & (y2 > y1),
    }
    detector = detector_class(cfg)
    if detector is not None:
        flags.update(detector.box_flags(cfg, w_cells, h_cells, w_px * h_px, image))
    names = list(classes) if classes else sorted({str(int(c)) for c in cls})

    def label(c) -> str:
        return names[int(c)] if classes and 0 <= int(c) < len(names) else str(int(c))

    per_class = {n: 0 for n in names}
    for c in cls:
        per_class[label(c)] = per_class.get(label(c), 0) + 1
    examples = {}
    for key, mask in flags.items():
        examples[key] = [
            f"{dicts[int(image[i])]['file_name']}: {label(cls[i])} ({x1[i]:.0f}, {y1[i]:.0f}, {x2[i]:.0f}, {y2[i]:.0f})"
            for i in np.flatnonzero(mask)[:3]
        ]
    return BoxStatistics(
        name,
        len(dicts),
        len(boxes),
        names,
        per_class,
        np.asarray(per_image, dtype=np.int64),
        w_cells,
        h_cells,
        {k: int(v.sum()) for k, v in flags.items()},
        examples,
    )
