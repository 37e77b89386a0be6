"""Ground truth of a batch as padded tensors, the input of every target builder."""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.structures import Instances
from torch.nn.utils.rnn import pad_sequence


def pad_objects(boxes: Sequence[torch.Tensor], classes: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-image boxes and classes -> one padded pair, on the inputs' device.

    Args:
        boxes: B tensors [N_i, 4] (x1, y1, x2, y2); classes: B tensors [N_i].

    Returns:
        boxes [B, M, 4] float32 (zeros in padding) and classes [B, M] int64
        (-1 in padding), M = max(1, max_i N_i). Built from the tensors' sizes
        only: no value is read back to the host.
    """
    if len(boxes) == 0:
        raise ValueError("pad_objects needs at least one image.")
    out_boxes = pad_sequence([b.float().reshape(-1, 4) for b in boxes], batch_first=True)
    out_classes = pad_sequence([c.long().reshape(-1) for c in classes], batch_first=True, padding_value=-1)
    if out_boxes.shape[1] == 0:
        out_boxes = F.pad(out_boxes, (0, 0, 0, 1))
        out_classes = F.pad(out_classes, (0, 1), value=-1)
    return out_boxes, out_classes


def batch_ground_truth(gt: List[Instances], device: torch.device,
                       window_fn=None) -> Tuple[torch.Tensor, torch.Tensor, Optional[Tuple[int, int]]]:
    """Pad the ground truth where it is (the data loader's host memory), size the
    splat window there if asked, then move it to ``device`` in one copy per tensor.

    Args:
        gt: per image ``Instances`` with ``gt_boxes`` (input pixels) and ``gt_classes``.
        window_fn: optional ``(boxes [B, M, 4], classes [B, M]) -> (rx, ry)``,
            the target builder's window for these boxes; evaluated only when the
            boxes are in host memory (elsewhere it would block on the device).

    Returns:
        boxes [B, M, 4], classes [B, M] (-1 = padding) on ``device``, and the
        window (None when not computed: the builder then uses its map-size bound).
    """
    boxes, classes = pad_objects([g.gt_boxes.tensor for g in gt], [g.gt_classes for g in gt])
    window = window_fn(boxes, classes) if (window_fn is not None and boxes.device.type == "cpu") else None
    non_blocking = boxes.device.type == "cpu" and torch.device(device).type == "cuda"
    return boxes.to(device, non_blocking=non_blocking), classes.to(device, non_blocking=non_blocking), window
