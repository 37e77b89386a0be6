#!/usr/bin/env python
"""Training throughput of CenterNet-R18 and TTFNet-R18 against detectron2's
RetinaNet-R18-FPN, on the same batches, in FP32 and with mixed precision.

    python projects/benchmarks/train_throughput.py [--size 512] [--batch 32] [--iters 20] [--warmup 5]
        [--amp {off,on,both}] [--models centernet ttfnet retinanet] [--distinct-batches 4]
        [--threads N] [--output table.md] [KEY VALUE ...]

Models:

- CenterNet-R18 / TTFNet-R18: configs/shapes/centernet_r18_demo.yaml and
  ttfnet_r18_demo.yaml (4 classes; TTFNet with plain convs), MODEL.DEVICE
  cuda when available, else cpu. Trailing ``KEY VALUE`` pairs override both
  configs (MODEL.DEVICE, DATASETS.TRAIN, ...).
- RetinaNet-R18-FPN: detectron2's COCO-Detection/retinanet_R_50_FPN_1x.yaml
  with RESNETS.DEPTH 18 and RES2_OUT_CHANNELS 64 (as projects/speedup/latency_vs_retinanet.py
  builds it), RETINANET.NUM_CLASSES, MODEL.DEVICE and the pixel mean / std of
  the CenterNet config. As in detectron2's model zoo it trains with frozen
  BatchNorm and a frozen stem and res2 (BACKBONE.FREEZE_AT 2), whereas the
  centerX ResNets train every layer with BatchNorm.

Data: ``--distinct-batches`` batches of ``--batch`` images of DATASETS.TRAIN
(default shapes_train) through centerX's CenterNetDatasetMapper with
INPUT.TRAIN_SIZE ``--size`` (random scale, then a ``size`` x ``size`` crop or
pad), mapped once with a fixed seed before any model is built and cycled by
every model, so every model trains on the very same images and boxes.

Each model (randomly initialised, seeded) is put in training mode with the
optimizer of centerx.engine.build_optimizer for its config (SGD for RetinaNet,
Adam for the demo configs) and runs ``--warmup`` untimed then ``--iters``
timed steps of forward -> sum of the losses -> backward -> optimizer step. AMP
steps are detectron2's AMPTrainer steps (float16 autocast around the forward
and the loss sum, GradScaler around backward and step); they need CUDA and are
skipped on a CPU. Steps are timed with torch.cuda.synchronize on a GPU.

Reported per model and AMP mode: images / s (batch x iters / timed seconds),
seconds / iteration, peak memory (GPU: torch.cuda.max_memory_allocated,
reset before each model is built; CPU: peak resident set size of the process
during the model's build and steps minus its resident size before, in MiB),
and images / s divided by RetinaNet-R18-FPN's in the same AMP mode of the
same run.
"""

import argparse
import ctypes
import gc
import logging
import os
import re
import resource
import sys
import time

import torch
from detectron2 import model_zoo
from detectron2.data import get_detection_dataset_dicts
from detectron2.modeling import build_model
from detectron2.utils.env import seed_all_rng
from detectron2.utils.events import EventStorage
from detectron2.utils.logger import setup_logger
from tabulate import tabulate

import centerx  # (registers everything)
from centerx.config import check_config, exit_on_config_error, load_config
from centerx.data import CenterNetDatasetMapper
from centerx.data.datasets import ensure_datasets
from centerx.engine import build_optimizer

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # projects/experiments.py
from experiments import report

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

logger = logging.getLogger("centerx.benchmarks")
MODELS = {
    "centernet": ("CenterNet-R18", os.path.join(REPO, "configs", "shapes", "centernet_r18_demo.yaml")),
    "ttfnet": ("TTFNet-R18", os.path.join(REPO, "configs", "shapes", "ttfnet_r18_demo.yaml")),
    "retinanet": ("RetinaNet-R18-FPN", "COCO-Detection/retinanet_R_50_FPN_1x.yaml"),
}
RETINANET_R18 = ["MODEL.RESNETS.DEPTH", 18, "MODEL.RESNETS.RES2_OUT_CHANNELS", 64, "MODEL.WEIGHTS", ""]
AMP_MODES = {"off": [False], "on": [True], "both": [False, True]}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=512, help="square training input side in pixels (multiple of 32)")
    p.add_argument("--batch", type=int, default=32, help="images per iteration")
    p.add_argument("--iters", type=int, default=20, help="timed iterations per model and AMP mode")
    p.add_argument("--warmup", type=int, default=5, help="untimed iterations before timing")
    p.add_argument(
        "--amp",
        choices=sorted(AMP_MODES),
        default="both",
        help="FP32 steps (off), mixed-precision steps (on, CUDA only) or both",
    )
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--distinct-batches", type=int, default=4, help="batches mapped once and cycled by every model")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="PyTorch CPU threads")
    p.add_argument("--seed", type=int, default=0, help="seed of the data augmentation and of the weights")
    p.add_argument("--output", default="", help="also write the markdown table to this file")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides of the centerX configs")
    return p.parse_args(argv)


