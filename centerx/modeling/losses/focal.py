"""Penalty-reduced pixel-wise focal loss (CornerNet / CenterNet)."""

import torch
import torch.nn.functional as F


def penalty_reduced_focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 2.0,
    beta: float = 4.0,
    pos_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Focal loss against a Gaussian heatmap, normalised by the number of objects.

        L = -1/N sum { w (1 - p)^alpha log p                 where y = 1
                     { (1 - y)^beta p^alpha log(1 - p)       otherwise

    computed in FP32 from logits (log p = logsigmoid(x), log(1 - p) =
    logsigmoid(-x)), so it stays finite without clamping p and under AMP.

    Args:
        logits: [B, C, H, W] heatmap logits; target: same shape, in [0, 1], with
            exactly 1 at object centres.
        pos_weight: optional [B, C, H, W] weight w of each positive cell's term
            (per-object loss weights, e.g. mixup's; see
            :func:`~centerx.modeling.targets.draw_peak_weights`); None = 1 everywhere.
            Negative terms stay unweighted.
        N: number of cells with y == 1 (at least 1), whatever the weights.

    Returns:
        scalar loss.
    """
    x = logits.float()
    y = target.float()
    pos = y.eq(1).float()
    log_p = F.logsigmoid(x)
    log_1mp = F.logsigmoid(-x)
    p = torch.sigmoid(x)
    pos_loss = (1 - p).pow(alpha) * log_p * pos
    if pos_weight is not None:
        pos_loss = pos_loss * pos_weight.float()
    neg_loss = (1 - y).pow(beta) * p.pow(alpha) * log_1mp * (1 - pos)
    num_pos = pos.sum().clamp(min=1.0)
    return -(pos_loss.sum() + neg_loss.sum()) / num_pos
