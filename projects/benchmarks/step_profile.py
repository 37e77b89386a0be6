#!/usr/bin/env python
"""Where the time of one training step goes: data, targets, forward, backward,
optimizer, hooks.

    python projects/benchmarks/step_profile.py [--config-file configs/shapes/ttfnet_r18_demo.yaml]
        [--warmup 5] [--iters 30] [--output table.md] [KEY VALUE ...]

The trainer of the config (centerx.engine.Trainer: the model, optimizer, data
loader, mixed precision and hooks a real run uses) is built, then each step is
run by hand, phase by phase, with a clock around each:

- data: waiting for the next batch from the training loader (with
  DATALOADER.NUM_WORKERS 0, the reading, decoding and augmenting themselves);
- preprocess: normalising and padding the batch (the model's preprocess_image);
- network forward: backbone, upsampler and heads (the model's predict);
- targets: padding the ground truth and building the targets (the
  meta-architecture's batch_ground_truth and target builder, timed by wrapping
  them where the meta-architecture module looks them up);
- losses: the rest of the model's ``losses`` (the loss functions);
- backward, optimizer step, and the trainer's hooks (LR scheduler, timers,
  metric writers, EMA, checkpointer).

The forward, targets and losses run under the trainer's autocast when
SOLVER.AMP.ENABLED (bfloat16 on a CPU with native bfloat16, as the trainer
does). ``--warmup`` steps are untimed, ``--iters`` timed. Trailing ``KEY VALUE``
pairs override the config. Printed: ms per step and share of the total per
phase, the measured step time and images / s.
"""

import argparse
import contextlib
import logging
import os
import sys
import tempfile
import time
from collections import defaultdict

import torch
from detectron2.utils.events import EventStorage
from detectron2.utils.logger import setup_logger
from tabulate import tabulate

import centerx.modeling.meta_arch.centernet as centernet_module
import centerx.modeling.meta_arch.ttfnet as ttfnet_module
from centerx.config import check_config, exit_on_config_error, load_config
from centerx.data.datasets import ensure_datasets
from centerx.engine import Trainer
from centerx.engine.amp import CPUAutocastTrainer

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # projects/experiments.py
from experiments import report

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

