"""Generalized IoU (Rezatofighi et al. 2019) and the weighted GIoU loss of TTFNet."""
import torch

_EPS = 1e-7


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
    area_p = (p[..., 2] - p[..., 0]).clamp(min=0) * (p[..., 3] - p[..., 1]).clamp(min=0)
    area_t = (t[..., 2] - t[..., 0]).clamp(min=0) * (t[..., 3] - t[..., 1]).clamp(min=0)
    inter_wh = (torch.minimum(p[..., 2:], t[..., 2:]) - torch.maximum(p[..., :2], t[..., :2])).clamp(min=0)
    inter = inter_wh[..., 0] * inter_wh[..., 1]
    union = area_p + area_t - inter
    iou = inter / union.clamp(min=_EPS)
    encl_wh = (torch.maximum(p[..., 2:], t[..., 2:]) - torch.minimum(p[..., :2], t[..., :2])).clamp(min=0)
    enclosure = encl_wh[..., 0] * encl_wh[..., 1]
    return iou - (enclosure - union) / enclosure.clamp(min=_EPS)


def weighted_giou_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """sum_i w_i (1 - GIoU(pred_i, target_i)) / sum_i w_i, in FP32.

    Args:
        pred, target: [M, 4] boxes (x1, y1, x2, y2); weight: [M] non-negative.

    Returns:
        scalar; 0 (still attached to ``pred``'s graph) when the weights sum to 0.
    """
    w = weight.float()
    total = (w * (1 - generalized_iou(pred, target))).sum()
    return total / w.sum().clamp(min=_EPS)
