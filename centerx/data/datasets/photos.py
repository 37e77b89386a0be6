"""
The built-in "photos" detection dataset: real photographs, made offline.

Objects cut from the photographs that scikit-image and scikit-learn ship (a cat,
a coffee cup, rockets, an astronaut, a cameraman, motorcycles, coins, a horse,
faces, hand-written digits) are pasted at random scales, aspect ratios, flips
and brightness onto random crops of other shipped photographs (a temple, a
flower, grass, gravel, brick, the Hubble deep field, microscopy, a retina, the
moon). It keeps what synthetic shapes lack: photographic texture, colour and
noise statistics, cluttered backgrounds, objects whose class is decided by
their content rather than by their outline. Boxes are the tight boxes of each
object's *visible* pixels (a later object may hide at most 40 % of an earlier
one), in COCO [x, y, w, h] pixels.

Every image is drawn from a seeded generator, so a split is fully determined by
its seed; the source files are read from the installed packages' folders
(neither package is imported). Layout written by :func:`generate_photos` under
``root``::

    root/<split>/000000.jpg ...          JPEG, quality 92, sizes 192..320 px
    root/annotations/<split>.json        COCO instances json (boxes only)
"""

import functools
import gzip
import importlib.util
import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

from .shapes import datasets_root, is_generated_split_up_to_date, write_generated_split

__all__ = ["PHOTOS_CLASSES", "PHOTOS_SPLITS", "generate_photos", "ensure_photos"]

logger = logging.getLogger(__name__)

PHOTOS_CLASSES = ("cat", "coffee", "rocket", "astronaut", "cameraman", "motorcycle", "coin", "horse", "face",
                  "digit")
"""Class names; category id in the json is index + 1."""

PHOTOS_SPLITS = {"train": (800, 20261206), "val": (200, 20261207)}
"""split -> (number of images, seed) used by :func:`ensure_photos`."""

_GENERATOR = "centerx photos v1"
_MIN_IMAGE_SIDE, _MAX_IMAGE_SIDE = 192, 320
_JPEG_QUALITY = 92
_MAX_OBJECTS = 6
_PLACEMENT_TRIES = 25
_MIN_VISIBLE_FRACTION = 0.6
_MAX_EXTENT_FRACTION = 0.6  # an object's longer side is at most this much of the image's shorter side
_MIN_EXTENT = 14.0  # pixels, the object's longer side
_MIN_BOX_SIDE = 6.0  # pixels: an object whose visible box is thinner is not kept

# class -> [(package, file inside the package, (x1, y1, x2, y2) crop in that image's pixels)];
# rectangular crops (their own surroundings included, as a photographed object is)
_CROPS = {
    "cat": [("skimage", "data/chelsea.png", (30, 0, 420, 290))],
    "coffee": [("skimage", "data/coffee.png", (75, 10, 485, 370))],
    "rocket": [("skimage", "data/rocket.jpg", (292, 118, 348, 418)),
               ("skimage", "data/astronaut.png", (352, 0, 468, 282))],
    "astronaut": [("skimage", "data/astronaut.png", (115, 10, 350, 335))],
    "cameraman": [("skimage", "data/camera.png", (0, 60, 330, 512))],
    "motorcycle": [("skimage", "data/motorcycle_left.png", (80, 80, 690, 470)),
                   ("skimage", "data/motorcycle_right.png", (40, 80, 650, 470))],
}
_BACKGROUNDS = [("sklearn", "datasets/images/china.jpg"), ("sklearn", "datasets/images/flower.jpg"),
                ("skimage", "data/grass.png"), ("skimage", "data/gravel.png"), ("skimage", "data/brick.png"),
                ("skimage", "data/hubble_deep_field.jpg"), ("skimage", "data/ihc.png"),
                ("skimage", "data/retina.jpg"), ("skimage", "data/moon.png")]


class PhotoSourcesMissing(RuntimeError):
    """scikit-image / scikit-learn, whose shipped photographs the dataset is made of, are not installed."""