logger = logging.getLogger("centerx.benchmarks")
DEFAULT_CONFIG = os.path.join(REPO, "configs", "shapes", "ttfnet_r18_demo.yaml")
PHASES = ("data", "preprocess", "network forward", "targets", "losses", "backward", "optimizer", "hooks")
TARGET_FUNCTIONS = {
    centernet_module: ("batch_ground_truth", "centernet_targets"),
    ttfnet_module: ("batch_ground_truth", "ttfnet_targets"),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", default=DEFAULT_CONFIG)
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    p.add_argument("--iters", type=int, default=30, help="timed steps")
    p.add_argument("--output", default="", help="also write the markdown table to this file")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p.parse_args(argv)


def time_target_builders(clock):
    """Wrap the target functions where the meta-architectures look them up, so
    that their time goes to ``clock["targets"]``."""
    for module, names in TARGET_FUNCTIONS.items():
        for name in names:
            fn = getattr(module, name)

            def timed(*args, _fn=fn, **kwargs):
                t = time.perf_counter()
                out = _fn(*args, **kwargs)
                clock["targets"] += time.perf_counter() - t
                return out

            setattr(module, name, timed)


def profile(trainer: Trainer, warmup: int, iters: int):
    """Run ``warmup + iters`` steps of ``trainer`` phase by phase.

    Returns:
        (seconds per phase summed over the timed steps, wall seconds of the timed steps).
    """
    model, optimizer = trainer.unwrapped_model, trainer.optimizer
    autocast = (
        torch.autocast("cpu", dtype=trainer._trainer.precision)
        if isinstance(trainer._trainer, CPUAutocastTrainer)
        else contextlib.nullcontext()
    )
    clock = defaultdict(float)
    time_target_builders(clock)
    loader = iter(trainer.data_loader)
    with EventStorage(0) as storage:
        trainer.storage = storage
        trainer.before_train()
        for i in range(warmup + iters):
            if i == warmup:
                clock.clear()
                start = time.perf_counter()
            trainer.iter = storage.iter = i
            trainer.before_step()
            t0 = time.perf_counter()
            data = next(loader)
            t1 = time.perf_counter()
            with autocast:
                images = model.preprocess_image(data)
                t2 = time.perf_counter()
                outputs = model.predict(images.tensor)
                t3 = time.perf_counter()
                targets_before = clock["targets"]
                losses = model.losses(outputs, [x["instances"] for x in data])
                t4 = time.perf_counter()
            loss = sum(losses.values())
            optimizer.zero_grad()
            loss.backward()
            t5 = time.perf_counter()
            optimizer.step()
            t6 = time.perf_counter()
            storage.put_scalars(total_loss=float(loss))
            trainer.after_step()
            t7 = time.perf_counter()
            for name, dt in zip(
                ("data", "preprocess", "network forward", "backward", "optimizer", "hooks"),
                (t1 - t0, t2 - t1, t3 - t2, t5 - t4, t6 - t5, t7 - t6),
            ):
                clock[name] += dt
            clock["losses"] += (t4 - t3) - (clock["targets"] - targets_before)
        wall = time.perf_counter() - start
    return clock, wall


def profile_config(cfg, warmup: int, iters: int):
    """:func:`profile` on the trainer a real run of ``cfg`` builds (no evaluation,
    no checkpoint, its logs in a temporary folder, nothing kept).

    Returns:
        (seconds per phase, wall seconds of the timed steps, the trainer's class name).
    """
    cfg = cfg.clone()
    cfg.defrost()
    cfg.TEST.EVAL_PERIOD = 0
    cfg.SOLVER.CHECKPOINT_PERIOD = 10**9
    ensure_datasets(list(cfg.DATASETS.TRAIN))
    with tempfile.TemporaryDirectory(prefix="step_profile_") as scratch:
        cfg.OUTPUT_DIR = scratch
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=False)
        clock, wall = profile(trainer, warmup, iters)
    return clock, wall, type(trainer._trainer).__name__


@exit_on_config_error
def main(args):
    """Profile, print the table; returns ({phase: ms per step}, measured ms per step)."""
    if args.iters < 1 or args.warmup < 0:
        raise SystemExit(f"--iters must be at least 1 and --warmup at least 0; got {args.iters}, {args.warmup}.")
    setup_logger(name="centerx")
    try:  # the keys and values train_net.py accepts, checked as it checks them
        cfg = load_config(args.config_file, args.opts)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"--config-file {args.config_file}: {e}") from None
    check_config(cfg)
    clock, wall, trainer_name = profile_config(cfg, args.warmup, args.iters)
    total = sum(clock[p] for p in PHASES)
    rows = [[p, f"{1000 * clock[p] / args.iters:.1f}", f"{100 * clock[p] / total:.1f}"] for p in PHASES]
    rows.append(["sum", f"{1000 * total / args.iters:.1f}", "100.0"])
    batch = cfg.SOLVER.IMS_PER_BATCH
    title = (
        f"Training step of {os.path.relpath(args.config_file, REPO)} {' '.join(args.opts)}: batch {batch} at "
        f"{cfg.INPUT.TRAIN_SIZE} px, {trainer_name}, channels-last "
        f"{cfg.MODEL.CENTERX.CHANNELS_LAST}, {cfg.DATALOADER.NUM_WORKERS} loader workers, "
        f"{torch.get_num_threads()} threads; {args.iters} steps after {args.warmup} untimed: "
        f"{wall / args.iters:.3f} s / step, {batch * args.iters / wall:.1f} images / s"
    )
    report(
        title,
        tabulate(
            rows,
            headers=["phase", "ms / step", "% of step"],
            tablefmt="github",
            disable_numparse=True,
            colalign=("left", "right", "right"),
        ),
        args.output,
    )
    return {p: 1000 * clock[p] / args.iters for p in PHASES}, 1000 * wall / args.iters


if __name__ == "__main__":
    main(parse_args())
