"""L1 regression losses taken at object centre cells."""

import torch


def gather_at(fmap: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Values of a dense map at flat cell indices.

    Args:
        fmap: [B, D, H, W]; index: [B, K] int64, y * W + x.

    Returns:
        [B, K, D].
    """
    B, D = fmap.shape[:2]
    flat = fmap.reshape(B, D, -1)
    return flat.gather(2, index.unsqueeze(1).expand(B, D, index.shape[1])).permute(0, 2, 1)


def masked_l1_loss(
    pred_map: torch.Tensor,
    index: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean absolute error at the objects' centre cells (FP32).

    Args:
        pred_map: [B, D, H, W]; index: [B, K] centre cells; target: [B, K, D];
        mask: [B, K] 1 for real objects.
        weight: optional [B, K] per-object loss weights (e.g. mixup's); None = 1.
            They scale each object's term only: the divisor stays the number
            of objects, so an object of weight w counts w times as much.

    Returns:
        scalar: sum weight * |pred - target| over real objects and D channels,
        divided by (number of objects * D), 0 when there are none.
    """
    pred = gather_at(pred_map, index).float()
    m = mask.float().unsqueeze(-1)
    per_object = m if weight is None else m * weight.float().unsqueeze(-1)
    total = ((pred - target.float()).abs() * per_object).sum()
    return total / (m.sum() * pred.shape[-1]).clamp(min=1.0)
