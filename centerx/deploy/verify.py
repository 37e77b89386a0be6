"""Does an exported graph compute what the PyTorch model computes? The agreement
checks the export script runs after writing a file, and that the tests use.

Detections are matched, not compared row by row: two cells whose scores are
nearly equal (common on a random or barely trained heatmap) may swap order or
swap which one is the 3x3 peak under another runtime's float rounding. Such a
swap is a *tie*, reported but not a failure on a random model's flat heatmap
(and allowed for up to ``MAX_TIE_FRACTION`` of a trained model's detections); a
detection with no counterpart of the same class, the same box and a close score,
and no near-equal rival, is a *miss*, and any miss fails the check.
"""

import logging
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

# ONNX Runtime / OpenCV against PyTorch, FP32: the same arithmetic up to rounding
FP32_TOLERANCE = {"box_px": 0.5, "score": 1e-3, "tie": 1e-3}
# INT8 against FP32: boxes IoU > 0.9 (the same peak cell), scores within 0.03
INT8_TOLERANCE = {"iou": 0.9, "score": 0.03, "tie": 2e-3}
# a trained model may have this share of its detections tied (neighbouring cells
# within rounding of each other) before the export counts as disagreeing
MAX_TIE_FRACTION = 0.1


@dataclass
class Agreement:
    """How the detections of a graph match a reference's."""

    total: int  # reference detections checked
    matched: int
    ties: int
    misses: int
    max_score_diff: float  # over the matched ones

    @property
    def ok(self) -> bool:
        """No miss (ties allowed: what a flat, untrained heatmap gives)."""
        return self.misses == 0

    def ok_for_trained_model(self, max_tie_fraction: float = MAX_TIE_FRACTION) -> bool:
        """No miss and at most ``max_tie_fraction`` of the detections tied: a
        trained model's peaks are distinct, so many ties mean a real difference
        (e.g. boxes moved in the exported graph with the scores unchanged)."""
        return self.misses == 0 and self.ties <= max_tie_fraction * self.total

    def __str__(self) -> str:
        text = f"{self.matched} of {self.total} detections match"
        if self.ties:
            text += f", {self.ties} near-tied (two cells within rounding of each other swapped: not an error)"
        if self.misses:
            text += f", {self.misses} MISSING"
        return text + f"; matched scores differ by at most {self.max_score_diff:.1e}"


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of boxes a [n, 4] and b [m, 4] (x1, y1, x2, y2)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=-1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=-1)
    return inter / np.maximum(area_a[:, None] + area_b[None] - inter, 1e-12)


def compare_detections(
    outputs: dict,
    reference: dict,
    score_floor: float = 0.0,
    box_px: float = None,
    iou: float = None,
    score: float = 1e-3,
    tie: float = 1e-3,
) -> Agreement:
    """Match the detections of ``reference`` scoring above ``score_floor`` against
    ``outputs`` (both dicts of ``boxes`` [K, 4], ``scores`` [K], ``classes`` [K] of
    one image; or with a leading batch axis, all images pooled).

    A reference detection is matched by one of ``outputs`` of its class whose box
    is within ``box_px`` pixels on every side (or has IoU above ``iou``) and whose
    score is within ``score``; failing that it is a tie when ``outputs`` has one of
    its class whose score is within ``tie`` of it (a near-equal cell took the
    peak), else a miss. ``outputs``' candidates go down to ``score_floor - score``,
    so the floor itself makes no miss.
    """
    if (box_px is None) == (iou is None):
        raise ValueError("compare_detections needs exactly one of box_px and iou.")
    ref = {
        k: np.asarray(v).reshape(-1, 4) if k == "boxes" else np.asarray(v).reshape(-1)
        for k, v in reference.items()
        if k in ("boxes", "scores", "classes")
    }
    out = {
        k: np.asarray(v).reshape(-1, 4) if k == "boxes" else np.asarray(v).reshape(-1)
        for k, v in outputs.items()
        if k in ("boxes", "scores", "classes")
    }
    keep = ref["scores"] > score_floor
    cand = out["scores"] > score_floor - score
    rb, rs, rc = ref["boxes"][keep], ref["scores"][keep], ref["classes"][keep]
    ob, os_, oc = out["boxes"][cand], out["scores"][cand], out["classes"][cand]
    same_class = rc[:, None] == oc[None]
    gap = np.abs(rs[:, None] - os_[None])
    if box_px is not None:
        same_box = np.abs(rb[:, None, :] - ob[None, :, :]).max(axis=-1) < box_px
    else:
        same_box = box_iou(rb, ob) > iou
    match = same_class & same_box & (gap <= score)
    matched = match.any(axis=1)
    tied = ~matched & (same_class & (gap <= tie)).any(axis=1)
    diffs = np.where(match, gap, np.inf).min(axis=1, initial=np.inf)[matched]
    return Agreement(
        total=int(keep.sum()),
        matched=int(matched.sum()),
        ties=int(tied.sum()),
        misses=int((~matched & ~tied).sum()),
        max_score_diff=float(diffs.max(initial=0.0)),
    )


