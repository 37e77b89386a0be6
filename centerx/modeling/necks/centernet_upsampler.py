"""CenterNet's upsampler for ResNet backbones (stride 32 -> 4)."""
from typing import Sequence

import torch
from detectron2.layers import get_norm
from torch import nn

from ..deform_conv import ModulatedDeformConv2d


def bilinear_init_(deconv: nn.ConvTranspose2d) -> None:
    """Initialise a stride-2 transposed conv as bilinear upsampling of each channel
    (identity across channels), as CenterNet does."""
    k = deconv.kernel_size[0]
    factor = (k + 1) // 2
    center = factor - 1 if k % 2 == 1 else factor - 0.5
    r = torch.arange(k, dtype=torch.float32)
    filt1d = 1 - (r - center).abs() / factor
    filt = filt1d[:, None] * filt1d[None, :]
    with torch.no_grad():
        deconv.weight.zero_()
        n = min(deconv.in_channels, deconv.out_channels)
        idx = torch.arange(n)
        deconv.weight[idx, idx] = filt


class CenterNetUpsampler(nn.Module):
    """Three stages of [3x3 conv (or modulated DCN) + norm + ReLU, 4x4 transposed
    conv x2 + norm + ReLU].

    Input: the stride-32 feature map [N, C_in, H/32, W/32].
    Output: [N, channels[-1], H/4, W/4].
    """

    def __init__(self, in_channels: int, channels: Sequence[int] = (256, 128, 64),
                 deformable: bool = False, norm: str = "BN"):
        super().__init__()
        layers = []
        for out in channels:
            conv = (ModulatedDeformConv2d(in_channels, out, 3, padding=1, bias=False) if deformable
                    else nn.Conv2d(in_channels, out, 3, padding=1, bias=False))
            up = nn.ConvTranspose2d(out, out, 4, stride=2, padding=1, bias=False)
            bilinear_init_(up)
            layers += [conv, get_norm(norm, out), nn.ReLU(inplace=True),
                       up, get_norm(norm, out), nn.ReLU(inplace=True)]
            in_channels = out
        self.layers = nn.Sequential(*layers)
        self.out_channels = in_channels
        self.upsample_factor = 2 ** len(channels)

    def forward(self, x):
        return self.layers(x)
