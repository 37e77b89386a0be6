#!/usr/bin/env python
"""Experiment 1: one bigger teacher -> an R18 student on shapes, at equal student iterations.

Trains, each from random initialisation with the ``--arch`` shapes demo
schedule (configs/shapes/<arch>_r18_demo.yaml, rescaled):

1. the teacher (ResNet-``--teacher-depth``, ``--teacher-iters`` iterations) with labels;
2. the R18 student with labels alone (baseline, ``--iters``);
3. the R18 student distilled from the teacher, with labels (``--iters``;
   for CenterNet this is configs/shapes/distill_centernet_r50_to_r18_demo.yaml);

then prints COCO AP / AP50 on shapes_val and the training time of each
(label-free distillation is experiment 2, two_teachers.py):

    python projects/distillation/single_teacher.py                    # CenterNet, 400 iterations each
    python projects/distillation/single_teacher.py --arch ttfnet --teacher-depth 34 --iters 200 \
        --teacher-iters 300 SOLVER.IMS_PER_BATCH 8                    # the README's table
    python projects/distillation/single_teacher.py --iters 3000 MODEL.DEVICE cuda

Trailing ``KEY VALUE`` pairs override every model's config alike.
"""
import argparse
import os

from common import add_common_args, demo_config, distill_overrides, experiment_cfg, format_table, prepare_shapes, \
    train_and_evaluate, write_table


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher-depth", type=int, default=50, help="ResNet depth of the teacher")
    p.add_argument("--teacher-iters", type=int, default=0, help="training iterations of the teacher (0: --iters)")
    p.add_argument("--output-dir", default="output/distill_single_teacher")
    add_common_args(p)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    train, test = ([name] for name in prepare_shapes(args))
    out = args.output_dir

    demo = demo_config(args)
    teacher_dir = os.path.join(out, f"teacher_r{args.teacher_depth}")
    teacher_cfg = experiment_cfg(demo, args, teacher_dir, train, test, ["MODEL.RESNETS.DEPTH", args.teacher_depth],
                                 iters=args.teacher_iters or args.iters)
    teacher = (os.path.join(teacher_dir, "config.yaml"), os.path.join(teacher_dir, "model_final.pth"), ())
    runs = [
        (f"teacher R{args.teacher_depth}, labels", teacher_cfg),
        ("student R18, labels", experiment_cfg(demo, args, os.path.join(out, "student_r18"), train, test)),
        ("student R18, labels + distillation",
         experiment_cfg(demo, args, os.path.join(out, "student_r18_kd"), train, test,
                        distill_overrides(args, [teacher], use_labels=True))),
    ]
    rows = []
    for name, cfg in runs:
        metrics, seconds = train_and_evaluate(cfg)
        rows.append([name, metrics["iterations"], metrics.get("AP"), metrics.get("AP50"), f"{seconds:.0f}"])
    write_table(out, format_table(["model", "iterations", "AP", "AP50", "train time (s)"], rows))


if __name__ == "__main__":
    main()
