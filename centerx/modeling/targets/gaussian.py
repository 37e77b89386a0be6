"""Gaussian heatmap drawing shared by the CenterNet and TTFNet targets.

All coordinates here are output-stride cells.
"""

import torch

from ...config import ConfigValueError

RADIUS_MODES = ("corrected", "original")


def gaussian_radius(
    heights: torch.Tensor, widths: torch.Tensor, min_overlap: float = 0.7, mode: str = "original"
) -> torch.Tensor:
    """CornerNet's Gaussian radius for boxes of the given size.

    The radius r is the largest corner shift that keeps IoU >= ``min_overlap``
    with the box, the minimum over CornerNet's three cases (both corners
    inside, both outside, one of each). Each case is a quadratic
    ``a r^2 + b r + c = 0`` (here written with b as in CornerNet's code).

    Args:
        heights, widths: [N] box sizes in cells.
        mode: "corrected" takes each quadratic's proper root,
            (b1 - sqrt(D1)) / 2, (b2 - sqrt(D2)) / 8 and (b3 + sqrt(D3)) / (2 a3);
            "original" takes (b + sqrt(D)) / 2 in all three cases, as the
            original CenterNet / CornerNet code (much larger radii).

    Returns:
        [N] float radii (not rounded).
    """
    if mode not in RADIUS_MODES:
        raise ConfigValueError(f"MODEL.CENTERNET.RADIUS_MODE must be one of {RADIUS_MODES}, got '{mode}'.")
    h, w = heights.float(), widths.float()
    b1 = h + w
    c1 = w * h * (1 - min_overlap) / (1 + min_overlap)
    sq1 = torch.sqrt((b1**2 - 4 * c1).clamp(min=0))
    a2 = 4.0
    b2 = 2 * (h + w)
    c2 = (1 - min_overlap) * w * h
    sq2 = torch.sqrt((b2**2 - 4 * a2 * c2).clamp(min=0))
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (h + w)
    c3 = (min_overlap - 1) * w * h
    sq3 = torch.sqrt((b3**2 - 4 * a3 * c3).clamp(min=0))
    if mode == "original":
        r1, r2, r3 = (b1 + sq1) / 2, (b2 + sq2) / 2, (b3 + sq3) / 2
    else:
        r1, r2, r3 = (b1 - sq1) / 2, (b2 - sq2) / (2 * a2), (b3 + sq3) / (2 * a3)
    return torch.minimum(torch.minimum(r1, r2), r3)


def gaussian_patches(centers: torch.Tensor, radii: torch.Tensor, output_size: tuple[int, int], window: tuple[int, int]):
    """Truncated (elliptical) Gaussians of many objects on windows around their centres.

    Object n gets exp(-dx^2 / (2 sx^2) - dy^2 / (2 sy^2)) on the cells with
    |dx| <= rx, |dy| <= ry around its centre cell, sigma s = (2r + 1) / 6 per
    axis (the window of 2r + 1 cells spans +-3 sigma); the value at the centre
    cell is exactly 1. Every object uses the same window, (2 wx + 1) x (2 wy + 1)
    cells for ``window`` = (wx, wy), with zeros beyond its own radius and
    outside the map; radii larger than the window are clamped to it.

    The window is a host value so that the whole computation is shape-static:
    nothing is read back from the device.

    Args:
        centers: [N, 2] int64 centre cells (x, y).
        radii: [N, 2] int64 radii (rx, ry) in cells, >= 0.
        output_size: (H, W) of the map in cells.
        window: (wx, wy) host ints >= 0, half-sizes of the window in cells.

    Returns:
        values [N, Y, X] float32, xs [N, X] and ys [N, Y] int64 cell coordinates
        of the window (clamped into the map where the value is 0).
    """
    H, W = output_size
    device = centers.device
    wx, wy = (max(0, int(w)) for w in window)
    radii = torch.stack((radii[:, 0].clamp(max=wx), radii[:, 1].clamp(max=wy)), dim=1)
    dx = torch.arange(-wx, wx + 1, device=device)
    dy = torch.arange(-wy, wy + 1, device=device)
    sigma = (2 * radii.float() + 1) / 6  # [N, 2]
    gx = torch.exp(-(dx[None, :].float() ** 2) / (2 * sigma[:, :1] ** 2))  # [N, X]
    gy = torch.exp(-(dy[None, :].float() ** 2) / (2 * sigma[:, 1:] ** 2))  # [N, Y]
    gx = gx * (dx[None, :].abs() <= radii[:, :1])
    gy = gy * (dy[None, :].abs() <= radii[:, 1:])
    xs = centers[:, :1] + dx[None, :]  # [N, X]
    ys = centers[:, 1:] + dy[None, :]  # [N, Y]
    gx = gx * ((xs >= 0) & (xs < W))
    gy = gy * ((ys >= 0) & (ys < H))
    values = gy[:, :, None] * gx[:, None, :]  # [N, Y, X]
    return values, xs.clamp(0, W - 1), ys.clamp(0, H - 1)


