"""TTFNet training targets (Liu et al., AAAI 2020), built as batched tensor code on
the boxes' device.

Conventions: boxes are (x1, y1, x2, y2) in input pixels; the map cell (x, y)
sits at the point (x * stride, y * stride) input pixels, with no +0.5 (the same
point :func:`centerx.modeling.decode.ltrb_to_boxes` decodes from).
"""

import torch

from .cells import clip_to_last_cell
from .gaussian import draw_gaussians, draw_peak_weights, gaussian_patches


def ttfnet_targets(
    boxes: torch.Tensor,
    classes: torch.Tensor,
    num_classes: int,
    output_size: tuple[int, int],
    stride: int,
    alpha: float = 0.54,
    beta: float = 0.54,
    window: tuple[int, int] | None = None,
    weights: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Build TTFNet's heatmap and box-regression targets for a batch.

    Conventions, those of the authors' ``ttf_head.py`` (the code behind the
    paper's figures). For an object with box b in input pixels, clipped box
    size (w, h) in cells (:func:`~centerx.modeling.targets.cells.clip_to_last_cell`)
    and centre cell floor(centre of b / stride):

    - heatmap: an elliptical Gaussian of radii (int(alpha * w / 2), int(alpha * h / 2))
      cells, i.e. sigma = (2 r + 1) / 6 per axis (see :func:`gaussian_patches`),
      max-combined over the objects of a class. This is the authors' discrete
      form of the paper's sigma_x = alpha * w / 6, sigma_y = alpha * h / 6: the
      two differ by less than 1/6 cell and agree exactly when alpha * w / 2 is
      an integer plus 0.5.
    - regression samples: every cell where the object's beta-Gaussian (same
      form, ``beta`` instead of ``alpha``) is non-zero, its centre cell always
      among them, so every object, however small, has at least one sample.
      Where samples of several objects meet, the object of smallest area owns
      the cell (as drawing largest-area first and letting later boxes
      overwrite; equal areas: the later object of the batch wins). Box target =
      the owner's box in input pixels (unclipped).
    - sample weights: log(a_m) * G_m(cell) / sum of G_m over all of object m's
      samples, G_m its beta-Gaussian and a_m = (x2 - x1 + 1)(y2 - y1 + 1) its
      area in input pixels counted inclusively (the authors' ``bbox_areas``), so
      that an object that keeps every sample contributes log(a_m) in total and
      one whose samples are partly owned by smaller objects contributes less
      (the authors normalise before smaller boxes overwrite).
    - per-object loss weights (optional, e.g. mixup's): object m's sample
      weights are multiplied by its weight u_m, and its heatmap peak gets u_m as
      the weight of its positive focal term. ``weight_sum`` (the box loss's
      divisor) stays the sum of the sample weights before that scaling, so an
      object of weight u counts u times as much, as in CenterNet's losses.

    Objects with a non-positive width or height, a centre cell outside the map or
    a class outside [0, num_classes) get no targets.

    Shape-static tensor code on the boxes' device: no value is read back to the host.

    Args:
        boxes: [B, M, 4] boxes (x1, y1, x2, y2) in input pixels (see
            :func:`~centerx.modeling.targets.batching.pad_objects`).
        classes: [B, M] class indices, -1 for padding.
        output_size: (H, W) of the output maps in cells; stride: input pixels per cell.
        alpha, beta: Gaussian extents (fractions of the box) of the heatmap and
            of the regression samples.
        window: splat window (host ints, :func:`ttfnet_window`); None = the
            radii of a box as large as the map, enough for any box inside it.
        weights: optional [B, M] per-object loss weights (see
            :func:`~centerx.modeling.targets.batching.batch_ground_truth`).

    Returns dict:
        ``heatmap`` [B, C, H, W] in [0, 1], 1 at each object's centre cell;
        ``box`` [B, 4, H, W] (x1, y1, x2, y2) input pixels at sample cells, 0 elsewhere;
        ``weight`` [B, H, W] sample weights (times the owner's loss weight
        when ``weights`` is given), 0 outside the samples;
        ``weight_sum`` 0-dim: sum of the sample weights without loss weights;
        only when ``weights`` is given: ``pos_weight`` [B, C, H, W], the
        weights at the heatmap peaks, 1 elsewhere
        (:func:`~centerx.modeling.targets.gaussian.draw_peak_weights`).
    """
    B, M = classes.shape
    H, W = output_size
    device = boxes.device
    box = boxes.float().reshape(-1, 4)  # [N, 4], N = B * M
    cls = classes.long().reshape(-1)
    bidx = torch.arange(B, device=device).repeat_interleave(M)
    cells = clip_to_last_cell(box, stride, (H, W))
    wh = cells[:, 2:] - cells[:, :2]  # radii come from the clipped box
    cell = ((box[:, :2] + box[:, 2:]) / (2 * stride)).floor().long()  # the centre from the unclipped one
    valid = (cls >= 0) & (cls < num_classes) & (box[:, 2:] > box[:, :2]).all(1)
    valid &= (cell[:, 0] >= 0) & (cell[:, 0] < W) & (cell[:, 1] >= 0) & (cell[:, 1] < H)
    if window is None:
        window = (int(max(alpha, beta) * W / 2), int(max(alpha, beta) * H / 2))

    heatmap = torch.zeros(B, num_classes, H, W, device=device)
    draw_gaussians(heatmap, bidx, cls, cell, (alpha * wh / 2).long(), window, valid)

    gauss, xs, ys = gaussian_patches(cell, (beta * wh / 2).long(), (H, W), window)  # [N, Y, X], [N, X], [N, Y]
    candidate = (gauss > 0) & valid[:, None, None]
    flat = bidx[:, None, None] * (H * W) + ys[:, :, None] * W + xs[:, None, :]  # [N, Y, X]

    area = (box[:, 2] - box[:, 0] + 1) * (box[:, 3] - box[:, 1] + 1)
    order = torch.argsort(area, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=device)  # drawing order: larger first
    rank_map = torch.where(candidate, rank[:, None, None], -1)
    owner = torch.full((B * H * W,), -1, dtype=torch.long, device=device)
    owner.scatter_reduce_(0, flat.reshape(-1), rank_map.reshape(-1), reduce="amax")
    owned = candidate & (owner[flat] == rank_map)

    # normalised over all of the object's samples, before smaller objects take
    # some of them; every owned cell has exactly one owner, so summing the
    # owners' contributions (zero elsewhere) writes each cell once
    total = (gauss * candidate).sum((1, 2))
    g = gauss * owned
    # invalid objects have no sample: scale 0, not log(area) / 0 (0 * inf would be NaN)
    scale = torch.where(total > 0, area.clamp(min=1.0).log() / total.clamp(min=torch.finfo(g.dtype).tiny), 0.0)
    weight = torch.zeros(B * H * W, device=device)
    weight.index_add_(0, flat.reshape(-1), (g * scale[:, None, None]).reshape(-1))
    box_target = torch.zeros(B * H * W, 4, device=device)
    box_target.index_add_(0, flat.reshape(-1), (owned[..., None] * box[:, None, None, :]).reshape(-1, 4))
    out = {
        "heatmap": heatmap,
        "box": box_target.view(B, H, W, 4).permute(0, 3, 1, 2),
        "weight": weight.view(B, H, W),
        "weight_sum": weight.sum(),
    }
    if weights is not None:
        w = weights.float().reshape(-1)
        owner_weight = torch.zeros(B * H * W, device=device)
        owner_weight.index_add_(0, flat.reshape(-1), (owned * w[:, None, None]).reshape(-1))
        out["weight"] = (weight * owner_weight).view(B, H, W)
        out["pos_weight"] = draw_peak_weights(heatmap.shape, bidx, cls, cell, w, valid)
    return out


def ttfnet_window(
    boxes: torch.Tensor,
    classes: torch.Tensor,
    stride: int,
    output_size: tuple[int, int],
    alpha: float = 0.54,
    beta: float = 0.54,
) -> tuple[int, int]:
    """The smallest splat window (wx, wy) for these objects' heatmap and sample
    Gaussians. Reads values: call it on host tensors.

    Args:
        boxes: [B, M, 4] input pixels; classes: [B, M] (-1 = padding);
        output_size: (H, W) of the map in cells.
    """
    cells = clip_to_last_cell(boxes, stride, output_size)
    wh = (cells[..., 2:] - cells[..., :2]).clamp(min=0) * (classes >= 0)[..., None]
    r = (max(alpha, beta) * wh / 2).long().reshape(-1, 2)
    return (int(r[:, 0].max()), int(r[:, 1].max())) if len(r) else (0, 0)
