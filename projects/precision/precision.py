#!/usr/bin/env python
"""Mixed precision against float32: AP (mean +- std over seeds) and step time of the
R18 demo detectors trained in float32, under bfloat16 autocast, and under
bfloat16 with parts of the model kept in float32 (SOLVER.AMP.FP32_MODULES), on
the real-photo set or on shapes.

    .venv/bin/python projects/precision/precision.py --dataset photos --arch ttfnet --iters 300 --seeds 1 2 3
    .venv/bin/python projects/precision/precision.py --settings fp32 bf16 bf16-fp32-heads --iters 300

(``.venv`` is the environment ``./run.sh`` sets up; ``./run.sh setup`` makes it.)

Settings (``--settings``, default all): ``fp32`` (SOLVER.AMP.ENABLED False),
``bf16`` (plain bfloat16 autocast: FP32_MODULES emptied, whatever the config
keeps in float32), and ``bf16-fp32-<parts>`` with <parts> among
``heads``, ``heatmap`` (the heatmap head only), ``box`` (TTFNet's box head /
CenterNet's size and offset heads), ``outputs`` (the last convolution of every
head), ``upsampler``, ``backbone``, joined by ``+``. Each run trains from random initialisation with the demo's schedule
rescaled to ``--iters`` and is evaluated once on the test set; results are
kept per run under ``--output-dir`` and reused when the config is the same.
Step time = training wall time / iterations (data loading included), so runs
are comparable only when nothing else shares the CPU.
"""

import argparse
import os
import statistics
import sys

from detectron2.utils.logger import setup_logger

from centerx.data.datasets import ensure_datasets

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # projects/experiments.py
from experiments import (
    ARCHS,
    add_common_args,
    experiment_cfg,
    format_table,
    mean_std,
    run_cached,
    seed_dir,
    subset_dataset,
    write_table,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATASETS = {"photos": ("photos_train", "photos_val"), "shapes": ("shapes_train", "shapes_val")}
# part name -> the modules kept in float32, per detector
PARTS = {
    "heads": {"centernet": ("heads",), "ttfnet": ("heads",)},
    "heatmap": {"centernet": ("heads.heatmap",), "ttfnet": ("heads.heatmap",)},
    "box": {"centernet": ("heads.wh", "heads.offset"), "ttfnet": ("heads.ltrb",)},
    # the last convolution of every head: the logits and the regression maps themselves
    "outputs": {
        "centernet": ("heads.heatmap.layers.2", "heads.wh.layers.2", "heads.offset.layers.2"),
        "ttfnet": ("heads.heatmap.layers.4", "heads.ltrb.layers.4"),
    },
    "upsampler": {"centernet": ("upsampler",), "ttfnet": ("upsampler",)},
    "backbone": {"centernet": ("backbone",), "ttfnet": ("backbone",)},
}
DEFAULT_SETTINGS = ["fp32", "bf16", "bf16-fp32-heads", "bf16-fp32-upsampler", "bf16-fp32-backbone"]
METRICS = ("AP", "AP50", "APs", "APm", "APl")


def setting_overrides(setting: str, arch: str) -> list:
    """Config overrides of one ``--settings`` entry."""
    if setting == "fp32":
        return ["SOLVER.AMP.ENABLED", False, "SOLVER.AMP.FP32_MODULES", ()]
    if setting == "bf16":
        return ["SOLVER.AMP.ENABLED", True, "SOLVER.AMP.FP32_MODULES", ()]
    prefix = "bf16-fp32-"
    if not setting.startswith(prefix):
        raise SystemExit(f"--settings {setting}: expected fp32, bf16 or bf16-fp32-<parts> (parts: {sorted(PARTS)}).")
    modules = []
    for part in setting[len(prefix) :].split("+"):
        if part not in PARTS:
            raise SystemExit(f"--settings {setting}: unknown part '{part}'; parts: {sorted(PARTS)}.")
        modules += PARTS[part][arch]
    return ["SOLVER.AMP.ENABLED", True, "SOLVER.AMP.FP32_MODULES", tuple(modules)]


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="photos")
    parser.add_argument("--settings", nargs="+", default=DEFAULT_SETTINGS)
    parser.add_argument("--output-dir", default=os.path.join(REPO, "output", "precision"))
    add_common_args(parser, default_iters=300)
    args = parser.parse_args(argv)
    setup_logger(name="centerx")
    setup_logger(name="detectron2")
    train, test = DATASETS[args.dataset]
    ensure_datasets([train, test])
    train, test = subset_dataset(train, args.train_images), subset_dataset(test, args.test_images)
    config = os.path.join(REPO, "configs", args.dataset, os.path.basename(ARCHS[args.arch][0]))
    rows = []
    for setting in args.settings:
        extra = setting_overrides(setting, args.arch)
        results = []
        for seed in args.seeds:
            out = seed_dir(os.path.join(args.output_dir, f"{args.arch}_{args.dataset}_{args.iters}", setting), seed)
            cfg = experiment_cfg(config, args, out, [train], [test], extra=extra, seed=seed)
            results.append(run_cached(cfg, rerun=args.rerun))
        step = [r["train_s"] / max(1, r["iterations"]) for r in results]
        rows.append(
            [setting] + [mean_std([r.get(m) for r in results]) for m in METRICS] + [f"{statistics.mean(step):.2f}"]
        )
    table = (
        f"{ARCHS[args.arch][1]}-R18 on {args.dataset}, {args.iters} iterations, seeds {args.seeds}\n\n"
        + format_table(["precision", *METRICS, "s / step"], rows)
    )
    write_table(os.path.join(args.output_dir, f"{args.arch}_{args.dataset}_{args.iters}"), table)
    return table


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
