#!/usr/bin/env python
"""Convergence of CenterNet-R18 vs TTFNet-R18 on the shapes dataset.

Trains both demo configs (configs/shapes/centernet_r18_demo.yaml and
ttfnet_r18_demo.yaml: same input size, batch, optimizer, iterations and
schedule) with centerX's Trainer, evaluates COCO AP every ``--eval-period``
iterations and prints one table row per evaluation:

    python projects/convergence/compare_centernet_ttfnet.py                  # the demo schedule (400 it)
    python projects/convergence/compare_centernet_ttfnet.py --iters 2000 --eval-period 250
    python projects/convergence/compare_centernet_ttfnet.py --iters 20 --eval-period 10 \
        --train-images 16 --test-images 8 SOLVER.IMS_PER_BATCH 4 INPUT.TRAIN_SIZE 128

``--iters`` rescales the learning-rate steps and the warm-up with the iteration
count (any lr steps and the warm-up keep their fraction of training). Trailing ``KEY VALUE``
pairs override both configs alike.
"""
import argparse
import os
import sys
import time

from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import centerx  # noqa: E402  (registers everything)
from centerx.data.datasets import ensure_datasets  # noqa: E402
from centerx.engine import Trainer  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = {
    "CenterNet-R18": os.path.join(REPO, "configs", "shapes", "centernet_r18_demo.yaml"),
    "TTFNet-R18": os.path.join(REPO, "configs", "shapes", "ttfnet_r18_demo.yaml"),
}


def subset_dataset(name: str, num_images: int) -> str:
    """Register the first ``num_images`` images of dataset ``name`` under a new
    name (COCOEvaluator then builds its ground truth from these dicts)."""
    if num_images <= 0:
        return name
    new = f"{name}_first{num_images}"
    if new not in DatasetCatalog:
        DatasetCatalog.register(new, lambda: DatasetCatalog.get(name)[:num_images])
        MetadataCatalog.get(new).set(thing_classes=MetadataCatalog.get(name).thing_classes,
                                     evaluator_type="coco")
    return new


def build_cfg(config_file: str, args, output_dir: str):
    """The demo config with the experiment's iterations, evaluation period,
    datasets and the user's overrides."""
    cfg = centerx.add_centerx_config(get_cfg())
    cfg.merge_from_file(config_file)
    scale = args.iters / cfg.SOLVER.MAX_ITER
    cfg.merge_from_list([
        "SOLVER.MAX_ITER", args.iters,
        "SOLVER.STEPS", tuple(max(1, round(s * scale)) for s in cfg.SOLVER.STEPS),
        "SOLVER.WARMUP_ITERS", round(cfg.SOLVER.WARMUP_ITERS * scale),
        "SOLVER.CHECKPOINT_PERIOD", args.iters + 1,  # only model_final.pth
        "TEST.EVAL_PERIOD", args.eval_period,
        "DATASETS.TRAIN", (args.train_dataset,),
        "DATASETS.TEST", (args.test_dataset,),
        "OUTPUT_DIR", output_dir,
        "SEED", args.seed,
    ])
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    return cfg


def train_and_read_ap(cfg):
    """Train from scratch (seeded with cfg.SEED); returns ({iteration: bbox AP},
    training wall time in s, evaluations included)."""
    seed_all_rng(cfg.SEED)
    start = time.perf_counter()
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    elapsed = time.perf_counter() - start
    # The storage keeps every evaluation (metrics.json only the last one per write
    # period); periodic ones are stored at iteration - 1, the final one at MAX_ITER.
    history = trainer.storage.history("bbox/AP").values()
    return {min(it + 1, cfg.SOLVER.MAX_ITER): ap for ap, it in history}, elapsed


def format_table(results) -> str:
    """results: {method: ({iteration: AP}, seconds)} -> markdown table."""
    methods = list(results)
    iterations = sorted({it for ap, _ in results.values() for it in ap})
    lines = ["| iteration | " + " | ".join(f"{m} AP" for m in methods) + " |",
             "|---:|" + "---:|" * len(methods)]
    for it in iterations:
        cells = [f"{results[m][0][it]:.1f}" if it in results[m][0] else "-" for m in methods]
        lines.append(f"| {it} | " + " | ".join(cells) + " |")
    lines.append("| train time (s) | " + " | ".join(f"{results[m][1]:.0f}" for m in methods) + " |")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iters", type=int, default=400, help="training iterations of each model")
    p.add_argument("--eval-period", type=int, default=100, help="evaluate every this many iterations")
    p.add_argument("--train-dataset", default="shapes_train")
    p.add_argument("--test-dataset", default="shapes_val")
    p.add_argument("--train-images", type=int, default=0, help="use only the first N training images (0: all)")
    p.add_argument("--test-images", type=int, default=0, help="evaluate on the first N test images (0: all)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--output-dir", default="output/convergence")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides for both models")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    setup_logger(name="centerx")
    setup_logger(name="detectron2")
    ensure_datasets([args.train_dataset, args.test_dataset])
    args.train_dataset = subset_dataset(args.train_dataset, args.train_images)
    args.test_dataset = subset_dataset(args.test_dataset, args.test_images)
    results = {}
    for method, config_file in CONFIGS.items():
        cfg = build_cfg(config_file, args, os.path.join(args.output_dir, method))
        results[method] = train_and_read_ap(cfg)
    table = format_table(results)
    with open(os.path.join(args.output_dir, "table.md"), "w") as f:
        f.write(table + "\n")
    print(table)
    return results


if __name__ == "__main__":
    main()
