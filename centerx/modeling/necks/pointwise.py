"""The 1x1 conv + norm + ReLU that CoordConv and SPP end with."""

from detectron2.layers import get_norm
from torch import nn


def pointwise_conv_block(in_channels: int, out_channels: int, norm: str = "BN") -> nn.Sequential:
    """1x1 conv (He-normal, fan-out) + ``norm`` + ReLU: [N, in_channels, H, W] ->
    [N, out_channels, H, W]. ``norm`` is a detectron2 ``get_norm`` name; with ""
    the conv has a bias (zero) and there is no norm layer. The conv is element 0."""
    layers = [nn.Conv2d(in_channels, out_channels, 1, bias=not norm)]
    if norm:
        layers.append(get_norm(norm, out_channels))
    layers.append(nn.ReLU(inplace=True))
    block = nn.Sequential(*layers)
    nn.init.kaiming_normal_(block[0].weight, mode="fan_out", nonlinearity="relu")
    if block[0].bias is not None:
        nn.init.zeros_(block[0].bias)
    return block
