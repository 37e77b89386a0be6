"""CenterNet training targets, built as batched tensor code on the boxes' device."""

import torch

from .cells import clip_to_last_cell
from .gaussian import draw_gaussians, draw_peak_weights, gaussian_radius


def centernet_radii(cell_boxes: torch.Tensor, min_overlap: float = 0.7, radius_mode: str = "original") -> torch.Tensor:
    """Gaussian radius of each box: [..., 4] cells -> [...] int64 cells >= 0
    (CornerNet's radius of the box size rounded up to whole cells, then
    truncated, as the original CenterNet's ``gaussian_radius((ceil(h), ceil(w)))``)."""
    wh = (cell_boxes[..., 2:] - cell_boxes[..., :2]).ceil()
    return gaussian_radius(wh[..., 1], wh[..., 0], min_overlap, radius_mode).clamp(min=0).long()


def centernet_window(
    boxes: torch.Tensor,
    classes: torch.Tensor,
    stride: int,
    output_size: tuple[int, int],
    min_overlap: float = 0.7,
    radius_mode: str = "original",
) -> tuple[int, int]:
    """The smallest splat window for these objects: (r, r), r the largest radius
    of the real objects (classes >= 0). Reads values: call it on host tensors.

    Args:
        boxes: [B, M, 4] input pixels; classes: [B, M] (-1 = padding);
        output_size: (H, W) of the map in cells.
    """
    radii = centernet_radii(clip_to_last_cell(boxes, stride, output_size), min_overlap, radius_mode)
    r = int(torch.where(classes >= 0, radii, torch.zeros_like(radii)).max()) if radii.numel() else 0
    return r, r


def rank_in_image(key: torch.Tensor) -> torch.Tensor:
    """Slot of each object within its image when ordered by decreasing ``key``.

    Args:
        key: [B, M].

    Returns:
        [B, M] int64, 0 for the largest key of each image, 1 for the next, ...;
        ties keep the objects' order.
    """
    order = torch.argsort(key, dim=1, descending=True, stable=True)
    slot = torch.empty_like(order)
    slot.scatter_(1, order, torch.arange(key.shape[1], device=key.device).expand_as(order).contiguous())
    return slot


