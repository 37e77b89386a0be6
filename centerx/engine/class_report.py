"""Per-class views of a COCO evaluation: precision-recall curves, a confusion
matrix, and precision / recall / AP per class at an operating score.

Everything is computed from pycocotools' ``COCOeval`` after ``accumulate()``:
its ground truth (``cocoGt``), detections (``cocoDt``) and evaluated images.
"""

import csv
import os
from collections.abc import Sequence

import numpy as np

CONFUSION_IOU = 0.5


def _xyxy(boxes: np.ndarray) -> np.ndarray:
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of (N, 4) and (M, 4) boxes in COCO ``[x, y, w, h]`` pixels: (N, M)."""
    a, b = _xyxy(a.reshape(-1, 4)), _xyxy(b.reshape(-1, 4))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = (a[:, 2:] - a[:, :2]).prod(axis=1)
    area_b = (b[:, 2:] - b[:, :2]).prod(axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def greedy_match(iou: np.ndarray, threshold: float) -> list[tuple]:
    """(gt, det) index pairs matched greedily by decreasing IoU (equal IoUs: the
    lower detection index first), each index used once, IoU at least ``threshold``."""
    gt_idx, det_idx = np.nonzero(iou >= threshold)
    order = np.lexsort((det_idx, -iou[gt_idx, det_idx]))
    used_gt, used_det, pairs = set(), set(), []
    for g, d in zip(gt_idx[order], det_idx[order]):
        if g not in used_gt and d not in used_det:
            used_gt.add(g)
            used_det.add(d)
            pairs.append((int(g), int(d)))
    return pairs


def confusion_matrix(coco_eval, score_thresh: float, iou: float = CONFUSION_IOU) -> np.ndarray:
    """(C + 1, C + 1) counts, rows = predicted class, columns = true class, index
    C = background: detections scoring at least ``score_thresh`` are matched to
    ground-truth boxes of any class (IoU >= ``iou``, greedily by IoU, the higher
    score first among equal IoUs); a matched
    pair counts at [predicted, true], an unmatched detection at [predicted, C]
    (a false positive), an unmatched box at [C, true] (a miss). Crowd boxes are
    left out. Classes are in ``cocoGt.getCatIds()`` order."""
    gt_api, dt_api = coco_eval.cocoGt, coco_eval.cocoDt
    cat_ids = sorted(gt_api.getCatIds())
    index = {c: i for i, c in enumerate(cat_ids)}
    n = len(cat_ids)
    matrix = np.zeros((n + 1, n + 1), dtype=np.int64)
    for image_id in coco_eval.params.imgIds:
        gts = [a for a in gt_api.loadAnns(gt_api.getAnnIds(imgIds=[image_id])) if not a.get("iscrowd", 0)]
        dts = sorted(
            (a for a in dt_api.loadAnns(dt_api.getAnnIds(imgIds=[image_id])) if a["score"] >= score_thresh),
            key=lambda a: -a["score"],
        )
        g_cls = np.array([index[a["category_id"]] for a in gts], dtype=np.int64)
        d_cls = np.array([index[a["category_id"]] for a in dts], dtype=np.int64)
        pairs = (
            greedy_match(
                box_iou(
                    np.array([a["bbox"] for a in gts], dtype=np.float64),
                    np.array([a["bbox"] for a in dts], dtype=np.float64),
                ),
                iou,
            )
            if gts and dts
            else []
        )
        matched_g = np.array([g for g, _ in pairs], dtype=np.int64)
        matched_d = np.array([d for _, d in pairs], dtype=np.int64)
        np.add.at(matrix, (d_cls[matched_d], g_cls[matched_g]), 1)
        np.add.at(matrix, (np.delete(d_cls, matched_d), n), 1)
        np.add.at(matrix, (n, np.delete(g_cls, matched_g)), 1)
    return matrix


def per_class_table(coco_eval, matrix: np.ndarray, class_names: Sequence[str]) -> list[dict[str, float]]:
    """One row per class: AP (IoU .50:.95) and AP50 from ``coco_eval``; true
    boxes, detections, precision and recall (in %) at the confusion matrix's
    operating score (a detection of the right class on a box counts as found)."""
    precision = coco_eval.eval["precision"]  # (T IoUs, R recalls, K classes, A areas, M max-dets)
    rows = []
    for k, name in enumerate(class_names):
        p_all, p_50 = precision[:, :, k, 0, -1], precision[0, :, k, 0, -1]
        true_positives = int(matrix[k, k])
        detections, boxes = int(matrix[k].sum()), int(matrix[:, k].sum())
        rows.append(
            {
                "class": name,
                "AP": float(np.mean(p_all[p_all > -1]) * 100) if (p_all > -1).any() else float("nan"),
                "AP50": float(np.mean(p_50[p_50 > -1]) * 100) if (p_50 > -1).any() else float("nan"),
                "boxes": boxes,
                "detections": detections,
                "precision": 100.0 * true_positives / detections if detections else float("nan"),
                "recall": 100.0 * true_positives / boxes if boxes else float("nan"),
            }
        )
    return rows


def write_class_report(coco_eval, class_names: Sequence[str], out_dir: str, score_thresh: float) -> list[str]:
    """Writes ``per_class.csv``, ``pr_curves.png`` (precision against recall per
    class at IoU 0.5, all areas, 100 detections: pycocotools' interpolated curve)
    and ``confusion_matrix.png`` (with :func:`confusion_matrix` at ``score_thresh``)
    into ``out_dir``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    matrix = confusion_matrix(coco_eval, score_thresh)
    rows = per_class_table(coco_eval, matrix, class_names)
    table = os.path.join(out_dir, "per_class.csv")
    with open(table, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) + ["score_thresh"], lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    **{k: (f"{v:.2f}" if isinstance(v, float) else v) for k, v in row.items()},
                    "score_thresh": score_thresh,
                }
            )

    recall = coco_eval.params.recThrs
    fig, ax = plt.subplots(figsize=(6.4, 5.0), dpi=100)
    for k, name in enumerate(class_names):
        curve = coco_eval.eval["precision"][0, :, k, 0, -1]
        if (curve > -1).any():
            ax.plot(recall, np.clip(curve, 0, None), label=f"{name} ({rows[k]['AP50']:.1f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title("Precision-recall at IoU 0.5 (AP50 per class)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    curves = os.path.join(out_dir, "pr_curves.png")
    fig.savefig(curves)
    plt.close(fig)

    labels = list(class_names) + ["background"]
    side = max(4.0, 0.45 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(side, side), dpi=100)
    ax.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        if count:
            ax.text(
                j,
                i,
                str(count),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if count > matrix.max() / 2 else "black",
            )
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel("true class")
    ax.set_ylabel("predicted class")
    ax.set_title(f"Confusion matrix (score >= {score_thresh}, IoU >= {CONFUSION_IOU})")
    fig.tight_layout()
    confusion = os.path.join(out_dir, "confusion_matrix.png")
    fig.savefig(confusion)
    plt.close(fig)
    return [table, curves, confusion]
