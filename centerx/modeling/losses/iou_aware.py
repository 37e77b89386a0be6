"""IoU-aware scoring loss (PP-YOLO's IoU-aware branch, for TTFNet): each
regression sample learns to predict the IoU of its own predicted box."""

import torch
import torch.nn.functional as F

from .giou import paired_iou

_EPS = 1e-7


def iou_targets(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of each predicted box with its target box, detached: the IoU branch
    learns to predict the box branch's quality without moving the boxes.

    Args:
        pred, target: [..., 4] boxes (x1, y1, x2, y2), any common unit.

    Returns:
        [...] in [0, 1], FP32, no gradient.
    """
    return paired_iou(pred.detach(), target.detach())


def weighted_iou_aware_loss(
    iou_logits: torch.Tensor,
    pred: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor,
    normalizer: torch.Tensor | None = None,
) -> torch.Tensor:
    """sum_i w_i BCE(iou_logits_i, IoU(pred_i, target_i)) / Z, in FP32, Z = sum_i w_i by default.

    Weighted and normalised like :func:`~centerx.modeling.losses.giou.weighted_giou_loss`:
    give it the same samples, weights and normaliser. No gradient reaches ``pred``.

    Args:
        iou_logits: [M] predicted IoU logits; pred, target: [M, 4] boxes
            (x1, y1, x2, y2); weight: [M] non-negative.
        normalizer: optional 0-dim divisor Z in place of sum_i w_i.

    Returns:
        scalar; 0 (still attached to ``iou_logits``' graph) when Z is 0.
    """
    w = weight.float()
    bce = F.binary_cross_entropy_with_logits(iou_logits.float(), iou_targets(pred, target), reduction="none")
    z = w.sum() if normalizer is None else normalizer.float()
    return (w * bce).sum() / z.clamp(min=_EPS)