def _package_file(package: str, relative: str) -> str:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise PhotoSourcesMissing(f"The photos dataset is made from the images that {package} ships, and "
                                  f"{package} is not installed: pip install scikit-image scikit-learn "
                                  "(./run.sh setup installs them).")
    path = os.path.join(list(spec.submodule_search_locations)[0], relative)
    if not os.path.isfile(path):
        raise PhotoSourcesMissing(f"{path} is missing from the installed {package}; reinstall it.")
    return path


def _read_color(package: str, relative: str) -> np.ndarray:
    """BGR uint8 image of a shipped file (grey images as three equal channels)."""
    image = cv2.imread(_package_file(package, relative), cv2.IMREAD_COLOR)
    if image is None:
        raise PhotoSourcesMissing(f"OpenCV cannot read {relative} of {package}.")
    return image


@dataclass
class _Sprite:
    """An object cut-out: BGR uint8 [h, w, 3] and its opacity [h, w] in [0, 1];
    ``recolor``: its dark pixels are drawn in a colour picked per paste (digits)."""

    image: np.ndarray
    alpha: np.ndarray
    recolor: bool = False


def _coin_sprites() -> List[_Sprite]:
    """Each coin of skimage's coins.png, segmented by Otsu thresholding."""
    grey = cv2.imread(_package_file("skimage", "data/coins.png"), cv2.IMREAD_GRAYSCALE)
    _, mask = cv2.threshold(cv2.GaussianBlur(grey, (5, 5), 0), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask)
    sprites = []
    for k in range(1, count):
        x, y, w, h, area = stats[k]
        if area < 300 or not 0.6 < w / h < 1.6:
            continue
        alpha = (labels[y:y + h, x:x + w] == k).astype(np.float32)
        sprites.append(_Sprite(cv2.cvtColor(grey[y:y + h, x:x + w], cv2.COLOR_GRAY2BGR), alpha))
    return sprites


