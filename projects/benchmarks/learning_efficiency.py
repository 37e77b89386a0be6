#!/usr/bin/env python
"""How well each detector learns for the same data and the same compute:
CenterNet-R18, TTFNet-R18 and detectron2's own RetinaNet-R18-FPN on shapes.

    python projects/benchmarks/learning_efficiency.py [--iters 1000] [--eval-period 250]
        [--models centernet ttfnet retinanet retinanet-sgd] [--seed 1] [--output-dir output/learning_efficiency]
        [KEY VALUE ...]

Every model is trained from random initialisation by centerX's Trainer on the
very same batches (the same SEED of the resumable data stream: the same images,
in the same order, with the same augmentations, through CenterNetDatasetMapper
at the demo's 192 px), with the same schedule (the shapes demo's: Adam, lr
0.002, 50 warm-up iterations, cosine decay, batch 16, bfloat16 autocast where the
CPU has it natively), one model after the other, never two at once:

- CenterNet-R18 and TTFNet-R18: configs/shapes/{centernet,ttfnet}_r18_demo.yaml;
- RetinaNet-R18-FPN (``retinanet``): detectron2's COCO-Detection/retinanet_R_50_FPN_1x.yaml with
  ResNet-18 (RES2_OUT_CHANNELS 64), BatchNorm trained in every stage (FREEZE_AT 0:
  from random initialisation frozen statistics mean nothing), anchors of 16 to
  406 px on P3-P7 (detectron2's sizes halved: the shapes are 8 to 200 px at
  these input sizes), the demo's classes, pixel normalisation, test size and
  solver; its losses in FP32 as centerX's (its head's outputs are cast before
  them), its input in the layout of its weights; ``retinanet-sgd`` is the same
  with detectron2's RetinaNet solver (SGD, momentum 0.9, lr 0.01, weight decay
  1e-4) in place of the demo's Adam, the fairness check of the schedule.

Two sets of runs, each evaluated on shapes_val (COCO AP) every
``--eval-period`` iterations and at the end:

1. equal iterations: every model ``--iters`` iterations;
2. equal wall time: the fastest model's training time in (1) is the budget; each
   slower model trains again with its iterations set to what fits that budget at
   its own measured seconds per iteration (a full schedule, warm-up and cosine
   decay rescaled), and is evaluated at the end.

Training time excludes the evaluations. Prints and writes to
``<output-dir>/table.md``: AP at each evaluated iteration (1), then per model
its seconds per iteration, iterations and AP within the budget (2). Runs already
in ``--output-dir`` with the same config are read back. Trailing ``KEY VALUE``
pairs override every model's config alike.
"""

import argparse
import json
import logging
import os
import sys
import time

import torch
from detectron2 import model_zoo
from detectron2.config import CfgNode
from detectron2.modeling import META_ARCH_REGISTRY, RetinaNet

from centerx import get_centerx_cfg
from centerx.engine import Trainer

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # projects/experiments.py
from experiments import ARCHS, check_same_config, format_table, prepare_shapes, write_table

logger = logging.getLogger("centerx.benchmarks")
MODELS = {
    "centernet": "CenterNet-R18",
    "ttfnet": "TTFNet-R18",
    "retinanet": "RetinaNet-R18-FPN",
    "retinanet-sgd": "RetinaNet-R18-FPN, SGD",
}
# detectron2's own RetinaNet solver (lr 0.01 at batch 16, weight decay 1e-4), for the fairness check
RETINANET_SGD = [
    "SOLVER.OPTIMIZER",
    "SGD",
    "SOLVER.BASE_LR",
    0.01,
    "SOLVER.WEIGHT_DECAY",
    0.0001,
    "SOLVER.MOMENTUM",
    0.9,
]
RESULT_FILE = "learning.json"


class RetinaNetFP32Losses(RetinaNet):
    """detectron2's RetinaNet, its input batch in its weights' memory layout and
    its losses computed from FP32 head outputs (under bfloat16 autocast its
    focal-loss sums over ~10^5 anchors would otherwise run in bfloat16), as
    centerX's detectors compute theirs."""

    def preprocess_image(self, batched_inputs):
        images = super().preprocess_image(batched_inputs)
        if self.backbone.bottom_up.stem.conv1.weight.is_contiguous(memory_format=torch.channels_last):
            images.tensor = images.tensor.contiguous(memory_format=torch.channels_last)
        return images

    def forward_training(self, images, features, predictions, gt_instances):
        predictions = [[p.float() for p in level] for level in predictions]
        return super().forward_training(images, features, predictions, gt_instances)


