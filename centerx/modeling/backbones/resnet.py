"""ResNet-18/34/50/101 in torchvision's layout as a detectron2 backbone.

Torchvision's layout keeps ImageNet ``.pth`` files loadable as they are and
exports to ONNX / Caffe with plain ops. Outputs ``res2``..``res5`` at strides
4, 8, 16, 32 (input pixels per cell).
"""

import torchvision
from detectron2.layers import ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY, Backbone

from ...config import ConfigValueError
from .weights import load_configured_backbone_weights

_BUILDERS = {
    18: torchvision.models.resnet18,
    34: torchvision.models.resnet34,
    50: torchvision.models.resnet50,
    101: torchvision.models.resnet101,
}


class TorchvisionResNet(Backbone):
    """ResNet body (stem + 4 stages, no pooling / fc).

    Input: [N, 3, H, W] normalised image. Output: dict of ``res2``..``res5``
    feature maps of shape [N, C_k, H / s_k, W / s_k], s_k = 4, 8, 16, 32.
    """

    def __init__(self, depth: int, norm: str = "BN"):
        super().__init__()
        if depth not in _BUILDERS:
            raise ConfigValueError(f"MODEL.RESNETS.DEPTH={depth} is not supported; use one of {sorted(_BUILDERS)}.")
        net = _BUILDERS[depth](weights=None, norm_layer=lambda c: get_norm(norm, c))
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        expansion = 1 if depth < 50 else 4
        self._out_features = ["res2", "res3", "res4", "res5"]
        self._out_feature_strides = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
        self._out_feature_channels = {f"res{i + 2}": 64 * 2**i * expansion for i in range(4)}

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = {}
        for name, layer in zip(self._out_features, (self.layer1, self.layer2, self.layer3, self.layer4)):
            x = layer(x)
            outs[name] = x
        return outs

    @property
    def size_divisibility(self):
        return 32


@BACKBONE_REGISTRY.register()
def build_torchvision_resnet_backbone(cfg, input_shape: ShapeSpec):
    """ResNet of depth ``MODEL.RESNETS.DEPTH``, ImageNet weights from
    ``MODEL.CENTERX.BACKBONE_WEIGHTS`` when set."""
    if input_shape.channels != 3:
        raise ValueError(f"The ResNet backbone expects 3 input channels, got {input_shape.channels}.")
    backbone = TorchvisionResNet(cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.CENTERX.BACKBONE_NORM)
    load_configured_backbone_weights(backbone, cfg)
    return backbone
