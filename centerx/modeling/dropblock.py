"""DropBlock ("DropBlock: A regularization method for convolutional networks",
Ghiasi et al., NeurIPS 2018): dropout of contiguous square blocks of a feature map."""

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigValueError


class DropBlock(nn.Module):
    """Zero random ``block_size`` x ``block_size`` blocks of each channel in
    training; the identity in eval mode.

    Block centres are drawn independently per sample, channel and cell with
    probability gamma = drop_prob / block_size^2 * H * W / ((H - block_size + 1) *
    (W - block_size + 1)), only where the whole block fits inside the map (the
    paper's gamma and valid region), so that about ``drop_prob`` of the units
    are dropped (a little fewer where blocks overlap). The kept units are
    multiplied by numel / (number of kept units), so the mean activation is
    kept. The count is a device tensor: nothing is read back to the host.

    Input [N, C, H, W] with H, W >= ``block_size`` -> output of the same shape.
    """

    def __init__(self, drop_prob: float = 0.1, block_size: int = 3):
        """
        Args:
            drop_prob: fraction of the units to drop, in [0, 1).
            block_size: side of the dropped squares in cells of the input map, odd.
        """
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ConfigValueError(f"MODEL.CENTERX.DROPBLOCK.DROP_PROB must be in [0, 1); got {drop_prob}.")
        if block_size < 1 or block_size % 2 == 0:
            raise ConfigValueError(
                f"MODEL.CENTERX.DROPBLOCK.BLOCK_SIZE must be a positive odd number (blocks are centred "
                f"on a cell); got {block_size}."
            )
        self.drop_prob = float(drop_prob)
        self.block_size = int(block_size)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}, block_size={self.block_size}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        N, C, H, W = x.shape
        k = self.block_size
        if H < k or W < k:
            raise ValueError(
                f"DropBlock: the {H}x{W} feature map is smaller than MODEL.CENTERX.DROPBLOCK.BLOCK_SIZE "
                f"{k}; use a smaller block or larger training images."
            )
        valid_h, valid_w = H - k + 1, W - k + 1
        gamma = self.drop_prob / (k * k) * (H * W) / (valid_h * valid_w)
        # the mask in FP32 whatever x is: a count of kept units overflows FP16
        centres = torch.bernoulli(torch.full((N, C, valid_h, valid_w), gamma, device=x.device))
        # centres padded to the full map (block centres lie at least k // 2 cells
        # inside the border), then each grown to its k x k block
        blocks = F.max_pool2d(F.pad(centres, [k // 2] * 4), k, stride=1, padding=k // 2)
        keep = 1.0 - blocks
        scale = keep.numel() / keep.sum().clamp(min=1.0)
        return x * (keep * scale).to(x.dtype)


def drop_block_args(cfg) -> tuple[float, int] | None:
    """(MODEL.CENTERX.DROPBLOCK.DROP_PROB, BLOCK_SIZE) when DropBlock is enabled, else
    None: the ``drop_block`` argument of the heads."""
    d = cfg.MODEL.CENTERX.DROPBLOCK
    return (d.DROP_PROB, d.BLOCK_SIZE) if d.ENABLED else None
