from .darknet import DarkNet, build_darknet_backbone
from .resnet import TorchvisionResNet, build_torchvision_resnet_backbone
from .timm import TimmBackbone, build_timm_backbone
from .weights import load_backbone_weights, read_weights_file

__all__ = [
    "TorchvisionResNet",
    "build_torchvision_resnet_backbone",
    "load_backbone_weights",
    "read_weights_file",
    "DarkNet",
    "build_darknet_backbone",
    "TimmBackbone",
    "build_timm_backbone",
]