# registered once per process: the tests load this script more than once
if "RetinaNetFP32Losses" not in META_ARCH_REGISTRY:
    META_ARCH_REGISTRY.register(RetinaNetFP32Losses)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iters", type=int, default=1000, help="iterations of the equal-iteration runs")
    p.add_argument("--eval-period", type=int, default=250, help="evaluate every this many iterations")
    p.add_argument(
        "--models",
        nargs="+",
        choices=list(MODELS),
        default=list(MODELS),
        help="retinanet-sgd: RetinaNet with detectron2's own solver (SGD, lr 0.01) instead of the "
        "demo's Adam, to check that the schedule is not what holds it back",
    )
    p.add_argument("--seed", type=int, default=1, help="SEED of every run: data stream and initial weights")
    p.add_argument("--train-images", type=int, default=0, help="use only the first N training images (0: all)")
    p.add_argument("--test-images", type=int, default=0, help="evaluate on the first N test images (0: all)")
    p.add_argument("--rerun", action="store_true", help="retrain runs that have saved results")
    p.add_argument("--output-dir", default="output/learning_efficiency")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides for every model")
    return p.parse_args(argv)


def model_cfg(model: str, args, iters: int, eval_period: int, output_dir: str, train: str, test: str):
    """The config of ``model`` with the demo's solver, input and data, rescaled to ``iters``."""
    cfg = get_centerx_cfg()
    if model.startswith("retinanet"):
        cfg.merge_from_file(model_zoo.get_config_file("COCO-Detection/retinanet_R_50_FPN_1x.yaml"))
        reference = get_centerx_cfg()
        reference.merge_from_file(ARCHS["ttfnet"][0])
        cfg.merge_from_other_cfg(_solver_input_data(reference))
        cfg.merge_from_list(
            [
                "MODEL.META_ARCHITECTURE",
                "RetinaNetFP32Losses",
                "MODEL.WEIGHTS",
                "",
                "MODEL.RESNETS.DEPTH",
                18,
                "MODEL.RESNETS.RES2_OUT_CHANNELS",
                64,
                "MODEL.RESNETS.NORM",
                "BN",
                "MODEL.BACKBONE.FREEZE_AT",
                0,
                "MODEL.RETINANET.NUM_CLASSES",
                reference.MODEL.TTFNET.NUM_CLASSES,
                "MODEL.ANCHOR_GENERATOR.SIZES",
                [[s // 2, int(s * 2 ** (1 / 3)) // 2, int(s * 2 ** (2 / 3)) // 2] for s in (32, 64, 128, 256, 512)],
                "MODEL.PIXEL_MEAN",
                list(reference.MODEL.PIXEL_MEAN),
                "MODEL.PIXEL_STD",
                list(reference.MODEL.PIXEL_STD),
                "MODEL.DEVICE",
                reference.MODEL.DEVICE,
                "MODEL.CENTERX.CHANNELS_LAST",
                reference.MODEL.CENTERX.CHANNELS_LAST,
            ]
        )
        if model == "retinanet-sgd":
            cfg.merge_from_list(RETINANET_SGD)
    else:
        cfg.merge_from_file(ARCHS[model][0])
    scale = iters / cfg.SOLVER.MAX_ITER
    cfg.merge_from_list(
        [
            "SOLVER.MAX_ITER",
            iters,
            "SOLVER.WARMUP_ITERS",
            max(1, round(cfg.SOLVER.WARMUP_ITERS * scale)),
            "SOLVER.CHECKPOINT_PERIOD",
            iters,
            "TEST.EVAL_PERIOD",
            eval_period,
            "TEST.VIS_IMAGES",
            0,
            "DATASETS.TRAIN",
            (train,),
            "DATASETS.TEST",
            (test,),
            "OUTPUT_DIR",
            output_dir,
            "SEED",
            args.seed,
        ]
    )
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    return cfg


def _solver_input_data(reference):
    """The SOLVER, INPUT, DATASETS, DATALOADER and TEST nodes of ``reference``."""
    return CfgNode({k: reference[k].clone() for k in ("SOLVER", "INPUT", "DATASETS", "DATALOADER", "TEST")})


def train_timed(cfg, rerun: bool):
    """Train (or read back) one run: {"curve": [[iteration, AP, AP50], ...],
    "train_s": training wall time without the evaluations, "iterations"}."""
    path = os.path.join(cfg.OUTPUT_DIR, RESULT_FILE)
    if os.path.exists(path) and not rerun:
        check_same_config(cfg)
        with open(path) as f:
            return json.load(f)
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    with open(os.path.join(cfg.OUTPUT_DIR, "config.yaml"), "w") as f:
        f.write(cfg.dump())
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    evaluating = {"s": 0.0}
    test = trainer.test

    def timed_test(*a, **k):
        start = time.perf_counter()
        try:
            return test(*a, **k)
        finally:
            evaluating["s"] += time.perf_counter() - start

    trainer.test = timed_test
    start = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - start
    histories = trainer.storage.histories()
    # periodic evaluations are stored at iteration - 1, the final one at MAX_ITER
    ap50 = {it: v for v, it in histories["bbox/AP50"].values()}
    curve = sorted([min(it + 1, cfg.SOLVER.MAX_ITER), ap, ap50[it]] for ap, it in histories["bbox/AP"].values())
    result = {"curve": curve, "train_s": total - evaluating["s"], "iterations": cfg.SOLVER.MAX_ITER}
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    return result


def main(argv=None):
    """Train and tabulate; returns ({model: equal-iteration run}, {model: equal-time run}),
    each run {"curve": [[iteration, AP, AP50], ...], "train_s", "iterations"}."""
    args = parse_args(argv)
    train, test = prepare_shapes(args)
    out = args.output_dir
    equal_iters = {
        m: train_timed(model_cfg(m, args, args.iters, args.eval_period, os.path.join(out, m), train, test), args.rerun)
        for m in args.models
    }
    per_iter = {m: r["train_s"] / r["iterations"] for m, r in equal_iters.items()}
    fastest = min(per_iter, key=per_iter.get)
    budget = equal_iters[fastest]["train_s"]
    equal_time = {}
    for m in args.models:
        if m == fastest:
            equal_time[m] = equal_iters[m]
            continue
        iters = max(1, int(budget / per_iter[m]))
        equal_time[m] = train_timed(
            model_cfg(m, args, iters, 0, os.path.join(out, f"{m}_equal_time"), train, test), args.rerun
        )

    iterations = sorted({it for r in equal_iters.values() for it, _, _ in r["curve"]})
    rows = [
        [it] + [next((f"{ap:.1f}" for i, ap, _ in equal_iters[m]["curve"] if i == it), "-") for m in args.models]
        for it in iterations
    ]
    table = f"AP on shapes_val at equal iterations (schedule of {args.iters} iterations, seed {args.seed}):\n\n"
    table += format_table(["iteration"] + [f"{MODELS[m]} AP" for m in args.models], rows)
    rows = [
        [
            MODELS[m],
            f"{per_iter[m]:.3f}",
            f"{equal_iters[m]['curve'][-1][1]:.1f}",
            equal_time[m]["iterations"],
            round(equal_time[m]["train_s"]),
            f"{equal_time[m]['curve'][-1][1]:.1f}",
            f"{equal_time[m]['curve'][-1][2]:.1f}",
        ]
        for m in args.models
    ]
    table += (
        f"\n\nAP at equal wall time (budget: {MODELS[fastest]}'s {budget:.0f} s of training for "
        f"{args.iters} iterations; each model trained once more with a full schedule of the iterations that "
        "fit):\n\n"
    )
    table += format_table(
        ["model", "s / iteration", f"AP after {args.iters} it", "iterations in budget", "train time (s)", "AP", "AP50"],
        rows,
    )
    write_table(out, table)
    return equal_iters, equal_time


if __name__ == "__main__":
    main()
