"""CoordConv ("An intriguing failing of convolutional neural networks and the
CoordConv solution", Liu et al. 2018), as PP-YOLO uses it: two coordinate
channels appended to a feature map before a convolution."""

import torch
from torch import nn

from .pointwise import pointwise_conv_block


def _ramp(n: int, like: torch.Tensor) -> torch.Tensor:
    """[n] from -1 to 1 in equal steps ([-1] for n = 1), in ``like``'s dtype and
    device. Unlike ``linspace``, whose ONNX export divides by n - 1, finite for n = 1."""
    i = torch.arange(n, dtype=like.dtype, device=like.device)
    return i * 2.0 / i[-1:].clamp(min=1.0) - 1.0


def coordinate_channels(x: torch.Tensor) -> torch.Tensor:
    """The x and y coordinates of every cell of ``x``, each running linearly from
    -1 (first column / row) to 1 (last one); -1 along an axis of length 1.

    Computed from ``x``'s shape at run time, so a traced graph keeps H and W dynamic.

    Args:
        x: [N, C, H, W].

    Returns:
        [N, 2, H, W] in ``x``'s dtype and device: channel 0 = x, channel 1 = y.
    """
    N, _, H, W = x.shape
    xs, ys = _ramp(W, x), _ramp(H, x)
    return torch.stack((xs.view(1, W).expand(H, W), ys.view(H, 1).expand(H, W))).expand(N, 2, H, W)


class CoordConv(nn.Module):
    """Append :func:`coordinate_channels`, then a 1x1 conv back to the input's
    channel count + norm + ReLU (conv with a bias and no norm when ``norm`` is "").

    Input [N, C, H, W] -> output [N, C, H, W] (same stride).
    """

    def __init__(self, channels: int, norm: str = "BN"):
        """
        Args:
            channels: C of the input and output.
            norm: detectron2 ``get_norm`` name ("BN", "SyncBN", "GN", ...; "" = none).
        """
        super().__init__()
        self.conv = pointwise_conv_block(channels + 2, channels, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat((x, coordinate_channels(x)), dim=1))


def build_coord_conv(cfg, channels: int) -> nn.Module:
    """A :class:`CoordConv` for a ``channels``-channel feature when
    MODEL.CENTERX.COORD_CONV is on (norm MODEL.CENTERX.NECK_NORM), else the identity."""
    if not cfg.MODEL.CENTERX.COORD_CONV:
        return nn.Identity()
    return CoordConv(channels, cfg.MODEL.CENTERX.NECK_NORM)
