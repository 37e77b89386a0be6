#!/usr/bin/env python
"""Target-generation time per image of CenterNet and TTFNet, with 1, 20 and 100 objects.

    python projects/benchmarks/target_generation.py [--size 512] [--batch 32] [--objects 1 20 100]
        [--iters 20] [--warmup 3] [--device cuda|cpu] [--threads N] [--output table.md]

What is timed is what a training step does before the losses
(``model.losses``): the batch's ground truth, given as host ``Instances`` as the
data loader delivers them, padded and its splat window sized on the host
(:func:`centerx.modeling.targets.batch_ground_truth`), moved to the device,
then the targets built there (:func:`centernet_targets` /
:func:`ttfnet_targets`) at output stride 4 of a ``--size`` x ``--size`` input.
Boxes are drawn uniformly: centres anywhere in the image, sides from 8 px to
half the image. Times are per image (batch time / ``--batch``), measured with
torch.cuda.synchronize on a GPU. Goal: under 1 ms per image on the device
that builds the targets.
"""

import argparse
import os
import sys
import time

import numpy as np
import torch
from detectron2.structures import Boxes, Instances

from centerx.modeling.targets import (
    batch_ground_truth,
    centernet_targets,
    centernet_window,
    ttfnet_targets,
    ttfnet_window,
)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # projects/experiments.py
from experiments import report

STRIDE = 4
NUM_CLASSES = 80


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=512, help="input size in pixels (square)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--objects", type=int, nargs="+", default=[1, 20, 100], help="objects per image")
    p.add_argument("--iters", type=int, default=20, help="timed batches per setting")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default="", help="also write the table to this markdown file")
    return p.parse_args(argv)


def random_batch(rng: np.random.Generator, batch: int, objects: int, size: int) -> list[Instances]:
    """``batch`` host Instances with ``objects`` random boxes each (input pixels)."""
    out = []
    for _ in range(batch):
        centre = rng.uniform(0, size, (objects, 2))
        wh = rng.uniform(8, size / 2, (objects, 2))
        boxes = np.clip(np.concatenate([centre - wh / 2, centre + wh / 2], 1), 0, size)
        out.append(
            Instances(
                (size, size),
                gt_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32)),
                gt_classes=torch.tensor(rng.integers(0, NUM_CLASSES, objects)),
            )
        )
    return out


def build_centernet(gt, device, size):
    cells = (size // STRIDE, size // STRIDE)
    boxes, classes, _, window = batch_ground_truth(gt, device, lambda b, c: centernet_window(b, c, STRIDE, cells))
    return centernet_targets(boxes, classes, NUM_CLASSES, cells, STRIDE, window=window)


def build_ttfnet(gt, device, size):
    cells = (size // STRIDE, size // STRIDE)
    boxes, classes, _, window = batch_ground_truth(gt, device, lambda b, c: ttfnet_window(b, c, STRIDE, cells))
    return ttfnet_targets(boxes, classes, NUM_CLASSES, cells, STRIDE, window=window)


BUILDERS = {"CenterNet": build_centernet, "TTFNet": build_ttfnet}


def time_per_image(build, batches: list[list[Instances]], device: torch.device, size: int, warmup: int) -> float:
    """Mean milliseconds per image over ``batches`` after ``warmup`` untimed ones."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for gt in batches[:warmup]:
        build(gt, device, size)
    sync()
    start = time.perf_counter()
    for gt in batches[warmup:]:
        build(gt, device, size)
    sync()
    images = sum(len(gt) for gt in batches[warmup:])
    return (time.perf_counter() - start) * 1000 / images


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rng = np.random.default_rng(args.seed)
    rows = []
    for objects in args.objects:
        batches = [random_batch(rng, args.batch, objects, args.size) for _ in range(args.warmup + args.iters)]
        for name, build in BUILDERS.items():
            ms = time_per_image(build, batches, device, args.size, args.warmup)
            rows.append({"model": name, "objects": objects, "ms_per_image": ms})
    header = (
        f"Target generation on {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}"
        f", {torch.get_num_threads()} threads), {args.size} px input, batch {args.batch}, {NUM_CLASSES} classes"
    )
    lines = ["| model | objects / image | ms / image | goal < 1 ms |", "|:--|--:|--:|:--|"]
    lines += [
        f"| {r['model']} | {r['objects']} | {r['ms_per_image']:.3f} | {'yes' if r['ms_per_image'] < 1 else 'no'} |"
        for r in rows
    ]
    report(header, "\n".join(lines), args.output)
    return rows


if __name__ == "__main__":
    main()
