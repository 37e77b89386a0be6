"""
The built-in synthetic "shapes" detection dataset.

Every image is drawn with OpenCV from a seeded numpy generator, so a split is fully
determined by its seed. An image holds 1..8 filled (sometimes outlined) shapes of
:data:`SHAPES_CLASSES` on a textured background (smooth colour gradient, low-frequency
colour noise, thin random lines and blurred blobs that are not objects), followed by
near-Gaussian pixel noise. Boxes are the tight boxes of the *visible* pixels of each shape,
computed from the rasterised mask, in COCO [x, y, w, h] pixel units (a pixel is a unit
square, so a shape covering columns 10..19 has x = 10, w = 10).

Layout written by :func:`generate_shapes` under ``root``::

    root/<split>/000000.jpg ...          JPEG, quality 95, BGR drawn, sizes vary
    root/annotations/<split>.json        COCO instances json (boxes only)
"""

import json
import logging
import math
import os
import tempfile
import time
from typing import Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np

__all__ = ["SHAPES_CLASSES", "SHAPES_SPLITS", "generate_shapes", "ensure_shapes"]

logger = logging.getLogger(__name__)

SHAPES_CLASSES = ("circle", "rectangle", "triangle", "cross")
"""Class names; category id in the json is index + 1."""

SHAPES_SPLITS = {"train": (2000, 20240101), "val": (200, 20240102)}
"""split -> (number of images, seed) used by :func:`ensure_shapes`."""

_GENERATOR = "centerx shapes v1"
_MIN_IMAGE_SIDE, _MAX_IMAGE_SIDE = 192, 320
_JPEG_QUALITY = 95

# Object geometry (pixels). A shape's nominal extent s (ellipse major axis, rectangle
# long side, triangle circumcircle diameter, cross arm span) is drawn log-uniformly
# between the per-class minimum and _MAX_EXTENT_FRACTION * min(image height, width).
_MIN_EXTENT = {"circle": 14.0, "rectangle": 14.0, "triangle": 16.0, "cross": 16.0}
_MAX_EXTENT_FRACTION = 0.6
_MIN_BOX_SIDE = 12.0  # min side of an (unoccluded) shape's axis-aligned box
_MAX_OBJECTS = 8
_PLACEMENT_TRIES = 25
_MIN_VISIBLE_FRACTION = 0.6  # a new shape may hide at most 40% of an earlier one
_OUTLINE_PROB = 0.2  # circles/rectangles/triangles with a short side >= 28 px
_MIN_COLOR_DISTANCE = 80.0  # RGB L2 distance to the local background / occluded shapes
_SUBPIXEL_SHIFT = 4  # OpenCV fixed-point bits for polygon vertices


def datasets_root(root: Optional[str] = None) -> str:
    """
    Returns:
        str: ``root`` if given, else ``$DETECTRON2_DATASETS``, else ``"datasets"``
        (relative to the current directory, like detectron2's builtin datasets).
    """
    if root is not None:
        return root
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


