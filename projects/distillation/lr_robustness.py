#!/usr/bin/env python
"""Experiment 3: learning-rate robustness with and without constant-magnitude loss
weighting, over several seeds.

Rescaling every loss term to a fixed magnitude (MODEL.LOSS_BALANCE,
c * L / stopgrad(L)) is meant to make training insensitive to too-large
learning rates under a cosine schedule. This trains the ``--arch`` R18 shapes
demo (schedule rescaled to ``--iters``, detectron2's WarmupCosineLR) at the
demo's learning rate times each ``--lr-factors``, with the weighting off and
on (``--weightings``), once per seed, and prints COCO AP on shapes_val (mean +- std; "diverged"
counts runs whose loss became non-finite; a finished run that detects
nothing counts as AP 0 and is named) and the final unscaled loss, then
the AP of each weighted run as a fraction of the plain run at factor 1:

    python projects/distillation/lr_robustness.py --seeds 1 2 3 --lr-factors 1 30   # docs/results.md
    python projects/distillation/lr_robustness.py --lr-factors 1 10 --arch centernet SOLVER.OPTIMIZER SGD \
        SOLVER.BASE_LR 0.01

Trailing ``KEY VALUE`` pairs override every run's config alike (the factors
multiply the resulting SOLVER.BASE_LR).
"""

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # projects/experiments.py
from experiments import (
    add_common_args,
    demo_config,
    experiment_cfg,
    format_table,
    mean_std,
    prepare_shapes,
    run_cached,
    seed_dir,
    write_table,
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--lr-factors",
        type=float,
        nargs="+",
        default=[1.0, 30.0],
        help="multiples of the config's SOLVER.BASE_LR to train with",
    )
    p.add_argument(
        "--weightings",
        nargs="+",
        choices=["plain", "balanced"],
        default=["plain", "balanced"],
        help="train each factor without (plain) and / or with (balanced) the weighting; e.g. only "
        "plain at a further reference rate",
    )
    p.add_argument("--output-dir", default="output/lr_robustness")
    add_common_args(p)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    train, test = ([name] for name in prepare_shapes(args))
    settings = [
        (factor, balance)
        for factor in args.lr_factors
        for balance in (False, True)
        if ("balanced" if balance else "plain") in args.weightings
    ]
    runs, lrs = {setting: [] for setting in settings}, {}
    for seed in args.seeds:  # seed by seed, so that a stopped run leaves every setting's first seeds
        for factor, balance in settings:
            tag = f"lr{factor:g}x_{'balanced' if balance else 'plain'}"
            directory = seed_dir(os.path.join(args.output_dir, tag), seed)
            base = experiment_cfg(demo_config(args), args, directory, train, test, seed=seed)
            cfg = experiment_cfg(
                demo_config(args),
                args,
                directory,
                train,
                test,
                [
                    "SOLVER.LR_SCHEDULER_NAME",
                    "WarmupCosineLR",
                    "SOLVER.STEPS",
                    (),
                    "SOLVER.BASE_LR",
                    base.SOLVER.BASE_LR * factor,
                    "MODEL.LOSS_BALANCE.ENABLED",
                    balance,
                ],
                seed=seed,
            )
            lrs[factor] = cfg.SOLVER.BASE_LR
            runs[(factor, balance)].append(run_cached(cfg, args.rerun))
    rows, aps = [], {}
    for (factor, balance), results in runs.items():
        aps[(factor, balance)] = [r.get("AP") for r in results]
        diverged = [r["iterations"] for r in results if "AP" not in r]
        blind = sum(bool(r.get("no_detections")) for r in results)
        rows.append(
            [
                f"{lrs[factor]:g} ({factor:g}x)",
                "on" if balance else "off",
                f"{len(diverged)} of {len(results)}"
                + (f" (at {diverged})" if diverged else "")
                + (f"; {blind} detect nothing (AP 0)" if blind else ""),
                mean_std([r["final_loss"] for r in results]),
                mean_std(aps[(factor, balance)]),
                round(statistics.mean(r["train_s"] for r in results)),
            ]
        )
    table = format_table(
        [
            "base lr",
            "loss weighting",
            "diverged",
            "final loss, unscaled (median of last 20 it)",
            "AP",
            "train time (s)",
        ],
        rows,
    )
    good = [a for a in aps.get((args.lr_factors[0], False), []) if a is not None]
    if good and statistics.mean(good) <= 0:
        table += f"\n\nThe plain AP at {args.lr_factors[0]:g}x is 0: no fraction of it to report."
    elif good:
        reference = statistics.mean(good)
        for factor in args.lr_factors[1:]:
            balanced = [a for a in aps.get((factor, True), []) if a is not None]
            if balanced:
                table += (
                    f"\n\nWeighted at {factor:g}x: {100 * statistics.mean(balanced) / reference:.0f} % of the "
                    f"plain AP at {args.lr_factors[0]:g}x ({statistics.mean(balanced):.1f} vs {reference:.1f})."
                )
    write_table(args.output_dir, table)


if __name__ == "__main__":
    main()
