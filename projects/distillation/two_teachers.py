#!/usr/bin/env python
"""Experiment 2: two class-split teachers -> one label-free student, per-class AP.

The shapes training set is cut in two halves of its images; half A is labelled
only for circle and rectangle, half B only for triangle and cross (objects of
the other classes stay in the images, unlabelled, as in two datasets labelled
for different purposes). Trains, each with the ``--arch`` shapes demo schedule
rescaled:

1. teacher A (2 classes) on half A, teacher B (2 classes) on half B
   (``--teacher-iters`` iterations each);
2. one 4-class student from both teachers, label-free, reading the training
   images as an image folder (``--iters``; for CenterNet this is
   configs/shapes/distill_two_teachers_label_free_demo.yaml; teachers' classes
   given here by name);

then prints AP per class on shapes_val (each teacher on its own classes). The
same student trained with all labels is single_teacher.py's "student R18,
labels" row (same config and iterations):

    python projects/distillation/two_teachers.py                  # CenterNet, 400 iterations each
    python projects/distillation/two_teachers.py --arch ttfnet --iters 200 --teacher-iters 200 \
        SOLVER.IMS_PER_BATCH 8                                    # the README's table
    python projects/distillation/two_teachers.py --iters 3000 MODEL.DEVICE cuda

Trailing ``KEY VALUE`` pairs override every model's config alike.
"""
import argparse
import os

from common import add_common_args, class_split_dataset, demo_config, distill_overrides, experiment_cfg, \
    format_table, num_classes_key, prepare_shapes, train_and_evaluate, write_table
from centerx.data.datasets import SHAPES_CLASSES
from centerx.data.datasets.shapes import datasets_root

SPLIT = {"a": ("circle", "rectangle"), "b": ("triangle", "cross")}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output-dir", default="output/distill_two_teachers")
    p.add_argument("--teacher-iters", type=int, default=0, help="training iterations of each teacher (0: --iters)")
    add_common_args(p)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    train, test = prepare_shapes(args)
    out = args.output_dir

    teachers, results = [], {}
    for part, (tag, classes) in enumerate(SPLIT.items()):
        directory = os.path.join(out, f"teacher_{tag}")
        cfg = experiment_cfg(demo_config(args), args, directory, [class_split_dataset(train, classes, (part, 2))],
                             [class_split_dataset(test, classes)], [num_classes_key(args), len(classes)],
                             iters=args.teacher_iters or args.iters)
        results[f"teacher {tag.upper()} ({', '.join(classes)})"], _ = train_and_evaluate(cfg)
        teachers.append((os.path.join(directory, "config.yaml"), os.path.join(directory, "model_final.pth"), classes))

    # the folder holds every training image; with --train-images the student reads the
    # subset's images from the labelled dataset instead (label-free: its labels are not used)
    student_train = [train] if args.train_images > 0 else ["shapes_train_images"]
    images = [("shapes_train_images", os.path.join(datasets_root(), "shapes", "train"))]
    cfg = experiment_cfg(demo_config(args), args, os.path.join(out, "student"), student_train, [test],
                         distill_overrides(args, teachers, use_labels=False)
                         + ["DATASETS.IMAGE_FOLDERS", images, "DATALOADER.FILTER_EMPTY_ANNOTATIONS", False])
    results["student, label-free from A + B"], _ = train_and_evaluate(cfg)

    rows = [[name] + [metrics.get(f"AP-{c}") for c in SHAPES_CLASSES] + [metrics.get("AP")]
            for name, metrics in results.items()]
    write_table(out, format_table(["model"] + [f"AP {c}" for c in SHAPES_CLASSES] + ["AP (its classes)"], rows))


if __name__ == "__main__":
    main()
