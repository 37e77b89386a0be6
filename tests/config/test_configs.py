"""Every shipped config merges into centerX's defaults, builds a model that detects,
and trains it one step."""

import glob
import os

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import META_ARCH_REGISTRY, build_model
from detectron2.structures import Boxes, Instances

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


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, os.path.join(REPO, "configs")))
def test_config_trains_one_step(path):
    """One float32 training step of every shipped config (a Distiller's student) on
    two 64 x 64 images, one with two objects and one with none: every loss term is
    finite and positive, every trainable parameter gets a finite gradient (no
    part of the model left out of the loss), every parameter of the heads a
    non-zero one, and the optimizer step moves them all."""
    cfg = centerx.add_centerx_config(get_cfg())
    cfg.merge_from_file(path)
    if cfg.MODEL.META_ARCHITECTURE == "Distiller":
        cfg.MODEL.META_ARCHITECTURE = cfg.MODEL.DISTILL.STUDENT_META_ARCHITECTURE
    cfg.MODEL.DEVICE = "cpu"
    num_classes = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE).config_node(cfg).NUM_CLASSES
    torch.manual_seed(0)
    model = build_model(cfg).train()
    optimizer = build_optimizer(cfg, model)
    boxes = torch.tensor([[4.0, 6.0, 30.0, 40.0], [33.0, 10.0, 60.0, 22.0]])
    # the objects drawn bright on dark noise: on noise alone a random network's features
    # are alike over the whole map, and TTFNet's box head (ReLU on its output) can start dead
    images = torch.randint(0, 64, (2, 3, 64, 64), dtype=torch.uint8)
    for x0, y0, x1, y1 in boxes.int().tolist():
        images[0, :, y0:y1, x0:x1] = 255
    batch = [
        {
            "image": images[0],
            "instances": Instances((64, 64), gt_boxes=Boxes(boxes), gt_classes=torch.tensor([0, num_classes - 1])),
        },
        {
            "image": images[1],
            "instances": Instances(
                (64, 64), gt_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0, dtype=torch.long)
            ),
        },
    ]
    losses = model(batch)
    assert losses and all(torch.isfinite(v) and v > 0 for v in losses.values()), losses
    sum(losses.values()).backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing = [n for n, p in trainable.items() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no finite gradient: {missing[:5]}"
    heads = {n: p for n, p in model.heads.named_parameters() if p.requires_grad}
    assert [n for n, p in heads.items() if not p.grad.abs().sum() > 0] == [], "heads without a gradient"
    before = {n: p.detach().clone() for n, p in heads.items()}
    optimizer.step()
    assert [n for n, p in heads.items() if torch.equal(p, before[n])] == []


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
