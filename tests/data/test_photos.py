"""The built-in real-photo dataset: deterministic per seed, every box the tight box
of an object's visible pixels, the ten classes present, registered like shapes."""

import json
import os

import cv2
import numpy as np
import pytest
from detectron2.data import MetadataCatalog

import centerx  # noqa: F401  (registers photos_train / photos_val)
from centerx.data.datasets import photos


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("photos"))
    return root, photos.generate_photos(root, "val", 40, seed=3)


def test_same_seed_same_images_and_boxes(small, tmp_path):
    root, json_file = small
    again = photos.generate_photos(str(tmp_path), "val", 3, seed=3)
    first, second = json.load(open(json_file)), json.load(open(again))
    assert [a for a in first["annotations"] if a["image_id"] <= 3] == second["annotations"]
    for im in second["images"]:
        a = open(os.path.join(root, "val", im["file_name"]), "rb").read()
        b = open(os.path.join(str(tmp_path), "val", im["file_name"]), "rb").read()
        assert a == b


def test_boxes_lie_in_their_images_and_every_class_appears(small):
    root, json_file = small
    coco = json.load(open(json_file))
    sizes = {im["id"]: (im["width"], im["height"]) for im in coco["images"]}
    for im in coco["images"]:
        image = cv2.imread(os.path.join(root, "val", im["file_name"]))
        assert image.shape[:2] == (im["height"], im["width"])
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        width, height = sizes[a["image_id"]]
        assert 0 <= x and 0 <= y and x + w <= width and y + h <= height and min(w, h) >= 6
        assert 0 < a["area"] <= w * h
    assert {a["category_id"] for a in coco["annotations"]} == set(range(1, 11))
    assert [c["name"] for c in coco["categories"]] == list(photos.PHOTOS_CLASSES)


class _NoNoise:
    """A seeded numpy generator whose normal() draws zeros (the pixel noise off)."""

    def __init__(self, seed):
        self._rng = np.random.default_rng(seed)

    def __getattr__(self, name):
        return getattr(self._rng, name)

    def normal(self, loc, scale, size):
        return np.zeros(size)


def test_a_box_is_the_tight_box_of_the_pixels_its_object_changed(monkeypatch):
    """On a flat grey background without noise, the pixels an object changed are
    found by difference; their tight box (of the pixels whose opacity is over one
    half, so up to two pixels off at soft edges) is the box the generator wrote."""
    sprites, _ = photos._load_sources()
    flat = [np.full((400, 400, 3), 128, np.uint8)]
    monkeypatch.setattr(photos, "_MAX_OBJECTS", 1)
    monkeypatch.setattr(photos, "_background", lambda rng, bgs, h, w: np.full((h, w, 3), 128.0, np.float32))
    checked = 0
    for seed in range(12):
        image, objects = photos._render_image(_NoNoise(seed), 256, 256, sprites, flat)
        if not objects:
            continue
        change = np.abs(image.astype(int) - 128).max(axis=2)
        # digits are drawn in one colour with soft strokes: opacity over one half = over half the largest change
        threshold = change.max() / 2 if objects[0]["category_id"] == 10 else 12
        ys, xs = np.nonzero(change > threshold)
        x, y, w, h = objects[0]["bbox"]
        found = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert np.allclose((x, y, x + w, y + h), found, atol=2), (seed, objects[0], found)
        checked += 1
    assert checked >= 8


def test_registered_with_the_ten_classes():
    assert MetadataCatalog.get("photos_val").thing_classes == list(photos.PHOTOS_CLASSES)
    assert MetadataCatalog.get("photos_train").json_file.endswith(os.path.join("photos", "annotations", "train.json"))