def compare_raw(outputs: dict, reference: dict, tolerance: float = 1e-3) -> Agreement:
    """Raw outputs (peak-masked ``heatmap`` [N, C, h, w] plus regression maps
    [N, R, h, w]): every peak of the reference scoring above ``tolerance`` is
    matched when the graph has a peak in the same cell with a score within
    ``tolerance`` and the regression maps there agree (within ``tolerance``
    absolute plus ``tolerance`` relative); a tie when a neighbouring cell of the
    graph within ``tolerance`` of it is the peak instead; else a miss."""
    ref, out = np.asarray(reference["heatmap"]), np.asarray(outputs["heatmap"])
    peaks = ref > tolerance
    same = peaks & (out > 0) & (np.abs(out - ref) <= tolerance)
    # a neighbour of the graph (in the 3x3 window) that is a peak with a score within tolerance
    padded = np.pad(out, [(0, 0)] * (out.ndim - 2) + [(1, 1), (1, 1)])
    h, w = out.shape[-2:]
    near = np.zeros_like(peaks)
    for dy in range(3):
        for dx in range(3):
            if dy == dx == 1:  # the cell itself is not its own rival
                continue
            neighbour = padded[..., dy : dy + h, dx : dx + w]
            near |= (neighbour > 0) & (np.abs(neighbour - ref) <= tolerance)
    for name, ref_map in reference.items():
        if name == "heatmap":
            continue
        ref_map, out_map = np.asarray(ref_map), np.asarray(outputs[name])
        close = (np.abs(out_map - ref_map) <= tolerance * (1 + np.abs(ref_map))).all(axis=1, keepdims=True)
        same &= close
    tied = peaks & ~same & near
    diff = np.abs(out - ref)[same]
    return Agreement(
        total=int(peaks.sum()),
        matched=int(same.sum()),
        ties=int(tied.sum()),
        misses=int((peaks & ~same & ~near).sum()),
        max_score_diff=float(diff.max(initial=0.0)),
    )


class DisagreementError(RuntimeError):
    """The exported file does not compute what the PyTorch model computes."""


def check_agreement(runtime: str, outputs: dict, reference: dict, trained: bool) -> Agreement:
    """How an exported file's outputs on one image agree with PyTorch's, at
    :data:`FP32_TOLERANCE`: decoded outputs (``boxes``...) by
    :func:`compare_detections`, raw ones by :func:`compare_raw`. Logged; raises
    :class:`DisagreementError` when a detection or peak is missing, or, for a
    ``trained`` model, when more than MAX_TIE_FRACTION of them are near-ties (a
    random model's flat heatmap may tie everywhere)."""
    if "boxes" in reference:
        agreement = compare_detections(outputs, reference, **FP32_TOLERANCE)
    else:
        agreement = compare_raw(outputs, reference, FP32_TOLERANCE["score"])
    logger.info(f"{runtime} against PyTorch on a random image: {agreement}.")
    if not (agreement.ok_for_trained_model() if trained else agreement.ok):
        raise DisagreementError(
            f"{runtime} disagrees with PyTorch beyond the tolerance ({agreement}); the file "
            "was written but does not compute the model. Please report it with the config."
        )
    return agreement


def check_int8_agreement(int8: dict, fp32: dict, trained: bool, score_floor: float, where: str) -> Agreement:
    """How an INT8 graph's detections scoring above ``score_floor`` match FP32's
    on one image, at :data:`INT8_TOLERANCE`. Logged; for a ``trained`` model,
    raises :class:`DisagreementError` when one is missing or too many tie. For a
    model with random weights (exported with ``--allow-random-weights``, e.g. to
    time it) a miss is a warning: an untrained network's activations spread
    wide and quantise poorly, so its INT8 graph may disagree with no fault in
    the export (a random DLA-34 at 512 px: 47 of its 100 detections above 0.3 missing)."""
    agreement = compare_detections(int8, fp32, score_floor=score_floor, **INT8_TOLERANCE)
    logger.info(f"ONNX Runtime INT8 against FP32 on {where}, detections above {score_floor}: {agreement}.")
    if not trained:
        if not agreement.ok:
            logger.warning(
                f"The INT8 graph of this random-weights model disagrees with FP32 ({agreement}): expected of an "
                "untrained network, whose activations quantise poorly. The file is fit for timing, not for "
                "detecting; export a trained model (MODEL.WEIGHTS) to have its INT8 accuracy checked."
            )
        return agreement
    if not agreement.ok_for_trained_model():
        raise DisagreementError(
            f"The INT8 graph disagrees with FP32 beyond the tolerance ({agreement}); try more "
            "calibration images (--calibration-images) from the data the model will see."
        )
    return agreement
