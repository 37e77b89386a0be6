#!/usr/bin/env python
"""Ablation of the training tricks and of adversarial feature distillation on shapes.

Every variant is the ``--arch`` R18 shapes demo (configs/shapes/<arch>_r18_demo.yaml,
schedule rescaled to ``--iters``) trained from random initialisation with one
switch turned on, evaluated once at the end (COCO AP on shapes_val), timed, and
its inference latency measured (PyTorch eager, batch 1, one test-size image,
median of ``--latency-reps`` runs on this machine's CPU or MODEL.DEVICE).

Groups (``--groups``):

- ``tricks``: baseline, mixup, multi-scale training, CoordConv, SPP, DropBlock,
  IoU-aware scoring (TTFNet only), all of them together, and mixup + SPP
  (+ IoU-aware), the ones that helped alone in the README's TTFNet table;
- ``kd``: the R18 student distilled from a ResNet-``--teacher-depth`` teacher
  with logit KD (the output-map losses), adversarial feature KD, and both, at
  equal iterations. The teacher is read from ``--teacher-dir`` (its
  ``config.yaml`` and ``model_final.pth``, as written by
  projects/distillation/single_teacher.py) or trained there first.

Each variant's figures are kept in ``<output-dir>/<variant>/ablation.json``; a
rerun skips variants that have one (``--rerun`` retrains them);
``--remeasure-latency`` times all selected trained variants again in one
session, taking turns, which is fairer than the per-variant figures when the
machine's load changed during training. The table is printed and written to
``<output-dir>/table.md``::

    python projects/ablation/ablation.py --arch ttfnet --iters 200 SOLVER.IMS_PER_BATCH 8   # the README's table
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
import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "distillation"))

from common import add_common_args, demo_config, distill_overrides, experiment_cfg, format_table, \
    prepare_shapes, train_and_evaluate, write_table  # noqa: E402

from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402

from centerx.modeling.meta_arch.distiller import student_config  # noqa: E402


def trick_variants(args):
    """(name, config overrides) of the training-trick group."""
    sizes = (128, 160, 192, 224, 256)
    mixup = ["INPUT.MIXUP.ENABLED", True, "INPUT.MIXUP.OFF_LAST_ITERS", max(1, args.iters // 10)]
    multiscale = ["INPUT.TRAIN_SIZES", sizes]
    coord = ["MODEL.CENTERX.COORD_CONV", True]
    spp = ["MODEL.CENTERX.SPP.ENABLED", True]
    dropblock = ["MODEL.CENTERX.DROPBLOCK.ENABLED", True]
    iou = ["MODEL.TTFNET.IOU_AWARE.ENABLED", True] if args.arch == "ttfnet" else []
    variants = [("baseline", []), ("mixup", mixup), ("multi-scale", multiscale), ("coordconv", coord),
                ("spp", spp), ("dropblock", dropblock)]
    if iou:
        variants.append(("iou-aware", iou))
    variants.append(("all tricks", mixup + multiscale + coord + spp + dropblock + iou))
    # the tricks that gained more than the run-to-run spread alone in the README's TTFNet table
    variants.append(("mixup + spp" + (" + iou-aware" if iou else ""), mixup + spp + iou))
    return variants


def kd_variants(args, teacher):
    """(name, config overrides) of the distillation group, all with labels."""
    kd = distill_overrides(args, [teacher], use_labels=True)
    adv = ["MODEL.DISTILL.ADVERSARIAL.ENABLED", True]
    return [("logit KD", kd), ("adversarial KD", kd + adv + ["MODEL.DISTILL.LOGIT_KD", False]),
            ("logit + adversarial KD", kd + adv)]


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
        DetectionCheckpointer(model).load(os.path.join(cfg.OUTPUT_DIR, "model_final.pth"))
        models.append(model.eval())
        size = cfg.INPUT.MAX_SIZE_TEST
        inputs.append([{"image": torch.randint(0, 256, (3, size, size), dtype=torch.uint8),
                        "height": size, "width": size}])
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


def run_variant(cfg, rerun: bool, latency_reps: int) -> None:
    """Train + evaluate + time one variant and save its figures, unless they are
    saved already (and not ``rerun``)."""
    path = os.path.join(cfg.OUTPUT_DIR, "ablation.json")
    if os.path.exists(path) and not rerun:
        check_same_config(cfg)
        return
    metrics, seconds = train_and_evaluate(cfg)
    result = {"AP": metrics.get("AP"), "AP50": metrics.get("AP50"), "iterations": metrics["iterations"],
              "train_s": seconds, "final_loss": metrics["final_loss"]}
    result["latency_ms"] = measure_latencies([cfg], latency_reps)[0] if result["AP"] is not None else None
    with open(path, "w") as f:
        json.dump(result, f, indent=1)


def check_same_config(cfg) -> None:
    """Refuse saved figures that were trained with another config than ``cfg``
    (the ``config.yaml`` in its OUTPUT_DIR), naming the keys that differ."""
    saved_path = os.path.join(cfg.OUTPUT_DIR, "config.yaml")
    with open(saved_path) as f:
        saved = flatten(yaml.safe_load(f))
    now = flatten(yaml.safe_load(cfg.dump()))
    differ = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k))
    if differ:
        shown = ", ".join(f"{k}: {saved.get(k)!r} saved vs {now.get(k)!r} now" for k in differ[:5])
        raise SystemExit(f"{cfg.OUTPUT_DIR} holds figures of another config ({len(differ)} keys differ: {shown}). "
                         "Pass the same options as when it was trained, --rerun to retrain, or another "
                         "--output-dir.")


def flatten(tree, prefix=""):
    """{"A.B": value} of a nested dict."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def variant_dir(args, name: str) -> str:
    """Output folder of a variant: its name under ``--output-dir``, spaces as _ and + as "and"."""
    return os.path.join(args.output_dir, name.replace(" ", "_").replace("+", "and"))


