"""The CenterNet training mapper and the model on bad or unusual input."""

import logging
import os

import cv2
import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import BoxMode

import centerx
from centerx.data import CenterNetDatasetMapper

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(REPO, "configs", "shapes", "centernet_r18_demo.yaml")


def demo_cfg(*opts):
    cfg = centerx.add_centerx_config(get_cfg())
    cfg.merge_from_file(DEMO)
    cfg.merge_from_list(list(opts))
    return cfg


def deterministic_mapper(size=128, flip=0.0):
    """No random scale, no jitter: output = image resized so its longer side is ``size``."""
    cfg = demo_cfg(
        "INPUT.TRAIN_SIZE",
        str(size),
        "INPUT.SCALE_RANGE",
        "(1.0, 1.0)",
        "INPUT.COLOR_JITTER",
        "0.0",
        "INPUT.HFLIP_PROB",
        str(flip),
    )
    return CenterNetDatasetMapper(cfg)


def write_image(path, h, w):
    cv2.imwrite(str(path), np.full((h, w, 3), 90, np.uint8))
    return {"file_name": str(path), "height": h, "width": w, "image_id": 1}


def anno(x, y, w, h, cls=0):
    return {"bbox": [x, y, w, h], "bbox_mode": BoxMode.XYWH_ABS, "category_id": cls, "iscrowd": 0}


def test_boxes_follow_the_resize_and_are_clipped(tmp_path):
    """A 100x200 image fit into 128 px is scaled by 0.64; a box crossing the right border is clipped."""
    d = write_image(tmp_path / "a.png", 100, 200)
    d["annotations"] = [anno(10, 20, 50, 30), anno(180, 50, 40, 20, cls=2)]
    out = deterministic_mapper()(d)
    assert tuple(out["image"].shape) == (3, 128, 128)
    s = 128 / 200
    expected = torch.tensor([[10 * s, 20 * s, 60 * s, 50 * s], [180 * s, 50 * s, 200 * s, 70 * s]])
    assert torch.allclose(out["instances"].gt_boxes.tensor, expected, atol=1e-3)
    assert out["instances"].gt_classes.tolist() == [0, 2]


def test_horizontal_flip_mirrors_boxes_on_the_padded_canvas(tmp_path):
    d = write_image(tmp_path / "a.png", 100, 200)
    d["annotations"] = [anno(10, 20, 50, 30)]
    out = deterministic_mapper(flip=1.0)(d)
    s = 128 / 200
    expected = torch.tensor([[128 - 60 * s, 20 * s, 128 - 10 * s, 50 * s]])
    assert torch.allclose(out["instances"].gt_boxes.tensor, expected, atol=1e-3)


def test_degenerate_and_outside_boxes_are_dropped_and_counted(tmp_path):
    d = write_image(tmp_path / "a.png", 100, 200)
    d["annotations"] = [
        anno(10, 20, 50, 30),
        anno(30, 30, 0, 10),
        anno(300, 10, 20, 20),
        anno(5, 5, 1, 1),
        {**anno(40, 40, 20, 20), "iscrowd": 1},
    ]
    mapper = deterministic_mapper()
    out = mapper(d)
    assert len(out["instances"]) == 1
    assert mapper.num_dropped_boxes == 2  # fully outside, below INPUT.MIN_BOX_SIZE
    assert mapper.num_invalid_boxes == {"non-positive size": 1}  # zero width in the annotation


def test_image_without_annotations_gives_empty_instances(tmp_path):
    d = write_image(tmp_path / "a.png", 64, 64)
    out = deterministic_mapper()(d)
    assert len(out["instances"]) == 0
    assert tuple(out["instances"].gt_boxes.tensor.shape) == (0, 4)


def test_missing_image_is_skipped_and_counted(tmp_path, caplog):
    mapper = deterministic_mapper()
    d = {"file_name": str(tmp_path / "nope.jpg"), "height": 10, "width": 10, "annotations": []}
    with caplog.at_level(logging.WARNING):
        assert mapper(d) is None
        assert mapper(dict(d)) is None
    assert mapper.num_skipped_images == 2
    assert "nope.jpg" in caplog.text


def test_model_trains_on_empty_and_crowded_images(tmp_path):
    """An image without objects gives a finite loss; objects beyond MAX_OBJECTS are skipped
    and counted (not an index error)."""
    torch.manual_seed(0)
    cfg = demo_cfg("MODEL.CENTERNET.MAX_OBJECTS", "5")
    model = build_model(cfg).train()
    mapper = deterministic_mapper(size=64)
    empty = mapper({**write_image(tmp_path / "e.png", 64, 64), "annotations": []})
    crowded = write_image(tmp_path / "c.png", 64, 64)
    crowded["annotations"] = [anno(4 * i, 4 * i, 8 + i, 8 + i, cls=i % 4) for i in range(9)]
    crowded = mapper(crowded)
    assert len(crowded["instances"]) == 9
    losses = model([empty])
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_wh"].item() == 0.0  # no objects: no size term
    losses = model([empty, crowded])
    assert all(torch.isfinite(v) for v in losses.values())
    assert model.num_skipped_objects == 4


def test_unknown_mapper_or_optimizer_name_is_refused():
    from centerx.engine import build_optimizer, build_train_mapper

    with pytest.raises(ValueError, match="DATALOADER.TRAIN_MAPPER"):
        build_train_mapper(demo_cfg("DATALOADER.TRAIN_MAPPER", "fancy"))
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER"):
        build_optimizer(demo_cfg("SOLVER.OPTIMIZER", "LION"), torch.nn.Linear(2, 2))
