"""DarkNet-53 (YOLOv3's backbone, TTFNet-53) as a detectron2 backbone.

A 3x3 stem conv (32 channels) then five stages ``dark1``..``dark5``; stage k
halves the resolution with a 3x3 stride-2 conv to 32 * 2^k channels and adds
``blocks[k - 1]`` residual blocks (1x1 conv to half the channels, 3x3 conv back,
plus the input). Every conv is followed by a norm and LeakyReLU(0.1). Stage
``dark{k}`` has stride 2^k input pixels per cell; DarkNet-53 has blocks
(1, 2, 8, 8, 4): 52 convs plus ImageNet's classifier.
"""

import functools
from collections.abc import Sequence

import torch.nn.functional as F
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torch import nn

from ...config import ConfigValueError
from .weights import load_configured_backbone_weights

_LEAKY_SLOPE = 0.1


def conv_norm_leaky(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, norm: str = "BN") -> Conv2d:
    """Conv (no bias) + norm + LeakyReLU(0.1), 'same' padding."""
    return Conv2d(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        padding=kernel_size // 2,
        bias=False,
        norm=get_norm(norm, out_channels),
        activation=functools.partial(F.leaky_relu, negative_slope=_LEAKY_SLOPE, inplace=True),
    )


class DarkNetBlock(nn.Module):
    """Residual block: x + conv3x3(conv1x1(x)); [N, C, H, W] -> [N, C, H, W]."""

    def __init__(self, channels: int, norm: str = "BN"):
        super().__init__()
        self.conv1 = conv_norm_leaky(channels, channels // 2, 1, norm=norm)
        self.conv2 = conv_norm_leaky(channels // 2, channels, 3, norm=norm)

    def forward(self, x):
        return x + self.conv2(self.conv1(x))


class DarkNet(Backbone):
    """DarkNet body without the classifier.

    Input: [N, 3, H, W] normalised image. Output: dict of the requested stages
    ``dark{k}`` of shape [N, 32 * 2^k, H / 2^k, W / 2^k].
    """

    def __init__(
        self,
        blocks: Sequence[int] = (1, 2, 8, 8, 4),
        out_features: Sequence[str] = ("dark2", "dark3", "dark4", "dark5"),
        norm: str = "BN",
    ):
        super().__init__()
        self.stem = conv_norm_leaky(3, 32, 3, norm=norm)
        channels = 32
        self._stage_names = []
        self._out_feature_strides, self._out_feature_channels = {}, {}
        for k, num_blocks in enumerate(blocks, start=1):
            name = f"dark{k}"
            stage = [conv_norm_leaky(channels, 2 * channels, 3, stride=2, norm=norm)]
            channels *= 2
            stage += [DarkNetBlock(channels, norm) for _ in range(num_blocks)]
            self.add_module(name, nn.Sequential(*stage))
            self._stage_names.append(name)
            self._out_feature_strides[name] = 2**k
            self._out_feature_channels[name] = channels
        unknown = [f for f in out_features if f not in self._stage_names]
        if unknown or not out_features:
            raise ConfigValueError(f"MODEL.DARKNET.OUT_FEATURES {list(out_features)}: choose from {self._stage_names}.")
        self._out_features = [n for n in self._stage_names if n in out_features]
        self._size_divisibility = 2 ** len(blocks)

    def forward(self, x):
        x = self.stem(x)
        outs = {}
        for name in self._stage_names[: self._stage_names.index(self._out_features[-1]) + 1]:
            x = getattr(self, name)(x)
            if name in self._out_features:
                outs[name] = x
        return outs

    @property
    def size_divisibility(self):
        return self._size_divisibility


@BACKBONE_REGISTRY.register()
def build_darknet_backbone(cfg, input_shape: ShapeSpec):
    """DarkNet with ``MODEL.DARKNET.STAGE_BLOCKS`` blocks per stage, ImageNet weights
    from ``MODEL.CENTERX.BACKBONE_WEIGHTS`` when set (a state dict with this
    module's parameter names, e.g. ``dark3.2.conv1.weight``, ``dark3.2.conv1.norm.*``;
    "module." / "backbone." prefixes are stripped)."""
    if input_shape.channels != 3:
        raise ValueError(f"The DarkNet backbone expects 3 input channels, got {input_shape.channels}.")
    d = cfg.MODEL.DARKNET
    backbone = DarkNet(d.STAGE_BLOCKS, d.OUT_FEATURES, cfg.MODEL.CENTERX.BACKBONE_NORM)
    load_configured_backbone_weights(backbone, cfg, rename=None)
    return backbone