def centerx_cfg(config_file: str, args):
    """A demo config at ``--size`` on the default device, with the user's overrides,
    checked as train_net.py checks its config (keys and values)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        cfg = load_config(config_file, ["MODEL.DEVICE", device, "INPUT.TRAIN_SIZE", args.size, *args.opts])
    except ValueError as e:
        raise SystemExit(str(e)) from None
    check_config(cfg)
    return cfg


def retinanet_cfg(data_cfg):
    """detectron2's RetinaNet-R18-FPN with the classes, device and pixel
    normalisation of the CenterNet config ``data_cfg``."""
    cfg = centerx.get_centerx_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(MODELS["retinanet"][1]))
    cfg.merge_from_list(
        RETINANET_R18
        + [
            "MODEL.RETINANET.NUM_CLASSES",
            data_cfg.MODEL.CENTERNET.NUM_CLASSES,
            "MODEL.DEVICE",
            data_cfg.MODEL.DEVICE,
            "MODEL.PIXEL_MEAN",
            list(data_cfg.MODEL.PIXEL_MEAN),
            "MODEL.PIXEL_STD",
            list(data_cfg.MODEL.PIXEL_STD),
            "INPUT.FORMAT",
            data_cfg.INPUT.FORMAT,
        ]
    )
    return cfg


def build_batches(cfg, batch: int, count: int, seed: int) -> list[list[dict]]:
    """``count`` lists of ``batch`` training dicts of DATASETS.TRAIN mapped by
    CenterNetDatasetMapper (images [3, S, S] uint8, S = INPUT.TRAIN_SIZE), in
    dataset order (cycled if too short), augmentation seeded with ``seed``."""
    ensure_datasets(cfg.DATASETS.TRAIN)
    dicts = get_detection_dataset_dicts(cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS)
    mapper = CenterNetDatasetMapper(cfg)
    seed_all_rng(seed)
    mapped, i = [], 0
    while len(mapped) < batch * count:
        if i >= 2 * len(dicts) and not mapped:
            raise RuntimeError(f"No image of {cfg.DATASETS.TRAIN} could be read.")
        out = mapper(dicts[i % len(dicts)])
        i += 1
        if out is not None:
            mapped.append(out)
    return [mapped[k * batch : (k + 1) * batch] for k in range(count)]


def _malloc_trim() -> None:
    """Give freed heap memory back to the OS (glibc), so that resident sizes
    measured afterwards do not count what the previous model freed."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M).group(1))


