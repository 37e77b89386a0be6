"""CenterNet's upsampler for ResNet backbones (stride 32 -> 4)."""

from collections.abc import Sequence

import torch
from detectron2.layers import ShapeSpec, get_norm
from torch import nn

from ..deform_conv import ModulatedDeformConv2d


def bilinear_kernel(k: int) -> torch.Tensor:
    """[k, k] weights of bilinear upsampling by (k + 1) // 2 as a transposed conv of
    kernel k (CenterNet's and DLA's initialisation of their upsampling convs)."""
    factor = (k + 1) // 2
    center = factor - 1 if k % 2 == 1 else factor - 0.5
    filt1d = 1 - (torch.arange(k, dtype=torch.float32) - center).abs() / factor
    return filt1d[:, None] * filt1d[None, :]


def bilinear_init_(deconv: nn.ConvTranspose2d) -> None:
    """Initialise a stride-2 transposed conv as bilinear upsampling of each channel
    (identity across channels), as CenterNet does."""
    with torch.no_grad():
        deconv.weight.zero_()
        n = min(deconv.in_channels, deconv.out_channels)
        idx = torch.arange(n)
        deconv.weight[idx, idx] = bilinear_kernel(deconv.kernel_size[0])


class CenterNetUpsampler(nn.Module):
    """Three stages of [3x3 conv (or modulated DCN) + norm + ReLU, 4x4 transposed
    conv x2 + norm + ReLU] on the backbone feature of the largest stride.

    The upsampler interface every point detector's neck follows
    (:class:`~centerx.modeling.meta_arch.PointDetector`): built from the
    backbone's ``output_shape()``; ``forward`` takes the dict of backbone features
    and returns one map; ``in_feature`` names the feature it starts from (the one
    CoordConv / SPP transform first), ``out_channels`` and ``out_stride`` (input
    pixels per cell) describe its output.

    Input: dict of backbone features; reads ``in_feature`` [N, C_in, H/S, W/S].
    Output: [N, channels[-1], H/out_stride, W/out_stride], out_stride = S / 2^len(channels).
    """

    def __init__(
        self,
        input_shapes: dict[str, ShapeSpec],
        channels: Sequence[int] = (256, 128, 64),
        deformable: bool = False,
        norm: str = "BN",
    ):
        """
        Args:
            input_shapes: the backbone's ``output_shape()``.
            channels: output channels of each upsampling stage.
            deformable: modulated deformable 3x3 convs instead of plain ones.
            norm: detectron2 norm name ("BN", "SyncBN", ...).
        """
        super().__init__()
        self.in_feature = max(input_shapes, key=lambda name: input_shapes[name].stride)
        in_channels = input_shapes[self.in_feature].channels
        layers = []
        for out in channels:
            conv = (
                ModulatedDeformConv2d(in_channels, out, 3, padding=1, bias=False)
                if deformable
                else nn.Conv2d(in_channels, out, 3, padding=1, bias=False)
            )
            up = nn.ConvTranspose2d(out, out, 4, stride=2, padding=1, bias=False)
            bilinear_init_(up)
            layers += [conv, get_norm(norm, out), nn.ReLU(inplace=True), up, get_norm(norm, out), nn.ReLU(inplace=True)]
            in_channels = out
        self.layers = nn.Sequential(*layers)
        self.out_channels = in_channels
        self.out_stride = input_shapes[self.in_feature].stride // 2 ** len(channels)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.layers(features[self.in_feature])
