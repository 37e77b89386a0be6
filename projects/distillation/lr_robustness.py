#!/usr/bin/env python
"""Experiment 3: learning-rate robustness with and without constant-magnitude loss weighting.

DESIGN §5 claims that rescaling every loss term to a fixed magnitude
(MODEL.LOSS_BALANCE, c * L / stopgrad(L); heatmap 1.5, size 0.3, offset 0.1)
makes training insensitive to too-large learning rates under a cosine
schedule. This trains CenterNet-R18 on shapes (configs/shapes/centernet_r18_demo.yaml,
schedule rescaled to ``--iters``, lr steps replaced by detectron2's
WarmupCosineLR) at the demo's learning rate times each ``--lr-factors``, with
the weighting off and on, and prints COCO AP on shapes_val per run ("diverged"
where the loss became non-finite):

    python projects/distillation/lr_robustness.py                       # factors 1, 4, 16; 400 iterations each
    python projects/distillation/lr_robustness.py --lr-factors 1 10 100 SOLVER.OPTIMIZER SGD SOLVER.BASE_LR 0.01

Trailing ``KEY VALUE`` pairs override every run's config alike (the factors
multiply the resulting SOLVER.BASE_LR).
"""
import argparse
import os

from common import add_common_args, demo_config, experiment_cfg, format_table, prepare_shapes, \
    train_and_evaluate, write_table


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lr-factors", type=float, nargs="+", default=[1.0, 4.0, 16.0],
                   help="multiples of the config's SOLVER.BASE_LR to train with")
    p.add_argument("--output-dir", default="output/distill_lr_robustness")
    add_common_args(p)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    train, test = ([name] for name in prepare_shapes(args))
    rows = []
    for factor in args.lr_factors:
        for balance in (False, True):
            tag = f"lr{factor:g}x_{'balanced' if balance else 'plain'}"
            base = experiment_cfg(demo_config(args), args, os.path.join(args.output_dir, tag), train, test)
            cfg = experiment_cfg(demo_config(args), args, os.path.join(args.output_dir, tag), train, test, [
                "SOLVER.LR_SCHEDULER_NAME", "WarmupCosineLR", "SOLVER.STEPS", (),
                "SOLVER.BASE_LR", base.SOLVER.BASE_LR * factor, "MODEL.LOSS_BALANCE.ENABLED", balance,
            ])
            metrics, seconds = train_and_evaluate(cfg)
            diverged = "AP" not in metrics
            rows.append([f"{cfg.SOLVER.BASE_LR:g} ({factor:g}x)", "on" if balance else "off",
                         f"diverged at {metrics['iterations']}" if diverged else metrics["iterations"],
                         metrics["final_loss"], metrics.get("AP"), metrics.get("AP50"), f"{seconds:.0f}"])
    write_table(args.output_dir, format_table(
        ["base lr", "loss weighting", "iterations", "final loss, unscaled (median of last 20 it)", "AP", "AP50", "train time (s)"], rows))


if __name__ == "__main__":
    main()
