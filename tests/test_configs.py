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
