#!/usr/bin/env python
"""Experiment 2: two class-split teachers -> one label-free student, per-class AP.

The shapes training set is cut in two halves of its images; half A is labelled
only for circle and rectangle, half B only for triangle and cross (objects of
the other classes stay in the images, unlabelled, as in two datasets labelled
for different purposes). Trains, each with the demo schedule rescaled to
``--iters``:

1. teacher A (2 classes) on half A, teacher B (2 classes) on half B;
2. one 4-class student from both teachers, label-free, reading the training
   images as an image folder (configs/shapes/distill_two_teachers_label_free_demo.yaml;
   teachers' classes given here by name);
3. for reference, the same student trained with all the labels of shapes_train;

then prints AP per class on shapes_val (each teacher on its own classes):

    python projects/distillation/two_teachers.py                  # demo schedule, 400 iterations each
    python projects/distillation/two_teachers.py --iters 3000 MODEL.DEVICE cuda

Trailing ``KEY VALUE`` pairs override every model's config alike.
"""
import argparse
import os

from common import CONFIGS, DEMO, add_common_args, class_split_dataset, experiment_cfg, format_table, \
    prepare_shapes, train_and_evaluate, write_table
from centerx.data.datasets import SHAPES_CLASSES
from centerx.data.datasets.shapes import datasets_root

DISTILL = os.path.join(CONFIGS, "distill_two_teachers_label_free_demo.yaml")
SPLIT = {"a": ("circle", "rectangle"), "b": ("triangle", "cross")}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output-dir", default="output/distill_two_teachers")
    add_common_args(p)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    train, test = prepare_shapes(args)
    out = args.output_dir

    teachers, results = [], {}
    for part, (tag, classes) in enumerate(SPLIT.items()):
        directory = os.path.join(out, f"teacher_{tag}")
        cfg = experiment_cfg(DEMO, args, directory, [class_split_dataset(train, classes, (part, 2))],
                             [class_split_dataset(test, classes)], ["MODEL.CENTERNET.NUM_CLASSES", len(classes)])
        results[f"teacher {tag.upper()} ({', '.join(classes)})"], _ = train_and_evaluate(cfg)
        teachers.append((os.path.join(directory, "config.yaml"), os.path.join(directory, "model_final.pth"), classes))

    # the folder holds every training image; with --train-images the student reads the
    # subset's images from the labelled dataset instead (label-free: its labels are not used)
    student_train = [train] if args.train_images > 0 else ["shapes_train_images"]
    images = [("shapes_train_images", os.path.join(datasets_root(), "shapes", "train"))]
    cfg = experiment_cfg(DISTILL, args, os.path.join(out, "student"), student_train, [test],
                         ["MODEL.DISTILL.TEACHERS", teachers, "DATASETS.IMAGE_FOLDERS", images])
    results["student, label-free from A + B"], _ = train_and_evaluate(cfg)
    cfg = experiment_cfg(DEMO, args, os.path.join(out, "student_all_labels"), [train], [test])
    results["student, all labels (reference)"], _ = train_and_evaluate(cfg)

    rows = [[name] + [metrics.get(f"AP-{c}") for c in SHAPES_CLASSES] + [metrics.get("AP")]
            for name, metrics in results.items()]
    write_table(out, format_table(["model"] + [f"AP {c}" for c in SHAPES_CLASSES] + ["AP (its classes)"], rows))


if __name__ == "__main__":
    main()
