"""Every shipped config merges into centerX's defaults and names a registered architecture."""
import glob
import os

import pytest
from detectron2.config import get_cfg
from detectron2.modeling import META_ARCH_REGISTRY

import centerx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True))


def test_configs_are_found():
    assert len(CONFIGS) >= 14


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, os.path.join(REPO, "configs")))
def test_config_merges(path):
    cfg = centerx.add_centerx_config(get_cfg())
    cfg.merge_from_file(path)
    assert cfg.MODEL.META_ARCHITECTURE in META_ARCH_REGISTRY
    if cfg.MODEL.META_ARCHITECTURE == "Distiller":
        assert cfg.MODEL.DISTILL.STUDENT_META_ARCHITECTURE in META_ARCH_REGISTRY
        assert len(cfg.MODEL.DISTILL.TEACHERS) >= 1


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
