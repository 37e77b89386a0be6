"""Boxes in output-stride cells, as the reference target code takes them."""

import torch


def clip_to_last_cell(boxes: torch.Tensor, stride: int, output_size: tuple[int, int]) -> torch.Tensor:
    """Boxes in input pixels -> boxes in cells, clipped to the centres of the map's
    first and last cells: x to [0, W - 1], y to [0, H - 1].

    Both reference implementations do this: the original CenterNet's ``ctdet.py``
    clips every output-stride box to ``output_w - 1`` / ``output_h - 1`` before
    taking its size, centre and Gaussian radius, and TTFNet's ``ttf_head.py``
    before taking its Gaussians' radii. A box touching the right or bottom image
    border is then up to one cell narrower than in the image (and CenterNet's
    centre up to half a cell further in). A box entirely off the map ends up
    with zero width or height.

    Args:
        boxes: [..., 4] (x1, y1, x2, y2) input pixels; output_size: (H, W) in cells.

    Returns:
        [..., 4] float32 boxes in cells.
    """
    H, W = output_size
    box = boxes.float() / stride
    xs = box[..., 0::2].clamp(0, W - 1)
    ys = box[..., 1::2].clamp(0, H - 1)
    return torch.stack((xs[..., 0], ys[..., 0], xs[..., 1], ys[..., 1]), dim=-1)
