"""What a training run leaves for a user (results.csv, plots, per-class report,
best and final weights) and what its console shows."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from detectron2.data import MetadataCatalog
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from centerx.engine.class_report import confusion_matrix, per_class_table
from centerx.engine.run_report import read_results

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(REPO, "configs", "shapes", "ttfnet_r18_demo.yaml")


# --------------------------------------------------------------------------- #
# per-class report on a hand-built case
# --------------------------------------------------------------------------- #
def hand_built_eval():
    """Two classes (ids 3 = A, 7 = B), two images:

    image 1: box A [0,0,10,10], box B [20,20,10,10]; detections: A on box A (0.9),
    A on box B (0.8: a confusion), B on nothing (0.7: a false positive), B on box A
    at 0.2 (below the operating score 0.3: ignored);
    image 2: box A [0,0,20,20]; detection A at [10,0,20,20] (IoU 1/3 < 0.5: a false
    positive, and the box is missed).
    """
    gt = COCO()
    gt.dataset = {
        "images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
        "categories": [{"id": 3, "name": "A"}, {"id": 7, "name": "B"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [20, 20, 10, 10], "area": 100, "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 3, "bbox": [0, 0, 20, 20], "area": 400, "iscrowd": 0},
        ],
    }
    gt.createIndex()
    dt = gt.loadRes(
        [
            {"image_id": 1, "category_id": 3, "bbox": [0, 0, 10, 10], "score": 0.9},
            {"image_id": 1, "category_id": 3, "bbox": [20, 20, 10, 10], "score": 0.8},
            {"image_id": 1, "category_id": 7, "bbox": [50, 50, 10, 10], "score": 0.7},
            {"image_id": 1, "category_id": 7, "bbox": [0, 0, 10, 10], "score": 0.2},
            {"image_id": 2, "category_id": 3, "bbox": [10, 0, 20, 20], "score": 0.6},
        ]
    )
    coco_eval = COCOeval(gt, dt, "bbox")
    coco_eval.evaluate()
    coco_eval.accumulate()
    return coco_eval


def test_confusion_matrix_and_per_class_precision_recall_of_a_hand_built_case():
    coco_eval = hand_built_eval()
    matrix = confusion_matrix(coco_eval, score_thresh=0.3)
    # rows: predicted A, B, background; columns: true A, B, background
    np.testing.assert_array_equal(matrix, [[1, 1, 1], [0, 0, 1], [1, 0, 0]])
    rows = per_class_table(coco_eval, matrix, ["A", "B"])
    a, b = rows
    assert (a["boxes"], a["detections"]) == (2, 3) and (b["boxes"], b["detections"]) == (1, 1)
    assert a["precision"] == pytest.approx(100 / 3) and a["recall"] == pytest.approx(50.0)
    assert b["precision"] == 0.0 and b["recall"] == 0.0
    # AP50 of A: the 0.9 detection finds box 1 of 2 first (precision 1 up to recall 0.5), nothing
    # finds box 2: the 101-point interpolated precision is 1 on 51 recall points, 0 on the other 50
    assert a["AP50"] == pytest.approx(100 * 51 / 101)
    # B's only box is hit by a B detection only at score 0.2 (IoU 1 with box A, not box B): AP 0
    assert b["AP50"] == pytest.approx(0.0)


def test_a_lower_operating_score_counts_the_low_detection():
    # at 0.1 the B detection (0.2) on box A is kept; box A is already taken by the 0.9 detection
    # (IoU 1 both: the higher score wins), so it is a false positive of B
    matrix = confusion_matrix(hand_built_eval(), score_thresh=0.1)
    np.testing.assert_array_equal(matrix, [[1, 1, 1], [0, 0, 2], [1, 0, 0]])


# --------------------------------------------------------------------------- #
# a training run's files
# --------------------------------------------------------------------------- #
def train_command(tiny_shapes, out, *extra):
    name, json_file = tiny_shapes
    image_root = MetadataCatalog.get(name).image_root
    return [
        sys.executable,
        os.path.join(REPO, "train_net.py"),
        "--config-file",
        DEMO,
        *extra,
        "DATASETS.COCO_JSON",
        f"[('{name}', '{json_file}', '{image_root}')]",
        "DATASETS.TRAIN",
        f"('{name}',)",
        "DATASETS.TEST",
        f"('{name}',)",
        "INPUT.TRAIN_SIZE",
        "64",
        "INPUT.MIN_SIZE_TEST",
        "64",
        "INPUT.MAX_SIZE_TEST",
        "64",
        "SOLVER.IMS_PER_BATCH",
        "2",
        "SOLVER.MAX_ITER",
        "40",
        "SOLVER.WARMUP_ITERS",
        "0",
        "TEST.EVAL_PERIOD",
        "20",
        "TEST.VIS_IMAGES",
        "1",
        "TEST.REPORT_SCORE_THRESH",
        "0.05",
        "SOLVER.CHECKPOINT_PERIOD",
        "1000",
        "OUTPUT_DIR",
        str(out),
        "SEED",
        "3",
    ]


@pytest.fixture(scope="module")
def trained_run(tiny_shapes, tmp_path_factory):
    """train_net.py as a user runs it: 40 iterations, evaluated at 20 and 40. (out, stdout)."""
    out = tmp_path_factory.mktemp("run") / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        train_command(tiny_shapes, out), cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return out, proc.stdout + proc.stderr


@pytest.mark.slow
def test_console_is_a_summary_progress_lines_and_results(trained_run):
    out, console = trained_run
    lines = console.splitlines()
    first_progress = next(i for i, line in enumerate(lines) if "iter 20/40 (50%)" in line)
    assert first_progress <= 40, "\n".join(lines[:first_progress])
    assert re.search(r"Training TTFNet on test_tiny_shapes: 40 iterations of batch 2 at 64 px", console)
    assert re.search(
        r"iter 40/40 \(100%\)  eta 0:00:00  loss [0-9.]+ \(heatmap [0-9.]+, box [0-9.]+\)  "
        r"lr [0-9.e-]+  [0-9.]+ img/s",
        console,
    )
    assert "Evaluation results for bbox" in console and "Per-class report:" in console
    for noise in (
        "Environment info",
        "Running with full config",
        "Contents of args.config_file",
        "torch.jit.script",
        "No CUDA runtime is found",
        "Command Line Args",
    ):
        assert noise not in console, noise
    with open(out / "log.txt") as f:
        log = f.read()
    assert "Environment info" in log and "Running with full config" in log


@pytest.mark.slow
def test_results_csv_holds_the_numbers_the_log_shows(trained_run):
    out, _ = trained_run
    rows = read_results(out / "results.csv")
    with open(out / "metrics.json") as f:
        metrics = [json.loads(line) for line in f]
    assert [r["iteration"] for r in rows] == [20, 40]
    evaluations = [m for m in metrics if "bbox/AP" in m]
    # metrics.json stamps the evaluation after iteration 20 with 19 (the step's index), the final one
    # (run after the loop) with 40; results.csv counts iterations completed for both
    assert [m["iteration"] for m in evaluations] == [19, 40]
    for row, record in zip(rows, evaluations):
        for key in ("bbox/AP", "bbox/AP50", "bbox/APs"):
            assert row[key] == pytest.approx(record[key], rel=1e-5, abs=1e-6)
    lrs = {m["iteration"] + 1: m["lr"] for m in metrics if "lr" in m}
    assert rows[0]["lr"] == pytest.approx(lrs[20], rel=1e-5)
    assert all(np.isfinite(r["total_loss"]) and r["images_per_s"] > 0 for r in rows)
    for name in ("losses.png", "lr.png", "ap.png"):
        assert os.path.getsize(out / "plots" / name) > 1000, name
    for name in ("per_class.csv", "pr_curves.png", "confusion_matrix.png"):
        assert os.path.getsize(out / "inference" / name) > 100, name


@pytest.mark.slow
def test_best_and_final_weights_are_weights_only(trained_run):
    out, _ = trained_run
    full = torch.load(out / "model_final.pth", weights_only=False)
    final = torch.load(out / "model_final_weights.pth", weights_only=True)
    best = torch.load(out / "model_best.pth", weights_only=True)
    assert "optimizer" in full["trainer"]["_trainer"]  # the resume file keeps the optimizer state
    assert set(final) == {"model", "iteration"} and set(best) == {"model", "iteration", "bbox/AP"}
    assert final["model"].keys() == full["model"].keys() and final["iteration"] == 40
    for key, value in full["model"].items():
        torch.testing.assert_close(final["model"][key], value, rtol=0, atol=0)
    rows = read_results(out / "results.csv")
    scores = [r["bbox/AP"] for r in rows]
    assert best["bbox/AP"] == pytest.approx(max(scores), rel=1e-5)
    assert best["iteration"] == rows[int(np.argmax(scores))]["iteration"]
    assert os.path.getsize(out / "model_final_weights.pth") < 0.6 * os.path.getsize(out / "model_final.pth")
    # what export, predict and eval load: strictly, every parameter from the file
    import centerx
    from centerx.deploy import build_deploy_model

    cfg = centerx.get_centerx_cfg()
    cfg.merge_from_file(str(out / "config.yaml"))
    cfg.MODEL.WEIGHTS = str(out / "model_best.pth")
    deployed = build_deploy_model(cfg)
    torch.testing.assert_close(
        deployed.model.state_dict()["heads.ltrb.layers.4.bias"],
        best["model"]["heads.ltrb.layers.4.bias"],
        rtol=0,
        atol=0,
    )


def test_epochs_set_the_iterations_from_the_datasets_size(tiny_shapes):
    import centerx

    import train_net

    name, _ = tiny_shapes  # 8 images
    cfg = centerx.get_centerx_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "own_data", "ttfnet_r18.yaml"))
    cfg.merge_from_list(
        [
            "DATASETS.TRAIN",
            f"('{name}', '{name}')",
            "SOLVER.IMS_PER_BATCH",
            "3",
            "SOLVER.EPOCHS",
            "2",
            "MODEL.TTFNET.NUM_CLASSES",
            "4",
        ]
    )
    cfg.freeze()
    centerx.check_config(cfg)
    assert train_net.iterations_from_epochs(cfg).SOLVER.MAX_ITER == 11  # ceil(2 x 16 / 3)
    cfg.defrost()
    cfg.SOLVER.EPOCHS = 0
    assert train_net.iterations_from_epochs(cfg) is cfg and cfg.SOLVER.MAX_ITER == 40000
    cfg.SOLVER.EPOCHS = -1
    with pytest.raises(ValueError, match="SOLVER.EPOCHS must be 0"):
        centerx.check_config(cfg)
