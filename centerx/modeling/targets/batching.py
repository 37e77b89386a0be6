"""Ground truth of a batch as padded tensors, the input of every target builder."""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from detectron2.structures import Instances
from torch.nn.utils.rnn import pad_sequence


def pad_objects(boxes: Sequence[torch.Tensor], classes: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
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


def pad_object_weights(weights: Sequence[torch.Tensor | None], num_objects: Sequence[int]) -> torch.Tensor:
    """Per-image object weights -> one padded tensor, laid out as :func:`pad_objects`.

    Args:
        weights: B entries, each a tensor [N_i] or None (N_i objects of weight 1).
        num_objects: B counts N_i.

    Returns:
        [B, M] float32 (1 in padding), M = max(1, max_i N_i), on the device of
        the given tensors (CPU when all are None).
    """
    if len(weights) == 0:
        raise ValueError("pad_object_weights needs at least one image.")
    device = next((w.device for w in weights if w is not None), torch.device("cpu"))
    rows = [torch.ones(n, device=device) if w is None else w.float().reshape(-1) for w, n in zip(weights, num_objects)]
    out = pad_sequence(rows, batch_first=True, padding_value=1.0)
    return F.pad(out, (0, 1), value=1.0) if out.shape[1] == 0 else out


def batch_ground_truth(
    gt: list[Instances], device: torch.device, window_fn=None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, tuple[int, int] | None]:
    """Pad the ground truth where it is (the data loader's host memory), size the
    splat window there if asked, then move it to ``device`` in one copy per tensor.

    Args:
        gt: per image ``Instances`` with ``gt_boxes`` (input pixels) and
            ``gt_classes``, optionally ``gt_weights`` (per-object loss weights,
            float [N]; mixup sets them; missing = 1 for each object of that image).
        window_fn: optional ``(boxes [B, M, 4], classes [B, M]) -> (rx, ry)``,
            the target builder's window for these boxes; evaluated only when the
            boxes are in host memory (elsewhere it would block on the device).

    Returns:
        boxes [B, M, 4], classes [B, M] (-1 = padding) on ``device``; weights
        [B, M] float32 on ``device`` (1 for objects without ``gt_weights`` and in
        padding), or None when no image of the batch has ``gt_weights`` (a host
        fact: the losses then skip the weighting altogether); and the window
        (None when not computed: the builder then uses its map-size bound).
    """
    boxes, classes = pad_objects([g.gt_boxes.tensor for g in gt], [g.gt_classes for g in gt])
    weights = None
    if any(g.has("gt_weights") for g in gt):
        weights = pad_object_weights([g.gt_weights if g.has("gt_weights") else None for g in gt], [len(g) for g in gt])
    window = window_fn(boxes, classes) if (window_fn is not None and boxes.device.type == "cpu") else None
    non_blocking = boxes.device.type == "cpu" and torch.device(device).type == "cuda"
    if weights is not None:
        weights = weights.to(device, non_blocking=non_blocking)
    return (boxes.to(device, non_blocking=non_blocking), classes.to(device, non_blocking=non_blocking), weights, window)
