#!/usr/bin/env python
"""Experiment 2: two class-split teachers -> one label-free student, per-class AP,
over several seeds.

The shapes training set is cut in two halves of its images; half A is labelled
only for circle and rectangle, half B only for triangle and cross (objects of
the other classes stay in the images, unlabelled, as in two datasets labelled
for different purposes). Trains, each with the ``--arch`` shapes demo schedule
rescaled:

1. teacher A (2 classes) on half A, teacher B (2 classes) on half B
   (``--teacher-iters`` iterations each), once (first seed);
2. per seed, one 4-class student from both teachers, label-free, reading the
   training images as an image folder (``--iters``; teachers' classes given by
   name);
   in the ``--students`` variants: "plain" (as configured), "balanced"
   (MODEL.LOSS_BALANCE on, each teacher term at the magnitude of the label term
   it mirrors) and "quality_focal" (MODEL.DISTILL.HEATMAP_LOSS "quality_focal",
   the heatmap term per object the teacher sees instead of the MSE over all cells);
3. per seed, the same student trained with all labels, for reference (the
   baseline of single_teacher.py, read back from the same ``--output-dir`` when
   it is there);

then prints AP per class on shapes_val (each teacher on its own classes), as
mean +- std over the seeds, and how far the label-free student is from each
teacher on that teacher's classes:

    python projects/distillation/two_teachers.py --seeds 1 2 3          # docs/results.md
    python projects/distillation/two_teachers.py --seeds 1 2 3 --students plain quality_focal
    python projects/distillation/two_teachers.py --output-dir output/distillation_long --iters 1000 \
        --teacher-iters 400 --seeds 1 2 3 --students quality_focal    # teacher_a/b copied from output/distillation
    python projects/distillation/two_teachers.py --iters 3000 MODEL.DEVICE cuda

Trailing ``KEY VALUE`` pairs override every model's config alike.
"""

import argparse
import os
import statistics
import sys

from centerx.data.datasets import SHAPES_CLASSES
from centerx.data.datasets.shapes import datasets_root

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # projects/experiments.py
from experiments import (
    add_common_args,
    balanced_distill_overrides,
    class_split_dataset,
    demo_config,
    distill_overrides,
    experiment_cfg,
    format_table,
    mean_std,
    num_classes_key,
    prepare_shapes,
    run_cached,
    seed_dir,
    write_table,
)

SPLIT = {"a": ("circle", "rectangle"), "b": ("triangle", "cross")}
# label-free student variants: (row name, output folder, extra overrides given the number of teachers)
STUDENTS = {
    "plain": ("student, label-free from A + B", "student_label_free", lambda n: []),
    "balanced": (
        "student, label-free from A + B, constant-magnitude weighting",
        "student_label_free_balanced",
        balanced_distill_overrides,
    ),
    "quality_focal": (
        "student, label-free from A + B, quality focal heatmap term",
        "student_label_free_qfl",
        lambda n: ["MODEL.DISTILL.HEATMAP_LOSS", "quality_focal"],
    ),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output-dir", default="output/distillation")
    p.add_argument("--teacher-iters", type=int, default=0, help="training iterations of each teacher (0: --iters)")
    p.add_argument(
        "--students",
        nargs="+",
        choices=STUDENTS,
        default=list(STUDENTS),
        help="label-free student variants to train (each over --seeds)",
    )
    add_common_args(p)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    train, test = prepare_shapes(args)
    out = args.output_dir

    teachers, results = [], {}
    for part, (tag, classes) in enumerate(SPLIT.items()):
        directory = os.path.join(out, f"teacher_{tag}")
        cfg = experiment_cfg(
            demo_config(args),
            args,
            directory,
            [class_split_dataset(train, classes, (part, 2))],
            [class_split_dataset(test, classes)],
            [num_classes_key(args), len(classes)],
            iters=args.teacher_iters or args.iters,
        )
        results[f"teacher {tag.upper()} ({', '.join(classes)})"] = [run_cached(cfg, args.rerun)]
        teachers.append((os.path.join(directory, "config.yaml"), os.path.join(directory, "model_final.pth"), classes))

    # the folder holds every training image; with --train-images the student reads the
    # subset's images from the labelled dataset instead (label-free: its labels are not used)
    student_train = [train] if args.train_images > 0 else ["shapes_train_images"]
    images = [("shapes_train_images", os.path.join(datasets_root(), "shapes", "train"))]
    label_free = distill_overrides(args, teachers, use_labels=False) + [
        "DATASETS.IMAGE_FOLDERS",
        images,
        "DATALOADER.FILTER_EMPTY_ANNOTATIONS",
        False,
    ]
    students = [STUDENTS[key] for key in args.students]
    for name, folder, extra in students:
        results[name] = [
            run_cached(
                experiment_cfg(
                    demo_config(args),
                    args,
                    seed_dir(os.path.join(out, folder), seed),
                    student_train,
                    [test],
                    label_free + extra(len(teachers)),
                    seed=seed,
                ),
                args.rerun,
            )
            for seed in args.seeds
        ]
    results["same student with all labels (reference)"] = [
        run_cached(
            experiment_cfg(
                demo_config(args), args, seed_dir(os.path.join(out, "student_r18"), seed), [train], [test], seed=seed
            ),
            args.rerun,
        )
        for seed in args.seeds
    ]

    rows = [
        [name]
        + [mean_std([r.get(f"AP-{c}") for r in runs]) for c in SHAPES_CLASSES]
        + [mean_std([r.get("AP") for r in runs]), round(statistics.mean(r["train_s"] for r in runs))]
        for name, runs in results.items()
    ]
    table = format_table(["model"] + [f"AP {c}" for c in SHAPES_CLASSES] + ["AP (its classes)", "train time (s)"], rows)
    for name, _, _ in students:
        for (tag, classes), teacher_runs in zip(SPLIT.items(), list(results.values())[:2]):
            own = [statistics.mean(r[f"AP-{c}"] for c in classes) for r in results[name] if "AP" in r]
            gap = [o - statistics.mean(teacher_runs[0][f"AP-{c}"] for c in classes) for o in own]
            table += (
                f"\n\n'{name}' minus teacher {tag.upper()} on {' and '.join(classes)} "
                f"(mean AP of the two classes): {mean_std(gap)}"
            )
    write_table(out, table)


if __name__ == "__main__":
    main()