class PeakMemory:
    """Peak memory of what runs between :meth:`start` and :meth:`mib`.

    GPU: torch.cuda.max_memory_allocated since start. CPU: peak resident set
    size minus the resident size at start; the peak is reset at start through
    /proc/self/clear_refs on Linux; where that is refused, the process's
    lifetime peak (getrusage) is used, and only growth beyond earlier peaks shows.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.resettable = device.type != "cuda" and self._reset_rss_peak()
        if device.type == "cuda":
            self.label = "peak GPU memory MiB"
        elif self.resettable:
            self.label = "peak RSS growth MiB (CPU)"
        else:
            self.label = "process peak RSS growth MiB (CPU, lifetime peak)"
        self.baseline_kib = 0

    @staticmethod
    def _reset_rss_peak() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    def start(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        _malloc_trim()
        if self.resettable:
            self.baseline_kib = _proc_status_kib("VmRSS")
            self._reset_rss_peak()
        else:
            self.baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def mib(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        peak = _proc_status_kib("VmHWM") if self.resettable else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return max(0, peak - self.baseline_kib) / 1024


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_training(model, optimizer, batches, iters: int, warmup: int, amp: bool) -> list[float]:
    """Run ``warmup`` + ``iters`` training steps cycling through ``batches``;
    returns the wall time of each timed step in seconds."""
    device = next(model.parameters()).device
    scaler = torch.amp.GradScaler(device.type) if amp else None
    times = []
    with EventStorage(0) as storage:
        for i in range(warmup + iters):
            storage.iter = i
            data = [dict(d) for d in batches[i % len(batches)]]
            _sync(device)
            start = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                loss_dict = model(data)
                losses = sum(loss_dict.values())
            optimizer.zero_grad()
            if scaler is not None:
                scaler.scale(losses).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                losses.backward()
                optimizer.step()
            _sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    if not torch.isfinite(losses.detach()).all():
        logger.warning(f"The last loss was not finite ({ {k: float(v) for k, v in loss_dict.items()} }).")
    return times


def measure(cfg, name: str, batches, args, amp: bool, memory: PeakMemory) -> dict:
    """Build the model of ``cfg`` and its optimizer, train and time it: one table row."""
    memory.start()
    torch.manual_seed(args.seed)
    model = build_model(cfg)
    model.train()
    optimizer = build_optimizer(cfg, model)
    times = time_training(model, optimizer, batches, args.iters, args.warmup, amp)
    peak = memory.mib()
    del model, optimizer
    seconds = sum(times)
    row = {
        "model": name,
        "amp": "on" if amp else "off",
        "optimizer": cfg.SOLVER.OPTIMIZER.upper(),
        "device": cfg.MODEL.DEVICE,
        "batch": args.batch,
        "size": args.size,
        "iters": args.iters,
        "images_per_s": args.batch * len(times) / seconds,
        "s_per_iter": seconds / len(times),
        "peak_mib": peak,
    }
    logger.info(
        f"{name}, AMP {row['amp']}: {row['s_per_iter']:.3f} s / iteration, {row['images_per_s']:.1f} "
        f"images / s, {memory.label} {peak:.0f}"
    )
    return row


def add_ratios(rows: list[dict]) -> None:
    """Set each row's ``vs_retinanet``: its images / s over RetinaNet's in the same AMP mode (None without one)."""
    reference = {r["amp"]: r["images_per_s"] for r in rows if r["model"] == MODELS["retinanet"][0]}
    for r in rows:
        r["vs_retinanet"] = r["images_per_s"] / reference[r["amp"]] if r["amp"] in reference else None


def format_table(rows: list[dict], memory_label: str) -> str:
    """Rows -> markdown table."""
    table = [
        [
            r["model"],
            r["amp"],
            r["optimizer"],
            f"{r['images_per_s']:.2f}",
            f"{r['s_per_iter']:.3f}",
            f"{r['peak_mib']:.0f}",
            "" if r["vs_retinanet"] is None else f"{r['vs_retinanet']:.2f}",
        ]
        for r in rows
    ]
    return tabulate(
        table,
        headers=["model", "AMP", "optimizer", "images/s", "s / iteration", memory_label, "images/s / RetinaNet"],
        tablefmt="pipe",
        disable_numparse=True,
        colalign=("left",) * 3 + ("right",) * 4,
    )


@exit_on_config_error
def main(argv=None) -> list[dict]:
    """Measure, print the table (and write it to ``--output``); returns the rows."""
    args = parse_args(argv)
    if args.iters < 1 or args.warmup < 0 or args.batch < 1 or args.distinct_batches < 1:
        raise SystemExit("--iters, --batch and --distinct-batches must be >= 1, --warmup >= 0.")
    if args.size < 32 or args.size % 32:
        raise SystemExit(f"--size must be a positive multiple of 32 (the training input side), got {args.size}.")
    setup_logger(name="centerx")
    torch.set_num_threads(args.threads)
    data_cfg = centerx_cfg(MODELS["centernet"][1], args)
    device = torch.device(data_cfg.MODEL.DEVICE)
    amps = AMP_MODES[args.amp]
    if device.type != "cuda" and True in amps:
        print(f"AMP rows need CUDA: skipped on {device}.")
        amps = [a for a in amps if not a]
    batches = build_batches(data_cfg, args.batch, min(args.distinct_batches, args.warmup + args.iters), args.seed)
    cfgs = {
        key: retinanet_cfg(data_cfg) if key == "retinanet" else centerx_cfg(MODELS[key][1], args) for key in args.models
    }
    memory = PeakMemory(device)
    rows = [measure(cfgs[key], MODELS[key][0], batches, args, amp, memory) for amp in amps for key in args.models]
    add_ratios(rows)
    settings = (
        f"{data_cfg.MODEL.DEVICE}, {torch.get_num_threads()} CPU threads, batch {args.batch}, "
        f"{args.size}x{args.size} px, {args.warmup} warm-up + {args.iters} timed iterations, "
        f"{len(batches)} distinct batches of {', '.join(data_cfg.DATASETS.TRAIN)}"
    )
    report(f"Training throughput ({settings}):", format_table(rows, memory.label) if rows else "(no rows)", args.output)
    return rows


if __name__ == "__main__":
    main()
