#!/usr/bin/env python
"""AP at equal CPU training time: centerX's demo detectors, each trained from random
initialisation for the iterations that fit a time budget at its own speed, beside
Ultralytics YOLO runs (projects/benchmarks/yolo_peer.py) whose training times are
budgets too.

    .venv/bin/python projects/benchmarks/equal_time.py --dataset photos --models ttfnet_nano ttfnet_r18 \\
        --budget-s 870 --yolo output/yolo_peer/photos_e8 output/yolo_peer/photos_e24

Models (``--models``; the first is the reference of the last column):
``ttfnet_nano``, ``ttfnet_r18``, ``centernet_r18``, i.e. ``configs/<dataset>/<model>_demo.yaml``.

1. Probe: per model, ``--probe-iters`` training steps after ``--probe-warmup`` untimed
   ones, run by the trainer a real run builds (projects/benchmarks/step_profile.py's
   loop: data loading, forward, backward, optimizer, hooks), give its seconds per
   iteration. Kept in ``<output-dir>/<dataset>/<model>/probe.json`` and read back
   while the config and the probe's length are the same. The default 30 warm-up
   steps skip a run's slow start (its first ~20 steps take ~1.3x the steady
   state's); with 5, the earlier default that the equal-time figures of
   docs/benchmarks.md were probed with, the probe overestimated the nano's step by
   7 %-17 % and its runs trained that much less than their budget allowed.
2. Budgets: every ``--budget-s``, and the training time of every ``--yolo`` folder
   (yolo_peer.py's ``--output``: its result.json, with its AP on the same validation
   json, scored by pycocotools).
3. Per budget and model: the demo's schedule rescaled to floor(budget / seconds per
   iteration) iterations (warm-up and lr steps at the same fractions), trained once
   per ``--seeds`` entry and evaluated once at the end on the validation set (COCO AP).

The table (printed, and written to ``<output-dir>/<dataset>/table.md``) gives per
budget and model the iterations, the training time measured and its ratio to the
budget (far from 1.0 when something else shared the CPU, or when the probe missed
what a whole run costs), AP (mean +- std over seeds), AP50, APs, APm, APl, and the
AP as a percentage of the first model's; a YOLO run is a row of its own budget.
Everything here is timed: run it alone on the machine. Runs already in
``--output-dir`` with the same config are read back. Trailing ``KEY VALUE`` config
overrides apply to every centerX model; put them after a single-valued flag (such as
``--output-dir``), since ``--budget-s``, ``--yolo`` and ``--seeds`` take several values.
"""

import argparse
import json
import math
import os
import statistics
import sys

from detectron2.utils.logger import setup_logger

from centerx.config import get_centerx_cfg
from centerx.data.datasets import ensure_datasets

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # projects/experiments.py
sys.path.insert(0, HERE)  # step_profile.py
from step_profile import profile_config

from experiments import experiment_cfg, format_table, mean_std, run_cached, seed_dir, subset_dataset, write_table

REPO = os.path.dirname(os.path.dirname(HERE))
MODELS = {"ttfnet_nano": "TTFNet-nano", "ttfnet_r18": "TTFNet-R18", "centernet_r18": "CenterNet-R18"}
DATASETS = {"photos": ("photos_train", "photos_val"), "shapes": ("shapes_train", "shapes_val")}
METRICS = ("AP", "AP50", "APs", "APm", "APl")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=sorted(DATASETS), default="photos")
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=["ttfnet_nano", "ttfnet_r18"])
    p.add_argument("--budget-s", type=float, nargs="*", default=[], help="training-time budgets in seconds")
    p.add_argument("--yolo", nargs="*", default=[], metavar="DIR", help="yolo_peer.py output folders")
    p.add_argument("--seeds", type=int, nargs="+", default=[1])
    p.add_argument(
        "--probe-warmup",
        type=int,
        default=30,
        help="untimed steps before the probe's timed ones (a run's first ~20 steps are slower than its steady state)",
    )
    p.add_argument("--probe-iters", type=int, default=30)
    p.add_argument("--train-images", type=int, default=0, help="use only the first N training images (0: all)")
    p.add_argument("--test-images", type=int, default=0, help="evaluate on the first N test images (0: all)")
    p.add_argument("--output-dir", default=os.path.join(REPO, "output", "equal_time"))
    p.add_argument("--rerun", action="store_true", help="probe and train again what has saved results")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides for every centerX model")
    args = p.parse_args(argv)
    if not args.budget_s and not args.yolo:
        p.error("give at least one budget: --budget-s SECONDS and/or --yolo DIR")
    if any(not b > 0 for b in args.budget_s):
        p.error(f"--budget-s takes training times in seconds above 0, got {' '.join(f'{b:g}' for b in args.budget_s)}")
    if args.probe_iters < 1 or args.probe_warmup < 0 or args.train_images < 0 or args.test_images < 0:
        p.error("--probe-iters must be at least 1, --probe-warmup, --train-images and --test-images at least 0")
    if min(args.seeds) < 0:
        p.error(f"--seeds must be 0 or more, got {' '.join(map(str, args.seeds))}")
    return args


