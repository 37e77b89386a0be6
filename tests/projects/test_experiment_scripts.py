"""projects/distillation's experiment scripts end to end at a tiny size: every
setting trains once per seed into its own folder, with the config it names, and
the table reports it."""

import json
import os

import pytest
import yaml

from project_scripts import load_script

TINY = ["--iters", "2", "--train-images", "4", "--test-images", "2", "--seeds", "1"]
TINY_OPTS = [
    "SOLVER.IMS_PER_BATCH",
    "2",
    "INPUT.TRAIN_SIZE",
    "64",
    "INPUT.MIN_SIZE_TEST",
    "64",
    "INPUT.MAX_SIZE_TEST",
    "64",
    "DATALOADER.NUM_WORKERS",
    "0",
    "TEST.VIS_IMAGES",
    "0",
]

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def saved_config(directory):
    with open(os.path.join(directory, "config.yaml")) as f:
        return yaml.safe_load(f)


def test_lr_robustness_trains_each_factor_with_and_without_weighting(tmp_path):
    out = tmp_path / "lr"
    load_script("distillation", "lr_robustness").main(
        TINY
        + ["--lr-factors", "1", "4", "--output-dir", str(out), "SOLVER.OPTIMIZER", "SGD", "SOLVER.BASE_LR", "0.001"]
        + TINY_OPTS
    )
    for factor, lr in (("1", 0.001), ("4", 0.004)):
        for weighting, on in (("plain", False), ("balanced", True)):
            directory = out / f"lr{factor}x_{weighting}" / "seed1"
            assert json.loads((directory / "result.json").read_text())["iterations"] == 2
            cfg = saved_config(directory)
            assert cfg["SOLVER"]["BASE_LR"] == pytest.approx(lr)
            assert cfg["SOLVER"]["OPTIMIZER"] == "SGD" and cfg["SOLVER"]["LR_SCHEDULER_NAME"] == "WarmupCosineLR"
            assert cfg["MODEL"]["LOSS_BALANCE"]["ENABLED"] is on
    rows = (out / "table.md").read_text().splitlines()
    assert [row.split(" | ")[:2] for row in rows[2:6]] == [
        ["| 0.001 (1x)", "off"],
        ["| 0.001 (1x)", "on"],
        ["| 0.004 (4x)", "off"],
        ["| 0.004 (4x)", "on"],
    ]
    load_script("distillation", "lr_robustness").main(
        TINY
        + [
            "--lr-factors",
            "2",
            "--weightings",
            "plain",
            "--output-dir",
            str(out),
            "SOLVER.OPTIMIZER",
            "SGD",
            "SOLVER.BASE_LR",
            "0.001",
        ]
        + TINY_OPTS
    )
    assert (out / "lr2x_plain" / "seed1" / "result.json").exists() and not (out / "lr2x_balanced").exists()
    rows = (out / "table.md").read_text().splitlines()
    assert [row.split(" | ")[:2] for row in rows[2:] if row.startswith("| ")] == [["| 0.002 (2x)", "off"]]


def test_two_teachers_trains_the_chosen_student_variants(tmp_path):
    out = tmp_path / "two"
    # 16 images: each half then holds objects of its teacher's two classes
    load_script("distillation", "two_teachers").main(
        TINY + ["--train-images", "16", "--students", "quality_focal", "--output-dir", str(out)] + TINY_OPTS
    )
    for tag, _classes in (("a", ["circle", "rectangle"]), ("b", ["triangle", "cross"])):
        cfg = saved_config(out / f"teacher_{tag}")
        assert cfg["MODEL"]["TTFNET"]["NUM_CLASSES"] == 2 and cfg["MODEL"]["META_ARCHITECTURE"] == "TTFNet"
    student = saved_config(out / "student_label_free_qfl" / "seed1")
    assert student["MODEL"]["DISTILL"]["HEATMAP_LOSS"] == "quality_focal"
    assert student["MODEL"]["DISTILL"]["USE_LABELS"] is False
    assert [t[2] for t in student["MODEL"]["DISTILL"]["TEACHERS"]] == [["circle", "rectangle"], ["triangle", "cross"]]
    assert not (out / "student_label_free").exists() and not (out / "student_label_free_balanced").exists()
    table = (out / "table.md").read_text()
    assert "| student, label-free from A + B, quality focal heatmap term |" in table
    assert "'student, label-free from A + B, quality focal heatmap term' minus teacher B" in table


def test_single_teacher_trains_the_chosen_distilled_variants(tmp_path):
    out = tmp_path / "one"
    load_script("distillation", "single_teacher").main(
        TINY + ["--teacher-depth", "18", "--students", "quality_focal", "--output-dir", str(out)] + TINY_OPTS
    )
    assert saved_config(out / "teacher_r18")["MODEL"]["RESNETS"]["DEPTH"] == 18
    assert saved_config(out / "student_r18" / "seed1")["MODEL"]["META_ARCHITECTURE"] == "TTFNet"
    student = saved_config(out / "student_r18_kd_qfl" / "seed1")
    assert student["MODEL"]["META_ARCHITECTURE"] == "Distiller"
    assert student["MODEL"]["DISTILL"]["HEATMAP_LOSS"] == "quality_focal" and student["MODEL"]["DISTILL"]["USE_LABELS"]
    assert not (out / "student_r18_kd").exists() and not (out / "student_r18_kd_balanced").exists()
    table = (out / "table.md").read_text()
    assert "Gain of 'student R18, labels + distillation, quality focal heatmap term' over the student" in table


def test_single_teacher_student_opts_reach_the_students_and_not_the_teacher(tmp_path):
    out = tmp_path / "one"
    load_script("distillation", "single_teacher").main(
        TINY
        + ["--teacher-depth", "18", "--students", "quality_focal_heatmap"]
        + ["--student-opts", "SOLVER.AMP.FP32_MODULES", "()", "--output-dir", str(out)]  # a flag ends the list
        + TINY_OPTS
    )
    assert saved_config(out / "teacher_r18")["SOLVER"]["AMP"]["FP32_MODULES"] == ["heads.ltrb"]
    for student in ("student_r18", "student_r18_kd_qfl_heatmap"):
        assert saved_config(out / student / "seed1")["SOLVER"]["AMP"]["FP32_MODULES"] == [], student
    distill = saved_config(out / "student_r18_kd_qfl_heatmap" / "seed1")["MODEL"]["DISTILL"]
    assert (distill["HEATMAP_LOSS"], distill["BOX_WEIGHT"], distill["HEATMAP_WEIGHT"]) == ("quality_focal", 0.0, 1.0)
