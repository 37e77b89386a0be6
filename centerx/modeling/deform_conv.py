"""Modulated deformable convolution (DCNv2) on ``torchvision.ops.deform_conv2d``."""

import math

import torch
from torch import nn
from torchvision.ops import deform_conv2d


class ModulatedDeformConv2d(nn.Module):
    """3x3 (by default) modulated deformable convolution.

    A plain conv predicts, per output cell, 2*k*k sampling offsets (in input
    cells) and k*k modulation masks (sigmoid); it starts at zero so the layer
    starts as an ordinary conv with masks of 0.5.

    Input [N, C_in, H, W] -> output [N, C_out, H', W'] as ``nn.Conv2d`` would.
    """

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=True):
        super().__init__()
        self.stride, self.padding = stride, padding
        k = kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, k, k))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.offset_mask = nn.Conv2d(in_channels, 3 * k * k, k, stride=stride, padding=padding)
        nn.init.zeros_(self.offset_mask.weight)
        nn.init.zeros_(self.offset_mask.bias)

    def forward(self, x):
        o1, o2, mask = torch.chunk(self.offset_mask(x), 3, dim=1)
        offset = torch.cat((o1, o2), dim=1)
        return deform_conv2d(
            x, offset, self.weight, self.bias, stride=self.stride, padding=self.padding, mask=mask.sigmoid()
        )
