"""Every shipped config merges into centerX's defaults and builds a model that detects."""

import glob
import os

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import META_ARCH_REGISTRY, build_model

import centerx
from centerx.engine import build_optimizer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True))


def test_configs_are_found():
    """Each config folder ships configs of every detector it documents."""
    archs = {}
    for path in CONFIGS:
        cfg = centerx.add_centerx_config(get_cfg())
        cfg.merge_from_file(path)
        archs.setdefault(os.path.basename(os.path.dirname(path)), set()).add(cfg.MODEL.META_ARCHITECTURE)
    assert archs["COCO-Detection"] == archs["shapes"] == {"CenterNet", "TTFNet", "Distiller"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, os.path.join(REPO, "configs")))
def test_config_builds_a_model_that_detects(path):
    """Every shipped config merges, builds its model (a Distiller's student, as its
    teachers are trained files) and its optimizer (gradient clipping included) on
    the CPU, and decodes a 64 x 64 image into its top-K (never empty: K peaks
    whatever the scores) with finite boxes, scores in [0, 1] and classes below
    its class count; after the score threshold, at most TEST.DETECTIONS_PER_IMAGE
    detections with boxes inside the image. (A random model may keep none past
    the threshold, its heatmap logits far below it: hence the top-K check.)"""
    cfg = centerx.add_centerx_config(get_cfg())
    cfg.merge_from_file(path)
    assert cfg.MODEL.META_ARCHITECTURE in META_ARCH_REGISTRY
    if cfg.MODEL.META_ARCHITECTURE == "Distiller":
        assert len(cfg.MODEL.DISTILL.TEACHERS) >= 1
        cfg.MODEL.META_ARCHITECTURE = cfg.MODEL.DISTILL.STUDENT_META_ARCHITECTURE
    cfg.MODEL.DEVICE = "cpu"
    node = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE).config_node(cfg)
    model = build_model(cfg).eval()
    build_optimizer(cfg, model)
    torch.manual_seed(0)
    with torch.no_grad():
        (out,) = model([{"image": torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8), "height": 64, "width": 64}])
        # the decoded top-K before the score threshold: never empty, whatever a random model scores
        image = model.preprocess_image([{"image": torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)}]).tensor
        top = model.decode(model.predict(image))
    k = top["scores"].shape[1]
    assert 0 < k <= cfg.TEST.DETECTIONS_PER_IMAGE and top["boxes"].shape == (1, k, 4)
    assert torch.isfinite(top["boxes"]).all() and ((top["scores"] >= 0) & (top["scores"] <= 1)).all()
    assert ((top["classes"] >= 0) & (top["classes"] < node.NUM_CLASSES)).all()
    inst = out["instances"]
    assert inst.image_size == (64, 64) and len(inst) <= cfg.TEST.DETECTIONS_PER_IMAGE
    boxes = inst.pred_boxes.tensor
    assert boxes.shape == (len(inst), 4) and ((boxes >= 0) & (boxes <= 64)).all()
    assert ((inst.scores > node.SCORE_THRESH_TEST) & (inst.scores <= 1)).all()
    assert ((inst.pred_classes >= 0) & (inst.pred_classes < node.NUM_CLASSES)).all()


def test_keys_are_added_after_a_centernet2_style_node():
    """CenterNet2's add_centernet_config creates a MODEL.CENTERNET node of its own;
    applied first, it must not make add_centerx_config skip centerX's keys."""
    from detectron2.config import CfgNode

    cfg = get_cfg()
    cfg.MODEL.CENTERNET = CfgNode({"IN_FEATURES": ["p3", "p4"], "NUM_CLASSES": 1203})
    centerx.add_centerx_config(cfg)
    assert cfg.MODEL.CENTERNET.RADIUS_MODE == "original" and cfg.MODEL.CENTERNET.NUM_CLASSES == 80
    assert "IN_FEATURES" not in cfg.MODEL.CENTERNET
    assert cfg.MODEL.TTFNET.ALPHA == 0.54 and cfg.EXPORT.INPUT_SIZE == (512, 512)
    cfg.MODEL.TTFNET.ALPHA = 0.3
    centerx.add_centerx_config(cfg)
    assert cfg.MODEL.TTFNET.ALPHA == 0.3, "a second call must leave the keys as they are"