def _horse_sprite() -> _Sprite:
    """skimage's horse silhouette, filled with a brown coat and shading."""
    image = cv2.imread(_package_file("skimage", "data/horse.png"), cv2.IMREAD_UNCHANGED)
    grey = image[..., :3].mean(axis=2) if image.ndim == 3 else image.astype(np.float32)
    alpha = (grey < 128).astype(np.float32)
    ys, xs = np.nonzero(alpha)
    alpha = alpha[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    h, w = alpha.shape
    shade = np.linspace(0.75, 1.15, h, dtype=np.float32)[:, None, None]
    coat = np.clip(np.array([40, 70, 120], np.float32)[None, None] * shade * np.ones((h, w, 1), np.float32), 0, 255)
    return _Sprite(coat.astype(np.uint8), alpha)


def _face_sprites() -> List[_Sprite]:
    """The 100 faces of skimage's LFW subset (25 x 25 grey crops)."""
    faces = np.load(_package_file("skimage", "data/lfw_subset.npy"))[:100]
    return [_Sprite(cv2.cvtColor((f * 255).astype(np.uint8), cv2.COLOR_GRAY2BGR), np.ones(f.shape, np.float32))
            for f in faces]


def _digit_sprites() -> List[_Sprite]:
    """scikit-learn's 8 x 8 hand-written digits (1797), upsampled, strokes as opacity."""
    with gzip.open(_package_file("sklearn", "datasets/data/digits.csv.gz"), "rt") as f:
        rows = np.loadtxt(f, delimiter=",")
    sprites = []
    for row in rows[:, :64]:
        alpha = cv2.resize((row.reshape(8, 8) / 16.0).astype(np.float32), (24, 24), interpolation=cv2.INTER_CUBIC)
        alpha = np.clip(alpha, 0, 1)
        sprites.append(_Sprite(np.zeros((24, 24, 3), np.uint8), alpha, recolor=True))
    return sprites


def _load_sources() -> Tuple[Dict[str, List[_Sprite]], List[np.ndarray]]:
    sprites: Dict[str, List[_Sprite]] = {}
    for cls, crops in _CROPS.items():
        sprites[cls] = []
        for package, relative, (x1, y1, x2, y2) in crops:
            crop = _read_color(package, relative)[y1:y2, x1:x2]
            sprites[cls].append(_Sprite(crop, np.ones(crop.shape[:2], np.float32)))
    sprites["coin"] = _coin_sprites()
    sprites["horse"] = [_horse_sprite()]
    sprites["face"] = _face_sprites()
    sprites["digit"] = _digit_sprites()
    backgrounds = [_read_color(p, r) for p, r in _BACKGROUNDS]
    return sprites, backgrounds


def _background(rng: np.random.Generator, backgrounds: List[np.ndarray], height: int, width: int) -> np.ndarray:
    """A random crop of a random background photograph, resized, flipped and tinted."""
    source = backgrounds[int(rng.integers(len(backgrounds)))]
    sh, sw = source.shape[:2]
    scale = rng.uniform(0.4, 1.0)
    ch, cw = max(32, int(sh * scale)), max(32, int(sw * scale))
    ch, cw = min(ch, sh), min(cw, sw)
    y0, x0 = int(rng.integers(0, sh - ch + 1)), int(rng.integers(0, sw - cw + 1))
    image = cv2.resize(source[y0:y0 + ch, x0:x0 + cw], (width, height), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        image = image[:, ::-1]
    tint = rng.uniform(0.8, 1.2, size=3).astype(np.float32)
    return np.clip(image.astype(np.float32) * tint, 0, 255)


def _prepare(rng: np.random.Generator, sprite: _Sprite, extent: float, under: np.ndarray) -> Tuple[np.ndarray,
                                                                                                  np.ndarray]:
    """The sprite resized so that its longer side is ``extent`` pixels (aspect
    ratio jittered by up to 15 %), maybe flipped, brightness and contrast jittered;
    digits drawn in a colour far from ``under`` (the mean colour where they go)."""
    h, w = sprite.alpha.shape
    aspect = math.exp(rng.uniform(-0.15, 0.15))
    scale = extent / max(h * aspect, w / aspect)
    size = (max(2, round(w / aspect * scale)), max(2, round(h * aspect * scale)))
    image = cv2.resize(sprite.image, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    alpha = np.clip(cv2.resize(sprite.alpha, size, interpolation=cv2.INTER_LINEAR), 0, 1)
    if sprite.recolor:
        colour = np.where(under > 127, rng.uniform(0, 60, 3), rng.uniform(190, 255, 3)).astype(np.float32)
        image = np.broadcast_to(colour, image.shape).copy()
    elif rng.random() < 0.5:
        image, alpha = image[:, ::-1], alpha[:, ::-1]
    gain, offset = rng.uniform(0.75, 1.25), rng.uniform(-20, 20)
    return np.clip(image * gain + offset, 0, 255), np.ascontiguousarray(alpha)


def _render_image(rng: np.random.Generator, height: int, width: int, sprites: Dict[str, List[_Sprite]],
                  backgrounds: List[np.ndarray]) -> Tuple[np.ndarray, List[Dict]]:
    """One image (BGR uint8) and its objects: [{"bbox": [x, y, w, h], "area", "category_id"}]."""
    image = _background(rng, backgrounds, height, width)
    owner = np.full((height, width), -1, np.int32)  # which object each pixel shows
    placed: List[Tuple[int, int]] = []  # (class index, full area in pixels)
    for _ in range(int(rng.integers(1, _MAX_OBJECTS + 1))):
        cls = int(rng.integers(len(PHOTOS_CLASSES)))
        choices = sprites[PHOTOS_CLASSES[cls]]
        sprite = choices[int(rng.integers(len(choices)))]
        top = _MAX_EXTENT_FRACTION * min(height, width)
        extent = math.exp(rng.uniform(math.log(_MIN_EXTENT), math.log(top)))
        for _ in range(_PLACEMENT_TRIES):
            sh, sw = sprite.alpha.shape
            guess_w = extent * sw / max(sh, sw)
            guess_h = extent * sh / max(sh, sw)
            x0 = int(rng.integers(0, max(1, int(width - guess_w * 1.2))))
            y0 = int(rng.integers(0, max(1, int(height - guess_h * 1.2))))
            under = image[y0:y0 + max(1, int(guess_h)), x0:x0 + max(1, int(guess_w))].reshape(-1, 3).mean(0)
            patch, alpha = _prepare(rng, sprite, extent, under)
            ph, pw = alpha.shape
            if x0 + pw > width or y0 + ph > height:
                continue
            cover = alpha > 0.5
            hidden = np.bincount(owner[y0:y0 + ph, x0:x0 + pw][cover] + 1, minlength=len(placed) + 1)[1:]
            visible = np.bincount(owner.ravel() + 1, minlength=len(placed) + 1)[1:]
            if any(v and (v - h) < _MIN_VISIBLE_FRACTION * area for v, h, (_, area) in zip(visible, hidden, placed)):
                continue
            region = image[y0:y0 + ph, x0:x0 + pw]
            region[:] = region * (1 - alpha[..., None]) + patch * alpha[..., None]
            owner[y0:y0 + ph, x0:x0 + pw][cover] = len(placed)
            placed.append((cls, int(cover.sum())))
            break
    noise = rng.normal(0, rng.uniform(1.0, 5.0), image.shape).astype(np.float32)
    image = np.clip(image + noise, 0, 255).astype(np.uint8)
    objects = []
    for k, (cls, _) in enumerate(placed):
        ys, xs = np.nonzero(owner == k)
        if len(xs) == 0:
            continue
        x, y, w, h = int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)
        if min(w, h) < _MIN_BOX_SIDE:
            continue
        objects.append({"bbox": [x, y, w, h], "area": int(len(xs)), "category_id": cls + 1})
    return image, objects


def _expected_info(split: str, num_images: int, seed: int) -> Dict:
    return {"description": f"{_GENERATOR} '{split}'", "num_images": num_images, "seed": seed,
            "min_size": _MIN_IMAGE_SIDE, "max_size": _MAX_IMAGE_SIDE}


def generate_photos(root: str, split: str, num_images: int, seed: int) -> str:
    """Generate one split of the photos dataset. Image ``i`` depends only on
    (``seed``, ``i``).

    Args:
        root: dataset folder, e.g. "datasets/photos"; images go to ``root/<split>/``.
        split: split name.
        num_images: number of images.
        seed: random seed.

    Returns:
        str: path of the COCO json, ``root/annotations/<split>.json``, written last
        and atomically, after every image (each also written atomically).

    Raises:
        PhotoSourcesMissing: scikit-image or scikit-learn is not installed.
    """
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    sprites, backgrounds = _load_sources()
    start = time.perf_counter()
    categories = [{"id": i + 1, "name": n, "supercategory": "photo"} for i, n in enumerate(PHOTOS_CLASSES)]
    json_file, objects = write_generated_split(
        root, split, num_images, seed, functools.partial(_render_image, sprites=sprites, backgrounds=backgrounds),
        _expected_info(split, num_images, seed), categories, _JPEG_QUALITY, (_MIN_IMAGE_SIDE, _MAX_IMAGE_SIDE))
    logger.info("Generated photos '%s': %d images, %d objects in %.1f s -> %s", split, num_images, objects,
                time.perf_counter() - start, json_file)
    return json_file


def ensure_photos(root: Optional[str] = None) -> None:
    """Generate the splits of :data:`PHOTOS_SPLITS` under ``<root>/photos`` (root:
    see :func:`~centerx.data.datasets.shapes.datasets_root`) unless an up-to-date
    copy (same generator version, seed and image count, recorded in the json's
    "info") is already there."""
    photos_root = os.path.join(datasets_root(root), "photos")
    for split, (num_images, seed) in PHOTOS_SPLITS.items():
        json_file = os.path.join(photos_root, "annotations", f"{split}.json")
        if is_generated_split_up_to_date(json_file, os.path.join(photos_root, split), _expected_info(split, num_images, seed)):
            continue
        logger.info("photos '%s' is missing or stale under %s; generating %d images ...", split, photos_root,
                    num_images)
        generate_photos(photos_root, split, num_images, seed)
