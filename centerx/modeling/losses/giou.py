"""Generalized IoU (Rezatofighi et al. 2019) and the weighted GIoU loss of TTFNet."""

import torch

_EPS = 1e-7


def _intersection_union(p: torch.Tensor, t: torch.Tensor):
    """Element-wise intersection and union areas of [..., 4] boxes (zero-area
    boxes where x2 < x1 or y2 < y1)."""
    area_p = (p[..., 2] - p[..., 0]).clamp(min=0) * (p[..., 3] - p[..., 1]).clamp(min=0)
    area_t = (t[..., 2] - t[..., 0]).clamp(min=0) * (t[..., 3] - t[..., 1]).clamp(min=0)
    inter_wh = (torch.minimum(p[..., 2:], t[..., 2:]) - torch.maximum(p[..., :2], t[..., :2])).clamp(min=0)
    inter = inter_wh[..., 0] * inter_wh[..., 1]
    return inter, area_p + area_t - inter


def paired_iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Element-wise IoU = |A n B| / |A u B| in FP32; 0 where the union is 0.

    Args:
        pred, target: [..., 4] boxes (x1, y1, x2, y2), any common unit.

    Returns:
        [...] IoU in [0, 1].
    """
    inter, union = _intersection_union(pred.float(), target.float())
    return inter / union.clamp(min=_EPS)


def generalized_iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Element-wise GIoU = IoU - (|C| - |A u B|) / |C|, C the smallest enclosing box.

    Computed in FP32. Boxes with x2 < x1 or y2 < y1 count as zero area.
    Degenerate cases stay finite: a zero union gives IoU 0 and a zero enclosing
    box gives no enclosure penalty.

    Args:
        pred, target: [..., 4] boxes (x1, y1, x2, y2), any common unit.

    Returns:
        [...] GIoU in [-1, 1].
    """
    p, t = pred.float(), target.float()
    inter, union = _intersection_union(p, t)
    iou = inter / union.clamp(min=_EPS)
    encl_wh = (torch.maximum(p[..., 2:], t[..., 2:]) - torch.minimum(p[..., :2], t[..., :2])).clamp(min=0)
    enclosure = encl_wh[..., 0] * encl_wh[..., 1]
    return iou - (enclosure - union) / enclosure.clamp(min=_EPS)


def weighted_giou_loss(
    pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, normalizer: torch.Tensor | None = None
) -> torch.Tensor:
    """sum_i w_i (1 - GIoU(pred_i, target_i)) / Z, in FP32, Z = sum_i w_i by default.

    Args:
        pred, target: [M, 4] boxes (x1, y1, x2, y2); weight: [M] non-negative.
        normalizer: optional 0-dim divisor Z in place of sum_i w_i (TTFNet passes
            the sum of its sample weights before per-object loss weights scaled them).

    Returns:
        scalar; 0 (still attached to ``pred``'s graph) when Z is 0.
    """
    w = weight.float()
    total = (w * (1 - generalized_iou(pred, target))).sum()
    z = w.sum() if normalizer is None else normalizer.float()
    return total / z.clamp(min=_EPS)