def centernet_targets(
    boxes: torch.Tensor,
    classes: torch.Tensor,
    num_classes: int,
    output_size: tuple[int, int],
    stride: int,
    min_overlap: float = 0.7,
    radius_mode: str = "original",
    max_objects: int = 128,
    window: tuple[int, int] | None = None,
    weights: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Build CenterNet's targets for a batch, as shape-static tensor code on the
    boxes' device (no value is read back to the host).

    Conventions, those of the original CenterNet's ``ctdet.py`` (the code behind
    its published AP): each box is taken in cells and clipped to the last cell
    (:func:`clip_to_last_cell`); its size ``wh``, its centre c and its radius
    come from the clipped box; the centre cell is floor(c) and the offset
    c - floor(c); the radius is CornerNet's for (ceil(h), ceil(w)), truncated
    (:func:`centernet_radii`, ``radius_mode`` "original" at ``min_overlap`` 0.7
    by default); the splat is the (2r + 1)^2-cell Gaussian of sigma (2r + 1) / 6,
    max-combined per class. Differences from that code: an image keeps its
    ``max_objects`` largest objects (the original keeps the first 128 in
    annotation order), and a splat is cut at the window (:func:`centernet_window`
    sizes it to the largest radius, so only an explicit smaller ``window`` cuts).

    Args:
        boxes: [B, M, 4] boxes (x1, y1, x2, y2) in input pixels (see
            :func:`~centerx.modeling.targets.batching.pad_objects`).
        classes: [B, M] class indices in [0, num_classes), -1 for padding.
        output_size: (H, W) of the output maps in cells; stride: input pixels per cell.
        min_overlap, radius_mode: the Gaussian radius
            (:func:`~centerx.modeling.targets.gaussian.gaussian_radius`).
        window: splat window (host ints, :func:`centernet_window`); None = the
            radius of a box as large as the map, enough for any box inside it.
        weights: optional [B, M] per-object loss weights (e.g. mixup's, see
            :func:`~centerx.modeling.targets.batching.batch_ground_truth`).

    Returns dict:
        ``heatmap`` [B, C, H, W]: max over the objects' Gaussians (centre value 1);
        ``index`` [B, K] int64: centre cell y * W + x (K = max_objects);
        ``wh`` [B, K, 2]: clipped box (w, h) in cells; ``offset`` [B, K, 2]: c - floor(c);
        ``mask`` [B, K] float: 1 for a real object, 0 for padding;
        ``num_skipped``: 0-dim int64 tensor, objects beyond ``max_objects`` plus
        boxes with no width or height left after clipping (inverted, empty or
        off the map) or a class out of range.
        Only when ``weights`` is given: ``object_weight`` [B, K] each kept
        object's weight (0 for padding), for the size and offset L1 terms, and
        ``pos_weight`` [B, C, H, W] the weights at the heatmap peaks, 1 elsewhere
        (:func:`~centerx.modeling.targets.gaussian.draw_peak_weights`), for the
        focal loss's positive terms. The weights scale each object's terms; the
        losses keep the number of objects as their divisor.
    """
    B, M = classes.shape
    H, W = output_size
    K = max_objects
    device = boxes.device
    box = clip_to_last_cell(boxes, stride, (H, W))
    cls = classes.long()
    wh = box[..., 2:] - box[..., :2]  # [B, M, 2]
    center = (box[..., :2] + box[..., 2:]) / 2
    cell = center.floor().long()  # inside the map: the box is clipped to it
    real = cls >= 0
    valid = real & (wh > 0).all(-1) & (cls < num_classes)
    # invalid objects rank last, so they never take the slot of a valid one
    slot = rank_in_image(torch.where(valid, wh[..., 0] * wh[..., 1], torch.full_like(wh[..., 0], -1.0)))
    keep = valid & (slot < K)
    num_skipped = (real & ~keep).sum()

    if window is None:
        window = (int(gaussian_radius(torch.tensor(float(H)), torch.tensor(float(W)), min_overlap, radius_mode)),) * 2
    radius = centernet_radii(box, min_overlap, radius_mode)
    bidx = torch.arange(B, device=device)[:, None].expand(B, M)
    heatmap = torch.zeros(B, num_classes, H, W, device=device)
    draw_gaussians(
        heatmap,
        bidx.reshape(-1),
        cls.reshape(-1),
        cell.reshape(-1, 2),
        radius.reshape(-1, 1).expand(-1, 2),
        window,
        keep.reshape(-1),
    )

    # objects that are not kept write to a spare slot K, dropped at the end
    slot = torch.where(keep, slot, torch.full_like(slot, K))
    index = torch.zeros(B, K + 1, dtype=torch.long, device=device)
    wh_t = torch.zeros(B, K + 1, 2, device=device)
    offset_t = torch.zeros(B, K + 1, 2, device=device)
    mask = torch.zeros(B, K + 1, device=device)
    index.scatter_(1, slot, cell[..., 1] * W + cell[..., 0])
    wh_t.scatter_(1, slot[..., None].expand(-1, -1, 2), wh)
    offset_t.scatter_(1, slot[..., None].expand(-1, -1, 2), center - cell.float())
    mask.scatter_(1, slot, keep.float())
    out = {
        "heatmap": heatmap,
        "index": index[:, :K],
        "wh": wh_t[:, :K],
        "offset": offset_t[:, :K],
        "mask": mask[:, :K],
        "num_skipped": num_skipped,
    }
    if weights is not None:
        w = weights.float()
        object_weight = torch.zeros(B, K + 1, device=device)
        object_weight.scatter_(1, slot, w * keep)
        out["object_weight"] = object_weight[:, :K]
        out["pos_weight"] = draw_peak_weights(
            heatmap.shape, bidx.reshape(-1), cls.reshape(-1), cell.reshape(-1, 2), w.reshape(-1), keep.reshape(-1)
        )
    return out
