#!/usr/bin/env python
"""Experiment 1: one CenterNet-R50 teacher -> a CenterNet-R18 student on shapes.

Trains, each from random initialisation with the demo schedule
(configs/shapes/centernet_r18_demo.yaml, rescaled to ``--iters``):

1. the R50 teacher with labels;
2. the R18 student with labels alone (baseline);
3. the R18 student distilled from the teacher, with labels
   (configs/shapes/distill_centernet_r50_to_r18_demo.yaml);
4. the R18 student distilled label-free (distillation losses only);

then prints COCO AP / AP50 on shapes_val and the training time of each:

    python projects/distillation/single_teacher.py                    # demo schedule, 400 iterations each
    python projects/distillation/single_teacher.py --iters 3000 MODEL.DEVICE cuda

Trailing ``KEY VALUE`` pairs override every model's config alike.
"""
import argparse
import os

from common import CONFIGS, DEMO, add_common_args, experiment_cfg, format_table, prepare_shapes, \
    train_and_evaluate, write_table

DISTILL = os.path.join(CONFIGS, "distill_centernet_r50_to_r18_demo.yaml")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher-depth", type=int, default=50, help="ResNet depth of the teacher")
    p.add_argument("--output-dir", default="output/distill_single_teacher")
    add_common_args(p)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    train, test = ([name] for name in prepare_shapes(args))
    out = args.output_dir

    teacher_dir = os.path.join(out, f"teacher_r{args.teacher_depth}")
    teacher_cfg = experiment_cfg(DEMO, args, teacher_dir, train, test, ["MODEL.RESNETS.DEPTH", args.teacher_depth])
    teacher = (os.path.join(teacher_dir, "config.yaml"), os.path.join(teacher_dir, "model_final.pth"), ())
    runs = [
        (f"teacher R{args.teacher_depth}, labels", teacher_cfg),
        ("student R18, labels", experiment_cfg(DEMO, args, os.path.join(out, "student_r18"), train, test)),
        ("student R18, labels + distillation",
         experiment_cfg(DISTILL, args, os.path.join(out, "student_r18_kd"), train, test,
                        ["MODEL.DISTILL.TEACHERS", [teacher]])),
        ("student R18, distillation only (label-free)",
         experiment_cfg(DISTILL, args, os.path.join(out, "student_r18_kd_label_free"), train, test,
                        ["MODEL.DISTILL.TEACHERS", [teacher], "MODEL.DISTILL.USE_LABELS", False])),
    ]
    rows = []
    for name, cfg in runs:
        metrics, seconds = train_and_evaluate(cfg)
        rows.append([name, metrics.get("AP"), metrics.get("AP50"), f"{seconds:.0f}"])
    write_table(out, format_table(["model", "AP", "AP50", "train time (s)"], rows))


if __name__ == "__main__":
    main()