def config_file(dataset: str, model: str) -> str:
    """The demo config of ``model`` on ``dataset``."""
    return os.path.join(REPO, "configs", dataset, f"{model}_demo.yaml")


def seconds_per_iteration(args, model: str, train: str, model_dir: str) -> float:
    """The probe of ``model``: wall seconds per training step, measured on a trainer
    built from its demo config (with ``train`` as training set and the overrides)."""
    key = {
        "config": config_file(args.dataset, model),
        "train": train,
        "opts": [str(o) for o in args.opts],
        "warmup": args.probe_warmup,
        "iters": args.probe_iters,
    }
    path = os.path.join(model_dir, "probe.json")
    if os.path.exists(path) and not args.rerun:
        with open(path) as f:
            saved = json.load(f)
        if saved["probe"] == key:
            return saved["s_per_iter"]
    cfg = get_centerx_cfg()
    cfg.merge_from_file(key["config"])
    cfg.merge_from_list(list(args.opts))
    cfg.merge_from_list(["DATASETS.TRAIN", (train,)])
    _, wall, _ = profile_config(cfg, args.probe_warmup, args.probe_iters)
    s_per_iter = wall / args.probe_iters
    os.makedirs(model_dir, exist_ok=True)
    with open(path, "w") as f:
        json.dump({"probe": key, "s_per_iter": s_per_iter}, f, indent=1)
    return s_per_iter


def yolo_budgets(folders) -> list[tuple[str, float, dict]]:
    """(label, training seconds, result) of every yolo_peer.py output folder."""
    out = []
    for folder in folders:
        path = os.path.join(folder, "result.json")
        if not os.path.isfile(path):
            raise SystemExit(f"--yolo {folder}: no result.json there; run projects/benchmarks/yolo_peer.py first.")
        with open(path) as f:
            result = json.load(f)
        if "train_s" not in result or "AP" not in result:
            raise SystemExit(f"--yolo {folder}: its result.json lacks the training time or the AP (run its steps).")
        model = os.path.splitext(os.path.basename(result.get("model", "YOLO")))[0]
        label = f"{model}, {result['epochs']} epochs" if "epochs" in result else model
        out.append((label, result["train_s"], result))
    return out


def main(argv=None) -> str:
    args = parse_args(argv)
    setup_logger(name="centerx")
    setup_logger(name="detectron2")
    train, test = DATASETS[args.dataset]
    ensure_datasets([train, test])
    train, test = subset_dataset(train, args.train_images), subset_dataset(test, args.test_images)
    root = os.path.join(args.output_dir, args.dataset)
    speed = {m: seconds_per_iteration(args, m, train, os.path.join(root, m)) for m in args.models}
    budgets = [(f"{b:g} s", b, None) for b in args.budget_s] + yolo_budgets(args.yolo)
    header = ["budget", "model", "s / iteration (probe)", "iterations", "train s", "vs budget", *METRICS]
    header.append(f"AP vs {MODELS[args.models[0]]}")
    rows = []
    for label, budget, yolo in budgets:
        reference = None
        for model in args.models:
            iters = max(1, math.floor(budget / speed[model]))
            results = []
            for seed in args.seeds:
                out = seed_dir(os.path.join(root, model, f"{iters}it"), seed)
                cfg = experiment_cfg(
                    config_file(args.dataset, model), args, out, [train], [test], iters=iters, seed=seed
                )
                results.append(run_cached(cfg, rerun=args.rerun))
            ap = [r.get("AP") for r in results if r.get("AP") is not None]
            reference = reference if reference is not None else (statistics.mean(ap) if ap else None)
            seconds = statistics.mean(r["train_s"] for r in results)
            share = f"{100 * statistics.mean(ap) / reference:.0f} %" if ap and reference else None
            rows.append(
                [label, MODELS[model], f"{speed[model]:.3f}", iters, f"{seconds:.0f}", f"{seconds / budget:.2f}"]
                + [mean_std([r.get(m) for r in results]) for m in METRICS]
                + [share]
            )
        if yolo is not None:
            share = f"{100 * yolo['AP'] / reference:.0f} %" if reference else None
            schedule = f"{yolo['epochs']} epochs" if "epochs" in yolo else "-"
            rows.append(
                [label, label.split(",")[0], "-", schedule, f"{budget:.0f}", "1.00"]
                + [yolo.get(m) for m in METRICS]
                + [share]
            )
    table = (
        f"AP at equal training time on {args.dataset} ({test}), seeds {args.seeds}, "
        f"{len(args.models)} centerX models\n\n" + format_table(header, rows)
    )
    write_table(root, table)
    return table


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