def draw_gaussians(
    heatmap: torch.Tensor,
    batch_idx: torch.Tensor,
    classes: torch.Tensor,
    centers: torch.Tensor,
    radii: torch.Tensor,
    window: tuple[int, int],
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Splat truncated (elliptical) Gaussians into ``heatmap``, combining by max.

    The Gaussians are those of :func:`gaussian_patches` (sigma = (2r + 1) / 6
    per axis, value 1 at the centre cell, zero beyond the radius). Objects with
    ``valid`` False leave no trace (their class and centre may be anything).

    Args:
        heatmap: [B, C, H, W] float, modified in place.
        batch_idx, classes: [N] int64 image index and class of each object.
        centers: [N, 2] int64 centre cells (x, y).
        radii: [N, 2] int64 radii (rx, ry) in cells, >= 0.
        window: (wx, wy) host ints, see :func:`gaussian_patches`.
        valid: optional [N] bool.

    Returns:
        ``heatmap``.
    """
    if batch_idx.numel() == 0:
        return heatmap
    B, C, H, W = heatmap.shape
    values, xs, ys = gaussian_patches(centers, radii, (H, W), window)
    if valid is not None:
        values = values * valid[:, None, None]
    plane = (batch_idx * C + classes.clamp(0, C - 1)) * (H * W)  # [N]
    index = plane[:, None, None] + ys[:, :, None] * W + xs[:, None, :]
    heatmap.view(-1).scatter_reduce_(0, index.reshape(-1), values.reshape(-1).to(heatmap.dtype), reduce="amax")
    return heatmap


def draw_peak_weights(
    shape: tuple[int, int, int, int],
    batch_idx: torch.Tensor,
    classes: torch.Tensor,
    centers: torch.Tensor,
    weights: torch.Tensor,
    valid: torch.Tensor,
) -> torch.Tensor:
    """Per-object loss weights placed at the objects' heatmap peaks: the
    ``pos_weight`` of :func:`~centerx.modeling.losses.penalty_reduced_focal_loss`.

    Each valid object writes its weight at its centre cell in its class's plane;
    where several objects of one class share a centre cell, the largest weight
    wins (the heatmap there is one positive, the max of their Gaussians). Every
    other cell is 1. Shape-static (a scatter-max): nothing is read back.

    Args:
        shape: (B, C, H, W) of the heatmap.
        batch_idx, classes: [N] int64 image index and class of each object.
        centers: [N, 2] int64 centre cells (x, y).
        weights: [N] non-negative weights; valid: [N] bool (invalid objects,
            whatever their class and centre, leave no trace).

    Returns:
        [B, C, H, W] float32.
    """
    B, C, H, W = shape
    cx = centers[:, 0].clamp(0, W - 1)
    cy = centers[:, 1].clamp(0, H - 1)
    index = ((batch_idx * C + classes.clamp(0, C - 1)) * H + cy) * W + cx
    values = torch.where(valid, weights.float(), torch.full_like(weights, -1.0, dtype=torch.float32))
    peak = torch.full((B * C * H * W,), -1.0, device=weights.device)
    peak.scatter_reduce_(0, index, values, reduce="amax")
    return torch.where(peak >= 0, peak, torch.ones_like(peak)).view(B, C, H, W)