def atomic_write_bytes(path: str, data: bytes) -> None:
    """
    Write ``data`` to ``path`` through a temporary file in the same directory and
    ``os.replace``, so readers (or a concurrent writer) never see a partial file.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _shape_polygon(rng: np.random.Generator, cls: str, extent: float) -> np.ndarray:
    """
    Returns:
        ndarray: (N, 2) float64 vertices (x, y) in pixels around the origin.
    """
    angle = rng.uniform(0.0, 2.0 * math.pi)
    if cls == "circle":
        ratio = rng.uniform(max(0.6, _MIN_BOX_SIDE / extent), 1.0)
        t = np.linspace(0.0, 2.0 * math.pi, 64, endpoint=False)
        pts = np.stack([0.5 * extent * np.cos(t), 0.5 * extent * ratio * np.sin(t)], axis=1)
    elif cls == "rectangle":
        ratio = rng.uniform(max(0.4, _MIN_BOX_SIDE / extent), 1.0)
        a, b = 0.5 * extent, 0.5 * extent * ratio
        pts = np.array([[-a, -b], [a, -b], [a, b], [-a, b]])
    elif cls == "triangle":
        # circumcircle vertices 120 +- 25 degrees apart: every angle is >= 35 degrees
        jitter = np.deg2rad(rng.uniform(-25.0, 25.0, size=2))
        t = np.array([0.0, 2.0 * math.pi / 3 + jitter[0], 4.0 * math.pi / 3 + jitter[1]])
        pts = 0.5 * extent * np.stack([np.cos(t), np.sin(t)], axis=1)
    elif cls == "cross":
        a = 0.5 * extent
        b = 0.5 * max(extent * rng.uniform(0.28, 0.4), 5.0)
        pts = np.array(
            [
                [-b, -a], [b, -a], [b, -b], [a, -b], [a, b], [b, b],
                [b, a], [-b, a], [-b, b], [-a, b], [-a, -b], [-b, -b],
            ]
        )
    else:
        raise ValueError(f"Unknown shape class {cls!r}")
    c, s = math.cos(angle), math.sin(angle)
    return pts @ np.array([[c, s], [-s, c]])


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """
    Returns:
        ndarray: (H, W, 3) float32 BGR background in [0, 255]: base colour + linear
        gradient + low-frequency colour noise + thin lines + blurred blobs.
    """
    # A linear colour ramp plus random colour offsets on a coarse 5x5 grid, bilinearly
    # upsampled: a smooth gradient with low-frequency colour variation.
    base = rng.uniform(30.0, 225.0, size=3)
    theta = rng.uniform(0.0, 2.0 * math.pi)
    g = np.linspace(-0.5, 0.5, 5)
    ramp = g[None, :] * math.cos(theta) + g[:, None] * math.sin(theta)
    grid = base + ramp[..., None] * rng.uniform(-80.0, 80.0, size=3)
    grid += rng.normal(0.0, 15.0, size=(5, 5, 3))
    image = cv2.resize(grid.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)

    for _ in range(int(rng.integers(0, 6))):
        p0 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        p1 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        color = tuple(float(v) for v in rng.uniform(0.0, 255.0, size=3))
        cv2.line(image, p0, p1, color, int(rng.integers(1, 3)), cv2.LINE_AA)
    for _ in range(int(rng.integers(0, 4))):
        radius = rng.uniform(10.0, 0.3 * min(height, width))
        t = np.sort(rng.uniform(0.0, 2.0 * math.pi, size=9))
        r = radius * rng.uniform(0.5, 1.0, size=9)
        center = rng.uniform([0.0, 0.0], [width, height])
        color = rng.uniform(0.0, 255.0, size=3).astype(np.float32)
        alpha = rng.uniform(0.3, 0.6)
        # The blob blurred with sigma 0.3 * radius fades out within 1.9 * radius; it
        # is rasterised and blurred at 1/4 resolution, then upsampled.
        pad = radius * 1.9
        x0, y0 = (max(0, int(v - pad)) for v in center)
        x1, y1 = min(width, int(center[0] + pad) + 1), min(height, int(center[1] + pad) + 1)
        pts = (center - (x0, y0) + np.stack([r * np.cos(t), r * np.sin(t)], axis=1)) / 4
        layer = np.zeros(((y1 - y0 + 3) // 4, (x1 - x0 + 3) // 4), np.float32)
        cv2.fillPoly(layer, [np.round(pts * 16).astype(np.int32)], 1.0, cv2.LINE_AA, 4)
        layer = cv2.GaussianBlur(layer, (0, 0), sigmaX=0.075 * radius)
        layer = cv2.resize(layer, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        window = image[y0:y1, x0:x1]
        window += (alpha * layer)[..., None] * (color - window)
    return np.clip(image, 0.0, 255.0, out=image)


def _add_noise(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """
    Add i.i.d. zero-mean pixel noise with standard deviation 2..10 to a float32
    (H, W, 3) image. The noise is the difference of two uniform bytes (a triangular
    distribution, close to Gaussian), which is ~4x faster to draw than normals.
    """
    sigma = rng.uniform(2.0, 10.0)
    u = np.frombuffer(rng.bytes(2 * image.size), np.uint8).reshape(2, *image.shape)
    difference = u[0].astype(np.float32) - u[1]
    return image + difference * np.float32(sigma / math.sqrt(2 * (256**2 - 1) / 12))


def _pick_color(
    rng: np.random.Generator, pixels_below: np.ndarray, occluded_colors: List[np.ndarray]
) -> Optional[np.ndarray]:
    """
    Args:
        pixels_below: (P, 3) current image values under the new shape.
        occluded_colors: colours of the earlier shapes the new shape overlaps.

    Returns:
        (3,) float colour that differs from at least 90% of ``pixels_below`` and from
        every occluded colour by _MIN_COLOR_DISTANCE, or None if none was found.
    """
    for _ in range(10):
        color = rng.integers(0, 256, size=3).astype(np.float32)
        distance = np.linalg.norm(pixels_below - color, axis=1)
        if np.percentile(distance, 10) < _MIN_COLOR_DISTANCE:
            continue
        if all(np.linalg.norm(c - color) >= _MIN_COLOR_DISTANCE for c in occluded_colors):
            return color
    return None


def _render_image(
    rng: np.random.Generator, height: int, width: int
) -> Tuple[np.ndarray, List[Dict]]:
    """
    Draw one image.

    Returns:
        image (ndarray): (H, W, 3) uint8 BGR.
        objects (list[dict]): per visible shape, in drawing order: "category_id"
            (1..K), "bbox" [x, y, w, h] in pixels (tight box of its visible pixels),
            "area" (w * h: the box area, which COCO evaluation uses for its
            small / medium / large split).
    """
    image = _background(rng, height, width)
    label = np.full((height, width), -1, np.int16)  # index of the shape on top
    windows: List[Tuple[slice, slice]] = []  # (rows, cols) containing each shape
    areas: List[int] = []
    colors: List[np.ndarray] = []
    classes: List[int] = []
    max_extent = _MAX_EXTENT_FRACTION * min(height, width)
    for _ in range(int(rng.integers(1, _MAX_OBJECTS + 1))):
        for _attempt in range(_PLACEMENT_TRIES):
            cls_index = int(rng.integers(len(SHAPES_CLASSES)))
            cls = SHAPES_CLASSES[cls_index]
            lo = _MIN_EXTENT[cls]
            extent = math.exp(rng.uniform(math.log(lo), math.log(max(lo, max_extent))))
            pts = _shape_polygon(rng, cls, extent)
            span = pts.max(axis=0) - pts.min(axis=0)
            if span.min() < _MIN_BOX_SIDE:
                continue
            thickness = 0
            if cls != "cross" and span.min() >= 28 and rng.uniform() < _OUTLINE_PROB:
                thickness = max(2, int(round(extent * rng.uniform(0.06, 0.1))))
            margin = 1.0 + thickness
            lo_xy = -pts.min(axis=0) + margin
            hi_xy = np.array([width - 1, height - 1]) - pts.max(axis=0) - margin
            if np.any(hi_xy < lo_xy):
                continue
            pts = pts + rng.uniform(lo_xy, hi_xy)
            # the shape's pixels lie within margin of its vertices' box
            x0, y0 = (max(0, int(math.floor(v - margin))) for v in pts.min(axis=0))
            x1, y1 = (int(math.ceil(v + margin)) + 1 for v in pts.max(axis=0))
            x1, y1 = min(x1, width), min(y1, height)
            fixed = np.round((pts - (x0, y0)) * (1 << _SUBPIXEL_SHIFT)).astype(np.int32)
            mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
            if thickness:
                cv2.polylines(mask, [fixed], True, 1, thickness, cv2.LINE_8, _SUBPIXEL_SHIFT)
            else:
                cv2.fillPoly(mask, [fixed], 1, cv2.LINE_8, _SUBPIXEL_SHIFT)
            mask = mask.astype(bool)
            window = (slice(y0, y1), slice(x0, x1))

            below = label[window][mask]
            overlapped = np.unique(below[below >= 0])
            if any(
                np.count_nonzero(label[windows[j]] == j) - np.count_nonzero(below == j)
                < _MIN_VISIBLE_FRACTION * areas[j]
                for j in overlapped
            ):
                continue  # it would hide too much of an earlier shape
            color = _pick_color(rng, image[window][mask], [colors[j] for j in overlapped])
            if color is None:
                continue
            image[window][mask] = color
            label[window][mask] = len(areas)
            windows.append(window)
            areas.append(int(mask.sum()))
            colors.append(color)
            classes.append(cls_index)
            break

    objects = []
    for j, cls_index in enumerate(classes):
        rows, cols = windows[j]
        ys, xs = np.nonzero(label[windows[j]] == j)
        x0, x1 = int(xs.min()) + cols.start, int(xs.max()) + cols.start + 1
        y0, y1 = int(ys.min()) + rows.start, int(ys.max()) + rows.start + 1
        objects.append(
            {
                "category_id": cls_index + 1,
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "area": (x1 - x0) * (y1 - y0),
            }
        )
    image = _add_noise(rng, image)
    return cv2.convertScaleAbs(np.clip(image, 0.0, 255.0, out=image)), objects


def _expected_info(split: str, num_images: int, seed: int, min_size: int, max_size: int):
    return {
        "generator": _GENERATOR,
        "split": split,
        "num_images": num_images,
        "seed": seed,
        "min_size": min_size,
        "max_size": max_size,
    }


def generate_shapes(
    root: str,
    split: str,
    num_images: int,
    seed: int,
    min_size: int = _MIN_IMAGE_SIDE,
    max_size: int = _MAX_IMAGE_SIDE,
) -> str:
    """
    Generate one split of the shapes dataset. Image ``i`` depends only on
    (``seed``, ``i``), so the output is deterministic for a given seed.

    Args:
        root: dataset directory, e.g. "datasets/shapes".
        split: split name; images go to ``root/<split>/``.
        num_images: number of images.
        seed: random seed.
        min_size, max_size: image height and width are drawn independently and
            uniformly from [min_size, max_size] pixels.

    Returns:
        str: path of the COCO json, ``root/annotations/<split>.json``. It is written
        last and atomically, after every image (each also written atomically).
    """
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    if not 64 <= min_size <= max_size:
        raise ValueError(f"Need 64 <= min_size <= max_size, got {min_size}, {max_size}")
    start = time.perf_counter()
    categories = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(SHAPES_CLASSES)]
    json_file, objects = write_generated_split(
        root, split, num_images, seed, _render_image, _expected_info(split, num_images, seed, min_size, max_size),
        categories, _JPEG_QUALITY, (min_size, max_size))
    logger.info(
        "Generated shapes '%s': %d images, %d objects in %.1f s -> %s",
        split, num_images, objects, time.perf_counter() - start, json_file,
    )
    return json_file


def write_generated_split(root: str, split: str, num_images: int, seed: int,
                          render: Callable[[np.random.Generator, int, int], Tuple[np.ndarray, List[Dict]]],
                          info: Dict, categories: List[Dict], jpeg_quality: int,
                          side_range: Tuple[int, int]) -> Tuple[str, int]:
    """Write one split of a generated dataset (shapes, photos): image ``i`` is drawn
    by ``render(rng, height, width)`` -> (BGR uint8 image, objects with "bbox",
    "area", "category_id") from ``rng = default_rng([seed, i])``, after its height
    and width are drawn uniformly from ``side_range`` (pixels), so it depends only
    on (seed, i). Images go to ``root/<split>/%06d.jpg``, each written atomically,
    then the COCO json ``root/annotations/<split>.json`` (with ``info`` and
    ``categories``), last and atomically.

    Returns:
        (json path, number of objects).
    """
    image_dir = os.path.join(root, split)
    json_file = os.path.join(root, "annotations", f"{split}.json")
    os.makedirs(image_dir, exist_ok=True)
    images, annotations = [], []
    for index in range(num_images):
        rng = np.random.default_rng([seed, index])
        height, width = (int(v) for v in rng.integers(side_range[0], side_range[1] + 1, size=2))
        image, objects = render(rng, height, width)
        file_name = f"{index:06d}.jpg"
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
        if not ok:
            raise RuntimeError(f"Failed to encode {file_name}")
        atomic_write_bytes(os.path.join(image_dir, file_name), encoded.tobytes())
        images.append({"id": index + 1, "file_name": file_name, "height": height, "width": width})
        for obj in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": index + 1, "iscrowd": 0, **obj})
    coco = {"info": info, "images": images, "annotations": annotations, "categories": categories}
    atomic_write_bytes(json_file, json.dumps(coco).encode("utf-8"))
    return json_file, len(annotations)


def is_generated_split_up_to_date(json_file: str, image_dir: str, expected_info: Dict) -> bool:
    """Whether ``json_file`` was written by :func:`write_generated_split` with
    ``expected_info`` and its first and last images are there."""
    if not os.path.isfile(json_file):
        return False
    try:
        with open(json_file) as f:
            coco = json.load(f)
    except (OSError, ValueError):
        return False
    if coco.get("info") != expected_info or not coco.get("images"):
        return False
    names = [coco["images"][0]["file_name"], coco["images"][-1]["file_name"]]
    return all(os.path.isfile(os.path.join(image_dir, n)) for n in names)


def ensure_shapes(root: Optional[str] = None) -> None:
    """
    Generate the "train" and "val" splits of :data:`SHAPES_SPLITS` under
    ``<root>/shapes`` (root: see :func:`datasets_root`) unless an up-to-date copy
    (same generator version, seed, image count and sizes, recorded in the json's
    "info") is already there. Concurrent callers are safe: every file is written
    atomically, and the json of a split is written after its images.
    """
    shapes_root = os.path.join(datasets_root(root), "shapes")
    for split, (num_images, seed) in SHAPES_SPLITS.items():
        json_file = os.path.join(shapes_root, "annotations", f"{split}.json")
        info = _expected_info(split, num_images, seed, _MIN_IMAGE_SIDE, _MAX_IMAGE_SIDE)
        if is_generated_split_up_to_date(json_file, os.path.join(shapes_root, split), info):
            continue
        logger.info(
            "shapes '%s' is missing or stale under %s; generating %d images ...",
            split, shapes_root, num_images,
        )
        generate_shapes(shapes_root, split, num_images, seed)
