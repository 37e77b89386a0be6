"""Spatial pyramid pooling as YOLOv3-SPP and PP-YOLO use it: a feature map
concatenated with stride-1 max-pools of several sizes, fused back by a 1x1 conv."""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...config import ConfigValueError
from .pointwise import pointwise_conv_block


class SPP(nn.Module):
    """[x, maxpool_k1(x), maxpool_k2(x), ...] concatenated along channels, then a
    1x1 conv back to the input's channel count + norm + ReLU (conv with a bias and
    no norm when ``norm`` is "").

    Each pool has stride 1 and "same" padding (k // 2 cells; padding never wins
    the max), so the map keeps its size and a pool of size k sees k x k cells.

    Input [N, C, H, W] -> output [N, C, H, W] (same stride).
    """

    def __init__(self, channels: int, pool_sizes: Sequence[int] = (5, 9, 13), norm: str = "BN"):
        """
        Args:
            channels: C of the input and output.
            pool_sizes: max-pool kernel sizes in cells, each positive and odd.
            norm: detectron2 ``get_norm`` name ("BN", "SyncBN", "GN", ...; "" = none).
        """
        super().__init__()
        pool_sizes = tuple(int(k) for k in pool_sizes)
        if not pool_sizes or any(k < 1 or k % 2 == 0 for k in pool_sizes):
            raise ConfigValueError(
                f"MODEL.CENTERX.SPP.POOL_SIZES must be one or more positive odd sizes (a stride-1 pool "
                f"keeps the map's size only with an odd kernel); got {pool_sizes}."
            )
        self.pool_sizes = pool_sizes
        self.fuse = pointwise_conv_block(channels * (1 + len(pool_sizes)), channels, norm)

    def extra_repr(self) -> str:
        return f"pool_sizes={self.pool_sizes}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = [F.max_pool2d(x, k, stride=1, padding=k // 2) for k in self.pool_sizes]
        return self.fuse(torch.cat([x] + pooled, dim=1))


def build_spp(cfg, channels: int) -> nn.Module:
    """An :class:`SPP` for a ``channels``-channel feature when
    MODEL.CENTERX.SPP.ENABLED (pools MODEL.CENTERX.SPP.POOL_SIZES, norm
    MODEL.CENTERX.NECK_NORM), else the identity."""
    if not cfg.MODEL.CENTERX.SPP.ENABLED:
        return nn.Identity()
    return SPP(channels, cfg.MODEL.CENTERX.SPP.POOL_SIZES, cfg.MODEL.CENTERX.NECK_NORM)
