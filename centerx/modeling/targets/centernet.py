"""CenterNet training targets, built as batched tensor code on the boxes' device."""
from typing import Dict, List, Tuple

import torch

from .gaussian import draw_gaussians, gaussian_radius


def concat_objects(boxes: List[torch.Tensor], classes: List[torch.Tensor]):
    """Per-image boxes [N_i, 4] and classes [N_i] -> (boxes [N, 4] float,
    classes [N] int64, image index [N] int64), on the boxes' device."""
    device = boxes[0].device if boxes else torch.device("cpu")
    counts = torch.as_tensor([len(b) for b in boxes], device=device)
    if sum(len(b) for b in boxes) == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return torch.zeros(0, 4, device=device), empty, empty
    bidx = torch.repeat_interleave(torch.arange(len(boxes), device=device), counts)
    return torch.cat(boxes).float(), torch.cat(classes).long(), bidx


def rank_in_image(bidx: torch.Tensor, area: torch.Tensor, num_images: int) -> torch.Tensor:
    """Slot of each object within its image when ordered by decreasing area.

    Args:
        bidx: [N] image index, area: [N].

    Returns:
        [N] int64, 0 for the largest object of each image, 1 for the next, ...
    """
    order = torch.argsort(area, descending=True, stable=True)
    order = order[torch.argsort(bidx[order], stable=True)]
    counts = torch.bincount(bidx, minlength=num_images)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.empty_like(bidx)
    slot[order] = torch.arange(len(bidx), device=bidx.device) - starts[bidx[order]]
    return slot


def centernet_targets(
    boxes: List[torch.Tensor],
    classes: List[torch.Tensor],
    num_classes: int,
    output_size: Tuple[int, int],
    stride: int,
    min_overlap: float = 0.7,
    radius_mode: str = "corrected",
    max_objects: int = 128,
) -> Dict[str, torch.Tensor]:
    """Build CenterNet's targets for a batch.

    Args:
        boxes: per image [N_i, 4] boxes (x1, y1, x2, y2) in input pixels.
        classes: per image [N_i] class indices in [0, num_classes).
        output_size: (H, W) of the output maps in cells; stride: input pixels per cell.

    Returns dict:
        ``heatmap`` [B, C, H, W]: max over the objects' Gaussians (centre value 1);
        ``index`` [B, K] int64: centre cell y * W + x (K = max_objects);
        ``wh`` [B, K, 2]: box (w, h) in cells; ``offset`` [B, K, 2]: c - floor(c);
        ``mask`` [B, K] float: 1 for a real object, 0 for padding;
        ``num_skipped``: host int, objects beyond ``max_objects`` plus boxes with
        non-positive size or a centre outside the map.
    """
    B = len(boxes)
    H, W = output_size
    device = boxes[0].device if B else torch.device("cpu")
    box, cls, bidx = concat_objects(boxes, classes)
    box = box / stride
    wh = box[:, 2:] - box[:, :2]
    center = (box[:, :2] + box[:, 2:]) / 2
    cell = center.floor().long()
    valid = (wh > 0).all(1) & (cell[:, 0] >= 0) & (cell[:, 0] < W) & (cell[:, 1] >= 0) & (cell[:, 1] < H)
    valid &= (cls >= 0) & (cls < num_classes)
    # invalid objects rank last, so they never take the slot of a valid one
    area = torch.where(valid, wh[:, 0] * wh[:, 1], torch.full_like(wh[:, 0], -1.0))
    slot = rank_in_image(bidx, area, B)
    keep = valid & (slot < max_objects)
    num_skipped = int(len(keep) - keep.sum())
    cls, bidx, slot, wh, center, cell = (t[keep] for t in (cls, bidx, slot, wh, center, cell))

    radius = gaussian_radius(wh[:, 1].ceil(), wh[:, 0].ceil(), min_overlap, radius_mode)
    radius = radius.clamp(min=0).long()
    heatmap = torch.zeros(B, num_classes, H, W, device=device)
    draw_gaussians(heatmap, bidx, cls, cell, radius[:, None].expand(-1, 2))

    index = torch.zeros(B, max_objects, dtype=torch.long, device=device)
    wh_t = torch.zeros(B, max_objects, 2, device=device)
    offset_t = torch.zeros(B, max_objects, 2, device=device)
    mask = torch.zeros(B, max_objects, device=device)
    index[bidx, slot] = cell[:, 1] * W + cell[:, 0]
    wh_t[bidx, slot] = wh
    offset_t[bidx, slot] = center - cell.float()
    mask[bidx, slot] = 1.0
    return {"heatmap": heatmap, "index": index, "wh": wh_t, "offset": offset_t, "mask": mask,
            "num_skipped": num_skipped}
