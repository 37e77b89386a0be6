"""Peak masking and top-K decoding, shared by evaluation and export.

Written with ops every ONNX runtime and TensorRT supports (max-pool, equal,
cast, multiply, top-K, gather; ``Equal`` on floats is ONNX opset 11, TensorRT
7): no data-dependent Python branches. Caffe has no comparison layer: its
exporter builds the same peak mask from arithmetic
(``centerx/deploy/caffe_export.py``).
"""

import torch
import torch.nn.functional as F

from .losses.regression import gather_at


def peak_mask(heat: torch.Tensor, kernel: int = 3) -> torch.Tensor:
    """Keep the cells equal to their ``kernel`` x ``kernel`` neighbourhood maximum
    (CenterNet's max-pool "NMS"; equal neighbours, plateaus, are all kept).

    The comparison is exact in every precision, FP16 included. In a graph it is
    MaxPool, Equal, Cast and Mul: ONNX Runtime's CPU ``Where`` took about four
    times as long as Cast + Mul on an 80 x 64 x 64 map, and the arithmetic form
    that avoids ``==`` (the Caffe exporter's) takes ten element-wise passes
    instead of three.

    Args:
        heat: [B, C, H, W] scores in [0, 1].

    Returns:
        [B, C, H, W]: ``heat`` at local maxima, 0 elsewhere.
    """
    hmax = F.max_pool2d(heat, kernel, stride=1, padding=(kernel - 1) // 2)
    return heat * (heat == hmax).to(heat.dtype)


def topk_peaks(heat: torch.Tensor, k: int):
    """Top-``k`` cells over all classes and positions.

    The flattened scores are padded with ``k`` zeros, so that there are always
    ``k`` candidates: on a map with fewer than ``k`` cells (a small input) the
    rows beyond its cells have score 0, class 0 and cell (0, 0). ``k`` stays a
    constant of an exported graph (as TensorRT needs) and the graph stays valid
    for any input size.

    Args:
        heat: [B, C, H, W] peak-masked scores (>= 0).

    Returns:
        scores [B, k], classes [B, k] int64, index [B, k] int64 (y * W + x),
        xs [B, k] and ys [B, k] float cell coordinates.
    """
    B, C, H, W = heat.shape
    # The indices are never negative, so truncating division is floor division; it
    # exports as one integer Div, where "floor" adds nine nodes (Mod, Xor, Where, ...)
    # to each of the two divisions.
    scores, flat = torch.topk(F.pad(heat.reshape(B, -1), (0, k)), k)
    flat = torch.where(flat < C * H * W, flat, torch.zeros_like(flat))
    classes = torch.div(flat, H * W, rounding_mode="trunc")
    index = flat - classes * (H * W)
    ys = torch.div(index, W, rounding_mode="trunc")
    xs = index - ys * W
    return scores, classes, index, xs.to(heat.dtype), ys.to(heat.dtype)


def decode_centernet(
    heatmap_logits: torch.Tensor, wh: torch.Tensor, offset: torch.Tensor, k: int, stride: int
) -> dict[str, torch.Tensor]:
    """CenterNet outputs -> top-``k`` boxes in input pixels.

    Args:
        heatmap_logits: [B, C, H, W]; wh: [B, 2, H, W] size in cells;
        offset: [B, 2, H, W] sub-cell centre offset; stride: input pixels per cell.

    Returns dict:
        ``boxes`` [B, k, 4] (x1, y1, x2, y2) in input pixels of the padded batch,
        ``scores`` [B, k], ``classes`` [B, k] int64.
    """
    heat = peak_mask(torch.sigmoid(heatmap_logits))
    scores, classes, index, xs, ys = topk_peaks(heat, k)
    size = gather_at(wh, index)
    off = gather_at(offset, index)
    cx = xs + off[..., 0]
    cy = ys + off[..., 1]
    half_w, half_h = size[..., 0] / 2, size[..., 1] / 2
    boxes = torch.stack((cx - half_w, cy - half_h, cx + half_w, cy + half_h), dim=-1) * stride
    return {"boxes": boxes, "scores": scores, "classes": classes}


def ltrb_to_boxes(ltrb: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor, stride: int) -> torch.Tensor:
    """Boxes from the distances of their sides to cell points (TTFNet).

    The cell (x, y) sits at the point (x * stride, y * stride) input pixels,
    with no +0.5; TTFNet's targets use the same point (docs/design.md).

    Args:
        ltrb: [..., 4] distances (left, top, right, bottom) in input pixels;
        xs, ys: [...] cell coordinates; stride: input pixels per cell.

    Returns:
        [..., 4] boxes (x1, y1, x2, y2) in input pixels.
    """
    px, py = xs.to(ltrb.dtype) * stride, ys.to(ltrb.dtype) * stride
    return torch.stack((px - ltrb[..., 0], py - ltrb[..., 1], px + ltrb[..., 2], py + ltrb[..., 3]), dim=-1)


def ttfnet_scores(
    heatmap_logits: torch.Tensor, iou_logits: torch.Tensor | None = None, iou_alpha: float = 0.5
) -> torch.Tensor:
    """TTFNet's detection scores: the heatmap's sigmoid, or with IoU-aware
    scoring (PP-YOLO) sigmoid(heatmap)^(1 - iou_alpha) * sigmoid(iou)^iou_alpha.

    Args:
        heatmap_logits: [B, C, H, W]; iou_logits: [B, 1, H, W] predicted IoU
            logits of each cell's box (shared by the C classes), or None;
        iou_alpha: weight of the IoU in [0, 1].

    Returns:
        [B, C, H, W] scores in [0, 1].
    """
    heat = torch.sigmoid(heatmap_logits)
    if iou_logits is None:
        return heat
    return heat.pow(1.0 - iou_alpha) * torch.sigmoid(iou_logits).pow(iou_alpha)


def decode_ttfnet(
    heatmap_logits: torch.Tensor,
    ltrb: torch.Tensor,
    k: int,
    stride: int,
    iou_logits: torch.Tensor | None = None,
    iou_alpha: float = 0.5,
) -> dict[str, torch.Tensor]:
    """TTFNet outputs -> top-``k`` boxes in input pixels.

    Args:
        heatmap_logits: [B, C, H, W]; ltrb: [B, 4, H, W] distances from each cell
        point to the box sides in input pixels; stride: input pixels per cell;
        iou_logits, iou_alpha: IoU-aware scoring (:func:`ttfnet_scores`), fused
        into the scores before peak masking and top-K; None = plain heatmap scores.

    Returns dict:
        ``boxes`` [B, k, 4] (x1, y1, x2, y2) in input pixels of the padded batch,
        ``scores`` [B, k], ``classes`` [B, k] int64.
    """
    heat = peak_mask(ttfnet_scores(heatmap_logits, iou_logits, iou_alpha))
    scores, classes, index, xs, ys = topk_peaks(heat, k)
    boxes = ltrb_to_boxes(gather_at(ltrb, index), xs, ys, stride)
    return {"boxes": boxes, "scores": scores, "classes": classes}
