"""CenterNet's neck for DLA-34 ("Objects as Points", section 4; the segmentation
network of "Deep Layer Aggregation"): DLA-up then IDA-up, from the backbone's
stride-4..32 features to one map at stride 4 (MODEL.CENTERNET.UPSAMPLER "dla_up").

Both are made of one step, iterative deep aggregation (:class:`IDAUp`): the
features of a list, shallowest first, are merged one after the other into the
stride of the first; each deeper one is projected to the output channels (3x3
conv, norm, ReLU), upsampled by a grouped transposed convolution initialised as
bilinear interpolation, added to the previous merged map and merged by another
3x3 conv, norm, ReLU. The convs are modulated deformable ones with DEFORMABLE,
as the paper's DLA-34 (its 37.4 AP model); plain 3x3 convs otherwise.

:class:`DLAUp` runs IDA-up three times, deepest pair first: strides 16-32 into
16, then 8-16-16 into 8, then 4-8-8-8 into 4, keeping the last map of each pass
(stride 4, 8, 16) and the original stride-32 feature. The neck then merges the
stride-4, 8 and 16 maps of DLA-up once more into stride 4 (the model's IDA-up).

Differences from the reference code: the 3x3 convs have no bias (a norm follows
each, which absorbs it); the modulated deformable conv is torchvision's
(:class:`~centerx.modeling.deform_conv.ModulatedDeformConv2d`), exportable to
ONNX at opset 19.
"""

from collections.abc import Sequence

import torch
from detectron2.layers import ShapeSpec, get_norm
from torch import nn

from ...config import ConfigValueError
from ..deform_conv import ModulatedDeformConv2d
from .centernet_upsampler import bilinear_kernel

__all__ = ["DLAUp", "DLAUpsampler", "IDAUp", "bilinear_upsampling_"]


def bilinear_upsampling_(up: nn.ConvTranspose2d) -> nn.ConvTranspose2d:
    """Initialise a depthwise transposed conv (kernel 2f, stride f, one group per
    channel) as bilinear upsampling by f of each channel; returns it."""
    with torch.no_grad():
        up.weight.copy_(bilinear_kernel(up.kernel_size[0]).expand_as(up.weight))
    return up


def conv_norm_relu(in_channels: int, out_channels: int, deformable: bool, norm: str) -> nn.Sequential:
    """3x3 conv (modulated deformable or plain, no bias) + norm + ReLU."""
    conv_type = ModulatedDeformConv2d if deformable else nn.Conv2d
    return nn.Sequential(
        conv_type(in_channels, out_channels, 3, padding=1, bias=False),
        get_norm(norm, out_channels),
        nn.ReLU(inplace=True),
    )


class IDAUp(nn.Module):
    """Iterative deep aggregation into the first feature's stride.

    Input: a list of n maps, shallowest first: map 0 [N, channels, H, W], map i
    [N, in_channels[i], H / factors[i], W / factors[i]]. Output: the list with maps
    1..n-1 replaced by the merged ones, each [N, channels, H, W] (map i merges maps
    0..i); map 0 is returned as given.
    """

    def __init__(self, channels: int, in_channels: Sequence[int], factors: Sequence[int], deformable: bool, norm: str):
        super().__init__()
        self.project = nn.ModuleList()
        self.upsample = nn.ModuleList()
        self.merge = nn.ModuleList()
        for c, f in zip(in_channels[1:], factors[1:]):
            self.project.append(conv_norm_relu(c, channels, deformable, norm))
            up = nn.ConvTranspose2d(channels, channels, 2 * f, stride=f, padding=f // 2, groups=channels, bias=False)
            self.upsample.append(bilinear_upsampling_(up))
            self.merge.append(conv_norm_relu(channels, channels, deformable, norm))

    def forward(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        out = [maps[0]]
        for x, project, upsample, merge in zip(maps[1:], self.project, self.upsample, self.merge):
            out.append(merge(upsample(project(x)) + out[-1]))
        return out


class DLAUp(nn.Module):
    """Deep layer aggregation upward over features at strides s_0 < ... < s_{n-1}
    (each 2x the previous).

    Input: n maps, shallowest first, [N, C_i, H / s_i, W / s_i]. Output: n maps,
    map i [N, C_i, H / s_i, W / s_i]: for i < n-1 the merge of features i..n-1, the
    deepest as given.
    """

    def __init__(self, channels: Sequence[int], deformable: bool, norm: str):
        super().__init__()
        n = len(channels)
        in_channels = list(channels)
        scales = [2**i for i in range(n)]
        self.stages = nn.ModuleList()
        for start in range(n - 2, -1, -1):  # deepest pair first
            factors = [s // scales[start] for s in scales[start:]]
            self.stages.append(IDAUp(channels[start], in_channels[start:], factors, deformable, norm))
            # what later stages see: the merged maps, at this stage's stride and channels
            scales[start + 1 :] = [scales[start]] * (n - start - 1)
            in_channels[start + 1 :] = [channels[start]] * (n - start - 1)

    def forward(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        maps = list(maps)
        n = len(maps)
        out = [maps[-1]]
        for i, stage in enumerate(self.stages):
            start = n - 2 - i
            maps[start:] = stage(maps[start:])
            out.insert(0, maps[-1])
        return out


class DLAUpsampler(nn.Module):
    """DLA-up, then IDA-up of its stride-4, 8 and 16 maps: the backbone's features at
    strides 4, 8, 16, 32 -> one map at stride 4 with the stride-4 feature's channels
    (64 for DLA-34). The upsampler interface of every point detector's neck
    (:class:`~centerx.modeling.necks.CenterNetUpsampler`): ``in_feature`` (the
    deepest feature, which CoordConv / SPP transform first), ``out_channels``,
    ``out_stride``.

    Input: dict of backbone features; reads those at strides 4, 8, 16, 32.
    Output: [N, C_4, H / 4, W / 4].
    """

    def __init__(self, input_shapes: dict[str, ShapeSpec], deformable: bool = False, norm: str = "BN"):
        super().__init__()
        by_stride = {shape.stride: name for name, shape in input_shapes.items()}
        missing = [s for s in (4, 8, 16, 32) if s not in by_stride]
        if missing:
            raise ConfigValueError(
                f"MODEL.CENTERNET.UPSAMPLER 'dla_up' needs backbone features at strides 4, 8, 16 and 32; this "
                f"backbone has none at {missing} (its features: "
                f"{ {n: s.stride for n, s in input_shapes.items()} })."
            )
        self.in_features = [by_stride[s] for s in (4, 8, 16, 32)]
        self.in_feature = self.in_features[-1]
        channels = [input_shapes[n].channels for n in self.in_features]
        self.dla_up = DLAUp(channels, deformable, norm)
        self.ida_up = IDAUp(channels[0], channels[:3], [1, 2, 4], deformable, norm)
        self.out_channels = channels[0]
        self.out_stride = 4

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        maps = self.dla_up([features[n] for n in self.in_features])
        return self.ida_up(maps[:3])[-1]
