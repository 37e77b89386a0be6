"""Logit-level distillation losses between a student and a teacher detector (docs/distillation.md).

Every function compares raw output maps of the two models at the same output
stride, over the classes one teacher teaches, and returns unweighted scalars in
FP32. Teacher maps are targets: no gradient flows into them.

Heatmaps are compared as probabilities, sigmoid(logits). The original centerX
applies ReLU (LeakyReLU for the student) to heatmaps its heads have already
passed through a sigmoid, where it is the identity: "only positive evidence
counts" there means only non-negative scores are compared, never raw logits.
Applying ReLU to our logits instead would zero the loss on every cell where both
models say p < 0.5, i.e. on almost the whole background, and is not done.
"""

import torch
import torch.nn.functional as F

from ..decode import ltrb_to_boxes, peak_mask
from .giou import generalized_iou

_EPS = 1e-6


def heatmap_distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the two heatmaps' probabilities.

    Args:
        student_logits, teacher_logits: [B, K, H, W] heatmap logits of the K
            taught classes, channel k of one matching channel k of the other.

    Returns:
        scalar: mean over B * K * H * W cells of (sigmoid(s) - sigmoid(t))^2.
    """
    return ((torch.sigmoid(student_logits.float()) - torch.sigmoid(teacher_logits.float())) ** 2).mean()


def quality_focal_distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float = 2.0
) -> torch.Tensor:
    """Quality focal loss (GFL, Li et al. 2020) with the teacher's probabilities
    as soft targets, per object the teacher sees (``MODEL.DISTILL.HEATMAP_LOSS``
    "quality_focal"; not in centerX, whose term is :func:`heatmap_distillation_loss`).

    The MSE over every cell is dominated by background, where both maps are near 0:
    on sparse heatmaps it stays tiny whatever the student misses. Here each cell's
    binary cross-entropy against the teacher's probability t is scaled by
    |t - p|^beta (cells the student already matches fade out, as in the focal
    loss) and the sum is divided by the teacher's peak mass (the sum of its
    peak-masked probabilities, :func:`teacher_peak_weight`, at least 1), so the
    term has the magnitude of a detector's own focal loss.

    Args:
        student_logits, teacher_logits: [B, K, H, W] heatmap logits of the K
            taught classes, channel k of one matching channel k of the other.
        beta: exponent of the modulating factor |t - p|.

    Returns:
        scalar: sum over cells of |t - p|^beta * BCE(p, t) / max(1, teacher peak mass);
        0 when the two maps are equal.
    """
    s = student_logits.float()
    t = torch.sigmoid(teacher_logits.detach().float())
    modulation = (t - torch.sigmoid(s)).abs().pow(beta)
    bce = F.binary_cross_entropy_with_logits(s, t, reduction="none")
    return (modulation * bce).sum() / teacher_peak_weight(teacher_logits).sum().clamp(min=1.0)


def teacher_peak_weight(teacher_logits: torch.Tensor) -> torch.Tensor:
    """Where the teacher sees objects, and how sure it is.

    Args:
        teacher_logits: [B, K, H, W] heatmap logits of the taught classes.

    Returns:
        [B, 1, H, W]: max over the K classes of the peak-masked probabilities
        (a cell's probability where it is its 3x3 neighbourhood's maximum, 0
        elsewhere), detached.
    """
    heat = peak_mask(torch.sigmoid(teacher_logits.detach().float()))
    return heat.max(dim=1, keepdim=True).values


def weighted_l1_distillation_loss(
    student_map: torch.Tensor, teacher_map: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """sum over cells of w * |s - t| (summed over channels) / sum of w.

    Args:
        student_map, teacher_map: [B, D, H, W] regression maps (e.g. size or
            offset in output-stride cells); weight: [B, 1, H, W] non-negative.

    Returns:
        scalar in the maps' unit (summed over the D channels, as the original
        centerX); 0 when the weights sum to 0.
    """
    w = weight.float()
    total = (w * (student_map.float() - teacher_map.detach().float()).abs()).sum()
    return total / w.sum().clamp(min=_EPS)


def weighted_giou_distillation_loss(
    student_ltrb: torch.Tensor, teacher_ltrb: torch.Tensor, weight: torch.Tensor, stride: int
) -> torch.Tensor:
    """sum over cells of w * (1 - GIoU(student box, teacher box)) / sum of w.

    Boxes are decoded at every cell as TTFNet does (docs/design.md). Cells where the
    teacher's box is empty (its l + r or t + b is 0) carry no box to learn and
    get weight 0, so identical models give exactly 0.

    Args:
        student_ltrb, teacher_ltrb: [B, 4, H, W] distances from each cell point to
            the box sides in input pixels; weight: [B, 1, H, W] non-negative;
            stride: input pixels per cell.

    Returns:
        scalar in [0, 2]; 0 when no weighted cell is left.
    """
    B, _, H, W = student_ltrb.shape
    ys, xs = torch.meshgrid(
        torch.arange(H, device=student_ltrb.device), torch.arange(W, device=student_ltrb.device), indexing="ij"
    )
    s = ltrb_to_boxes(student_ltrb.float().permute(0, 2, 3, 1), xs, ys, stride)
    t = ltrb_to_boxes(teacher_ltrb.detach().float().permute(0, 2, 3, 1), xs, ys, stride)
    nonempty = ((t[..., 2] > t[..., 0]) & (t[..., 3] > t[..., 1])).float()
    w = weight.float()[:, 0] * nonempty
    total = (w * (1.0 - generalized_iou(s, t))).sum()
    return total / w.sum().clamp(min=_EPS)


def centernet_distillation_losses(
    student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """CenterNet: heatmap MSE, and size / offset L1 weighted by the teacher's peaks.

    Args:
        student, teacher: CenterNet output dicts restricted to the taught classes:
            ``heatmap`` [B, K, H, W] logits, ``wh`` and ``offset`` [B, 2, H, W].

    Returns:
        {"heatmap", "wh", "offset"}: unweighted scalars.
    """
    weight = teacher_peak_weight(teacher["heatmap"])
    return {
        "heatmap": heatmap_distillation_loss(student["heatmap"], teacher["heatmap"]),
        "wh": weighted_l1_distillation_loss(student["wh"], teacher["wh"], weight),
        "offset": weighted_l1_distillation_loss(student["offset"], teacher["offset"], weight),
    }


def ttfnet_distillation_losses(
    student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor], stride: int
) -> dict[str, torch.Tensor]:
    """TTFNet: heatmap MSE, and box GIoU loss weighted by the teacher's peaks.

    Args:
        student, teacher: TTFNet output dicts restricted to the taught classes:
            ``heatmap`` [B, K, H, W] logits, ``ltrb`` [B, 4, H, W] input pixels.
        stride: input pixels per cell.

    Returns:
        {"heatmap", "box"}: unweighted scalars.
    """
    weight = teacher_peak_weight(teacher["heatmap"])
    return {
        "heatmap": heatmap_distillation_loss(student["heatmap"], teacher["heatmap"]),
        "box": weighted_giou_distillation_loss(student["ltrb"], teacher["ltrb"], weight, stride),
    }
