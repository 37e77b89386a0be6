#!/usr/bin/env python
"""Ablation of the training tricks, of adversarial feature distillation and of
CenterNet's Gaussian radius on shapes, over several seeds.

Every variant is the ``--arch`` R18 shapes demo (configs/shapes/<arch>_r18_demo.yaml,
schedule rescaled to ``--iters``) trained from random initialisation with one
switch turned on, once per ``--seeds`` seed, evaluated once at the end (COCO AP
on shapes_val), timed, and its inference latency measured on the first seed's
model (PyTorch eager, batch 1, one test-size image, median of ``--latency-reps``
runs on this machine's CPU or MODEL.DEVICE).

Groups (``--groups``):

- ``tricks``: baseline, mixup, multi-scale training, CoordConv, SPP, DropBlock,
  IoU-aware scoring (TTFNet only), all of them together, and mixup + SPP
  (+ IoU-aware);
- ``kd``: the R18 student distilled from a ResNet-``--teacher-depth`` teacher
  with logit KD (the output-map losses), adversarial feature KD, and both, at
  equal iterations. The teacher is read from ``--teacher-dir`` (its
  ``config.yaml`` and ``model_final.pth``, as written by
  projects/distillation/single_teacher.py) or trained there first;
- ``radius`` (CenterNet only): the Gaussian radius of the targets, the
  original CenterNet's roots at MIN_OVERLAP 0.7 (the default), the proper
  roots at 0.3 (centerX, mmdetection) and the proper roots at 0.7 (centerX's
  default before the targets followed the references).

Each run's figures are kept in ``<output-dir>/<variant>/seed<k>/result.json``;
a rerun skips runs that have one (``--rerun`` retrains them);
``--remeasure-latency`` times all selected trained variants again in one
session, taking turns, which is fairer than the per-variant figures when the
machine's load changed during training. The table (AP as mean +- standard
deviation over the seeds, and each seed's AP) is printed and written to
``<output-dir>/table.md``::

    python projects/ablation/ablation.py --arch ttfnet --groups tricks --seeds 1 2 3   # docs/results.md
    python projects/ablation/ablation.py --arch centernet --groups radius --iters 1000 --seeds 1 2
    python projects/ablation/ablation.py --only baseline mixup --iters 20

Trailing ``KEY VALUE`` pairs override every model's config alike.
"""

import argparse
import json
import os
import statistics
import sys
import time

import torch
from detectron2.modeling import build_model

