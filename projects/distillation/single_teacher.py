#!/usr/bin/env python
"""Experiment 1: one bigger teacher -> an R18 student on shapes, at equal student
iterations, over several seeds.

Trains, each from random initialisation with the ``--arch`` shapes demo
schedule (configs/shapes/<arch>_r18_demo.yaml, rescaled):

1. the teacher (ResNet-``--teacher-depth``, ``--teacher-iters`` iterations) with
   labels, once (first seed);
2. per seed, the R18 student with labels alone (baseline, ``--iters``);
3. per seed, the R18 student distilled from the teacher, with labels (``--iters``);
4. the same in the ``--students`` variants: "kd" (as configured), "balanced"
   (MODEL.LOSS_BALANCE on, each teacher term at the magnitude of the label term
   it mirrors: no hand-set distillation weight), "quality_focal"
   (MODEL.DISTILL.HEATMAP_LOSS "quality_focal") and "quality_focal_heatmap" (the
   same without the box terms towards the teacher);

then prints COCO AP on shapes_val (mean +- std over the seeds, and each seed's),
AP50 and the training time, and the gain of distillation (mean and standard
deviation of the per-seed differences; label-free distillation is experiment 2,
two_teachers.py):

    python projects/distillation/single_teacher.py --seeds 1 2 3 --teacher-iters 1000     # docs/results.md
    python projects/distillation/single_teacher.py --seeds 1 2 3 --teacher-iters 1000 --students quality_focal
    python projects/distillation/single_teacher.py --seeds 1 --teacher-iters 1000 --students quality_focal \
        --output-dir output/distillation_bf16 --student-opts SOLVER.AMP.FP32_MODULES "()"   # teacher copied in
    python projects/distillation/single_teacher.py --arch centernet --iters 3000 MODEL.DEVICE cuda

Runs already in ``--output-dir`` with the same config are read back, not
retrained; two_teachers.py reads the baseline students from the same folder.
Trailing ``KEY VALUE`` pairs override every model's config alike.
"""

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # projects/experiments.py
from experiments import (
    add_common_args,
    balanced_distill_overrides,
    demo_config,
    distill_overrides,
    experiment_cfg,
    format_table,
    mean_std,
    prepare_shapes,
    run_cached,
    seed_dir,
    write_table,
)

# distilled student variants: (row name, output folder, overrides on top of the distillation ones)
STUDENTS = {
    "kd": ("student R18, labels + distillation", "student_r18_kd", []),
    "balanced": (
        "student R18, labels + distillation, constant-magnitude weighting",
        "student_r18_kd_balanced",
        balanced_distill_overrides(1),
    ),
    "quality_focal": (
        "student R18, labels + distillation, quality focal heatmap term",
        "student_r18_kd_qfl",
        ["MODEL.DISTILL.HEATMAP_LOSS", "quality_focal"],
    ),
    "quality_focal_heatmap": (
        "student R18, labels + distillation of the heatmap only, quality focal term",
        "student_r18_kd_qfl_heatmap",
        # no box terms towards the teacher: the student's boxes learn from the labels alone
        ["MODEL.DISTILL.HEATMAP_LOSS", "quality_focal"]
        + ["MODEL.DISTILL.BOX_WEIGHT", 0.0, "MODEL.DISTILL.WH_WEIGHT", 0.0, "MODEL.DISTILL.OFFSET_WEIGHT", 0.0],
    ),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher-depth", type=int, default=34, help="ResNet depth of the teacher")
    p.add_argument("--teacher-iters", type=int, default=0, help="training iterations of the teacher (0: --iters)")
    p.add_argument("--output-dir", default="output/distillation")
    p.add_argument(
        "--students",
        nargs="+",
        choices=STUDENTS,
        default=list(STUDENTS),
        help="distilled student variants to train (each over --seeds)",
    )
    p.add_argument(
        "--student-opts",
        nargs="+",
        default=[],
        metavar="KEY VALUE",
        help="config overrides for the students only (with and without distillation), e.g. "
        'SOLVER.AMP.FP32_MODULES "()"; the teacher keeps the trailing overrides alone',
    )
    add_common_args(p)
    return p.parse_args(argv)


def student_runs(args, train, test, name, extra=()):
    """One config per seed of an R18 student with labels (``extra``: its distillation;
    then ``--student-opts``)."""
    return [
        experiment_cfg(
            demo_config(args),
            args,
            seed_dir(os.path.join(args.output_dir, name), seed),
            train,
            test,
            list(extra) + list(args.student_opts),
            seed=seed,
        )
        for seed in args.seeds
    ]


def main(argv=None):
    args = parse_args(argv)
    train, test = ([name] for name in prepare_shapes(args))
    teacher_dir = os.path.join(args.output_dir, f"teacher_r{args.teacher_depth}")
    teacher_cfg = experiment_cfg(
        demo_config(args),
        args,
        teacher_dir,
        train,
        test,
        ["MODEL.RESNETS.DEPTH", args.teacher_depth],
        iters=args.teacher_iters or args.iters,
    )
    teacher = (os.path.join(teacher_dir, "config.yaml"), os.path.join(teacher_dir, "model_final.pth"), ())
    runs = {
        f"teacher R{args.teacher_depth}, labels": [teacher_cfg],
        "student R18, labels": student_runs(args, train, test, "student_r18"),
    }
    for key in args.students:
        name, folder, extra = STUDENTS[key]
        runs[name] = student_runs(
            args, train, test, folder, distill_overrides(args, [teacher], use_labels=True) + extra
        )
    rows, aps = [], {}
    for name, cfgs in runs.items():
        results = [run_cached(cfg, args.rerun) for cfg in cfgs]
        aps[name] = [r.get("AP") for r in results]
        rows.append(
            [
                name,
                results[0]["iterations"],
                mean_std(aps[name]),
                " / ".join("-" if a is None else f"{a:.1f}" for a in aps[name]),
                mean_std([r.get("AP50") for r in results]),
                round(statistics.mean(r["train_s"] for r in results)),
            ]
        )
    table = format_table(["model", "iterations", "AP", "AP per seed", "AP50", "train time (s)"], rows)
    for name in list(runs)[2:]:
        gains = [
            kd - plain
            for kd, plain in zip(aps[name], aps["student R18, labels"])
            if kd is not None and plain is not None
        ]
        if gains:
            table += (
                f"\n\nGain of '{name}' over the student without distillation (per-seed differences): {mean_std(gains)}"
            )
    write_table(args.output_dir, table)


if __name__ == "__main__":
    main()
