#!/usr/bin/env python
"""Throughput of a config's training data pipeline by number of loader workers.

    python projects/benchmarks/data_pipeline.py [--config-file configs/shapes/centernet_r18_demo.yaml]
        [--workers 0 1 2] [--warmup 2] [--batches 50] [--batch B] [--output table.md] [KEY VALUE ...]

For each DATALOADER.NUM_WORKERS in ``--workers`` the training loader of the
config (centerx.engine.Trainer.build_train_loader: detectron2's training
loader with the mapper DATALOADER.TRAIN_MAPPER names, reading, decoding and
augmenting images, no model) is built and iterated: ``--warmup`` batches
untimed (the first one includes starting the workers), then ``--batches``
timed. Trailing ``KEY VALUE`` pairs override the config; ``--batch`` sets
SOLVER.IMS_PER_BATCH (default: the config's).

Reported per worker count: seconds to the first batch, seconds per batch,
images / s of the loader, images / s per worker (0 workers: the main process
does the work, counted as one) and images / s over the 0-worker loader's of
the same run.
"""

import argparse
import gc
import logging
import os
import sys
import time

from detectron2.utils.logger import setup_logger
from tabulate import tabulate

import centerx  # (registers everything)
from centerx.data.datasets import ensure_datasets
from centerx.engine import Trainer

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # projects/experiments.py
from experiments import report

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

logger = logging.getLogger("centerx.benchmarks")
DEFAULT_CONFIG = os.path.join(REPO, "configs", "shapes", "centernet_r18_demo.yaml")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", default=DEFAULT_CONFIG)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="DATALOADER.NUM_WORKERS values")
    p.add_argument("--warmup", type=int, default=2, help="untimed batches first (at least 1)")
    p.add_argument("--batches", type=int, default=50, help="timed batches per worker count")
    p.add_argument("--batch", type=int, default=0, help="SOLVER.IMS_PER_BATCH (0: the config's)")
    p.add_argument("--output", default="", help="also write the markdown table to this file")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p.parse_args(argv)


def load_cfg(args):
    """The config with ``--batch`` and the user's overrides."""
    cfg = centerx.get_centerx_cfg()
    cfg.merge_from_file(args.config_file)
    if args.batch:
        cfg.merge_from_list(["SOLVER.IMS_PER_BATCH", args.batch])
    cfg.merge_from_list(args.opts)
    return cfg


def measure(cfg, workers: int, warmup: int, batches: int) -> dict:
    """Iterate the training loader of ``cfg`` with ``workers`` workers: one table row."""
    cfg = cfg.clone()
    cfg.DATALOADER.NUM_WORKERS = workers
    loader = Trainer.build_train_loader(cfg)
    start = time.perf_counter()
    it = iter(loader)
    next(it)
    first = time.perf_counter() - start
    for _ in range(warmup - 1):
        next(it)
    images = 0
    start = time.perf_counter()
    for _ in range(batches):
        images += len(next(it))
    seconds = time.perf_counter() - start
    del it, loader
    gc.collect()
    row = {
        "workers": workers,
        "batch": cfg.SOLVER.IMS_PER_BATCH,
        "batches": batches,
        "first_batch_s": first,
        "s_per_batch": seconds / batches,
        "images_per_s": images / seconds,
        "images_per_s_per_worker": images / seconds / max(workers, 1),
    }
    logger.info(f"{workers} workers: {row['images_per_s']:.1f} images / s, first batch after {first:.1f} s")
    return row


def add_ratios(rows: list[dict]) -> None:
    """Set each row's ``vs_main``: its images / s over the 0-worker row's (None without one)."""
    main_process = next((r["images_per_s"] for r in rows if r["workers"] == 0), None)
    for r in rows:
        r["vs_main"] = r["images_per_s"] / main_process if main_process else None


def format_table(rows: list[dict]) -> str:
    """Rows -> markdown table."""
    table = [
        [
            r["workers"] or "0 (main process)",
            f"{r['first_batch_s']:.2f}",
            f"{r['s_per_batch']:.3f}",
            f"{r['images_per_s']:.1f}",
            f"{r['images_per_s_per_worker']:.1f}",
            "" if r["vs_main"] is None else f"{r['vs_main']:.2f}",
        ]
        for r in rows
    ]
    return tabulate(
        table,
        headers=["workers", "first batch s", "s / batch", "images/s", "images/s per worker", "/ 0 workers"],
        tablefmt="pipe",
        disable_numparse=True,
        colalign=("left",) + ("right",) * 5,
    )


def main(argv=None) -> list[dict]:
    """Measure, print the table (and write it to ``--output``); returns the rows."""
    args = parse_args(argv)
    if args.warmup < 1 or args.batches < 1 or min(args.workers) < 0:
        raise SystemExit("--warmup and --batches must be >= 1, --workers >= 0.")
    setup_logger(name="centerx")
    cfg = load_cfg(args)
    ensure_datasets(cfg.DATASETS.TRAIN)
    rows = [measure(cfg, w, args.warmup, args.batches) for w in args.workers]
    add_ratios(rows)
    settings = (
        f"{os.path.relpath(args.config_file, REPO)}, {', '.join(cfg.DATASETS.TRAIN)}, batch "
        f"{cfg.SOLVER.IMS_PER_BATCH}, {cfg.INPUT.TRAIN_SIZE} px, mapper {cfg.DATALOADER.TRAIN_MAPPER}, "
        f"{args.warmup} warm-up + {args.batches} timed batches, {os.cpu_count()} CPU cores"
    )
    report(f"Data pipeline throughput ({settings}):", format_table(rows), args.output)
    return rows


if __name__ == "__main__":
    main()