from centerx.checkpoint import SafeCheckpointer
from centerx.modeling.meta_arch.build import student_config

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # projects/experiments.py
from experiments import (
    add_common_args,
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

LATENCY_FILE = "latency.json"


def trick_variants(args):
    """(name, config overrides) of the training-trick group."""
    sizes = (128, 160, 192, 224, 256)
    mixup = ["INPUT.MIXUP.ENABLED", True, "INPUT.MIXUP.OFF_LAST_ITERS", max(1, args.iters // 10)]
    multiscale = ["INPUT.TRAIN_SIZES", sizes]
    coord = ["MODEL.CENTERX.COORD_CONV", True]
    spp = ["MODEL.CENTERX.SPP.ENABLED", True]
    dropblock = ["MODEL.CENTERX.DROPBLOCK.ENABLED", True]
    iou = ["MODEL.TTFNET.IOU_AWARE.ENABLED", True] if args.arch == "ttfnet" else []
    variants = [
        ("baseline", []),
        ("mixup", mixup),
        ("multi-scale", multiscale),
        ("coordconv", coord),
        ("spp", spp),
        ("dropblock", dropblock),
    ]
    if iou:
        variants.append(("iou-aware", iou))
    variants.append(("all tricks", mixup + multiscale + coord + spp + dropblock + iou))
    # the tricks that gained more than the run-to-run spread alone in an earlier single-seed TTFNet ablation
    variants.append(("mixup + spp" + (" + iou-aware" if iou else ""), mixup + spp + iou))
    return variants


def kd_variants(args, teacher):
    """(name, config overrides) of the distillation group, all with labels."""
    kd = distill_overrides(args, [teacher], use_labels=True)
    adv = ["MODEL.DISTILL.ADVERSARIAL.ENABLED", True]
    return [
        ("logit KD", kd),
        ("adversarial KD", kd + adv + ["MODEL.DISTILL.LOGIT_KD", False]),
        ("logit + adversarial KD", kd + adv),
    ]


def radius_variants(args):
    """(name, config overrides) of CenterNet's Gaussian radius settings."""
    if args.arch != "centernet":
        raise SystemExit("--groups radius compares CenterNet's Gaussian radius settings: use --arch centernet.")
    return [
        (f"{mode} roots at {overlap}", ["MODEL.CENTERNET.RADIUS_MODE", mode, "MODEL.CENTERNET.MIN_OVERLAP", overlap])
        for mode, overlap in (("original", 0.7), ("corrected", 0.3), ("corrected", 0.7))
    ]


def measure_latencies(cfgs, reps: int) -> list:
    """Median milliseconds of one eval forward (batch 1, a square image of
    INPUT.MAX_SIZE_TEST pixels) of each trained model in ``cfg.OUTPUT_DIR``
    (the student alone for a Distiller). The models take turns, one forward each
    per round (two warm-up rounds first), so that a change in machine load hits
    every model alike."""
    models, inputs = [], []
    for cfg in cfgs:
        if cfg.MODEL.META_ARCHITECTURE == "Distiller":
            cfg = student_config(cfg)
        model = build_model(cfg)
        SafeCheckpointer(model).load(os.path.join(cfg.OUTPUT_DIR, "model_final.pth"))
        models.append(model.eval())
        size = cfg.INPUT.MAX_SIZE_TEST
        inputs.append(
            [{"image": torch.randint(0, 256, (3, size, size), dtype=torch.uint8), "height": size, "width": size}]
        )
    times = [[] for _ in models]
    with torch.no_grad():
        for round_ in range(reps + 2):
            for model, cfg, x, t in zip(models, cfgs, inputs, times):
                start = time.perf_counter()
                model(x)
                if cfg.MODEL.DEVICE.startswith("cuda"):
                    torch.cuda.synchronize()
                if round_ >= 2:
                    t.append((time.perf_counter() - start) * 1000)
    return [statistics.median(t) for t in times]


def variant_dir(args, name: str) -> str:
    """Output folder of a variant: its name under ``--output-dir``, spaces as _ and + as "and"."""
    return os.path.join(args.output_dir, name.replace(" ", "_").replace("+", "and"))


def figures_table(named_runs) -> str:
    """Markdown table of [(variant name, [cfg of each seed])]: AP mean +- std and per
    seed, AP50 and training time means, the first seed's latency."""
    rows = []
    for name, cfgs in named_runs:
        results = [run_cached(cfg) for cfg in cfgs]
        aps = [r.get("AP") for r in results]
        latency = read_latency(cfgs[0])
        rows.append(
            [
                name,
                results[0]["iterations"],
                mean_std(aps),
                " / ".join("-" if ap is None else f"{ap:.1f}" for ap in aps),
                mean_std([r.get("AP50") for r in results]),
                round(statistics.mean(r["train_s"] for r in results)),
                latency,
            ]
        )
    return format_table(["variant", "iterations", "AP", "AP per seed", "AP50", "train time (s)", "latency (ms)"], rows)


def read_latency(cfg):
    path = os.path.join(os.path.dirname(cfg.OUTPUT_DIR), LATENCY_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)["latency_ms"]


def write_latencies(cfgs, reps: int) -> None:
    """Measure the trained, non-diverged models of ``cfgs`` in one session, taking
    turns, and store each one's latency in its variant folder."""
    cfgs = [cfg for cfg in cfgs if run_cached(cfg).get("AP") is not None]
    for cfg, latency in zip(cfgs, measure_latencies(cfgs, reps)):
        with open(os.path.join(os.path.dirname(cfg.OUTPUT_DIR), LATENCY_FILE), "w") as f:
            json.dump({"latency_ms": latency}, f)


def teacher_entry(args, train, test):
    """(config, weights, classes) of the KD teacher, trained first when ``--teacher-dir`` has none."""
    config = os.path.join(args.teacher_dir, "config.yaml")
    weights = os.path.join(args.teacher_dir, "model_final.pth")
    if not (os.path.exists(config) and os.path.exists(weights)):
        cfg = experiment_cfg(
            demo_config(args),
            args,
            args.teacher_dir,
            train,
            test,
            ["MODEL.RESNETS.DEPTH", args.teacher_depth],
            iters=args.teacher_iters or args.iters,
        )
        run_cached(cfg)
    return config, weights, ()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--groups", nargs="+", choices=("tricks", "kd", "radius"), default=["tricks", "kd"])
    p.add_argument("--only", nargs="+", default=[], help="run only the variants of these names")
    p.add_argument(
        "--teacher-dir",
        default="output/distill_single_teacher/teacher_r34",
        help="KD teacher: config.yaml + model_final.pth, trained here if missing",
    )
    p.add_argument("--teacher-depth", type=int, default=34, help="ResNet depth of a teacher trained here")
    p.add_argument("--teacher-iters", type=int, default=300, help="iterations of a teacher trained here")
    p.add_argument("--latency-reps", type=int, default=10)
    p.add_argument(
        "--remeasure-latency",
        action="store_true",
        help="measure the latency of all selected trained variants again, taking turns, and "
        "update their figures (for a quiet machine after training under load)",
    )
    p.add_argument("--output-dir", default="output/ablation")
    add_common_args(p)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    train, test = ([name] for name in prepare_shapes(args))
    variants = trick_variants(args) if "tricks" in args.groups else []
    if "radius" in args.groups:
        variants += radius_variants(args)
    if "kd" in args.groups:
        variants += kd_variants(args, teacher_entry(args, train, test))
    unknown = set(args.only) - {name for name, _ in variants}
    if unknown:
        raise SystemExit(f"--only: unknown variants {sorted(unknown)}; choose from {[n for n, _ in variants]}")
    selected = [
        (
            name,
            [
                experiment_cfg(
                    demo_config(args), args, seed_dir(variant_dir(args, name), seed), train, test, overrides, seed=seed
                )
                for seed in args.seeds
            ],
        )
        for name, overrides in variants
        if not args.only or name in args.only
    ]
    for i, (_, cfgs) in enumerate(selected):
        for cfg in cfgs:
            run_cached(cfg, args.rerun)
        if read_latency(cfgs[0]) is None or args.rerun:
            write_latencies(cfgs[:1], args.latency_reps)
        write_table(args.output_dir, figures_table(selected[: i + 1]))
    if args.remeasure_latency:
        write_latencies([cfgs[0] for _, cfgs in selected], args.latency_reps)
        write_table(args.output_dir, figures_table(selected))


if __name__ == "__main__":
    main()