def read_figures(cfg) -> dict:
    """The saved figures of the variant trained in ``cfg.OUTPUT_DIR``."""
    with open(os.path.join(cfg.OUTPUT_DIR, "ablation.json")) as f:
        return json.load(f)


def figures_table(named_cfgs) -> str:
    """Markdown table of the saved figures of [(variant name, cfg)]."""
    rows = []
    for name, cfg in named_cfgs:
        r = read_figures(cfg)
        rows.append([name, r["iterations"], r["AP"], r["AP50"], round(r["train_s"]), r["latency_ms"]])
    return format_table(["variant", "iterations", "AP", "AP50", "train time (s)", "latency (ms)"], rows)


def remeasure_latencies(cfgs, reps: int) -> None:
    """Measure the trained, non-diverged variants again, all in one session,
    and store the new latencies in their figures."""
    cfgs = [cfg for cfg in cfgs if read_figures(cfg)["AP"] is not None]
    for cfg, latency in zip(cfgs, measure_latencies(cfgs, reps)):
        figures = read_figures(cfg)
        figures["latency_ms"] = latency
        with open(os.path.join(cfg.OUTPUT_DIR, "ablation.json"), "w") as f:
            json.dump(figures, f, indent=1)


def teacher_entry(args, train, test):
    """(config, weights, classes) of the KD teacher, trained first when ``--teacher-dir`` has none."""
    config = os.path.join(args.teacher_dir, "config.yaml")
    weights = os.path.join(args.teacher_dir, "model_final.pth")
    if not (os.path.exists(config) and os.path.exists(weights)):
        cfg = experiment_cfg(demo_config(args), args, args.teacher_dir, train, test,
                             ["MODEL.RESNETS.DEPTH", args.teacher_depth], iters=args.teacher_iters or args.iters)
        train_and_evaluate(cfg)
    return config, weights, ()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--groups", nargs="+", choices=("tricks", "kd"), default=["tricks", "kd"])
    p.add_argument("--only", nargs="+", default=[], help="run only the variants of these names")
    p.add_argument("--teacher-dir", default="output/distill_single_teacher/teacher_r34",
                   help="KD teacher: config.yaml + model_final.pth, trained here if missing")
    p.add_argument("--teacher-depth", type=int, default=34, help="ResNet depth of a teacher trained here")
    p.add_argument("--teacher-iters", type=int, default=300, help="iterations of a teacher trained here")
    p.add_argument("--latency-reps", type=int, default=10)
    p.add_argument("--rerun", action="store_true", help="retrain variants that have saved figures")
    p.add_argument("--remeasure-latency", action="store_true",
                   help="measure the latency of all selected trained variants again, taking turns, and "
                        "update their figures (for a quiet machine after training under load)")
    p.add_argument("--output-dir", default="output/ablation")
    add_common_args(p)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    train, test = ([name] for name in prepare_shapes(args))
    variants = trick_variants(args) if "tricks" in args.groups else []
    if "kd" in args.groups:
        variants += kd_variants(args, teacher_entry(args, train, test))
    unknown = set(args.only) - {name for name, _ in variants}
    if unknown:
        raise SystemExit(f"--only: unknown variants {sorted(unknown)}; choose from {[n for n, _ in variants]}")
    selected = [(name, experiment_cfg(demo_config(args), args, variant_dir(args, name), train, test, overrides))
                for name, overrides in variants if not args.only or name in args.only]
    for i, (_, cfg) in enumerate(selected):
        run_variant(cfg, args.rerun, args.latency_reps)
        write_table(args.output_dir, figures_table(selected[: i + 1]))
    if args.remeasure_latency:
        remeasure_latencies([cfg for _, cfg in selected], args.latency_reps)
        write_table(args.output_dir, figures_table(selected))

if __name__ == "__main__":
    main()
