#!/usr/bin/env python
"""One table per model: every export format's file size, latency, throughput and AP,
with the timing scope measured stage by stage (``./run.sh benchmark``).

    ./run.sh benchmark MODEL.WEIGHTS output/ttfnet_r18_demo/model_final.pth
    ./run.sh benchmark --config-file CFG --formats pytorch onnx openvino --batch 8 --reps 30 MODEL.WEIGHTS ...

For each ``--formats`` entry (default: pytorch and every registered export format
whose runtime is installed here: torchscript, onnx, onnx-int8, openvino; caffe
for CenterNet; tensorrt with a GPU), the model (MODEL.WEIGHTS, loaded strictly)
is exported with centerx.deploy.exporters into ``--output`` and run by its
runtime (centerx.deploy.runtimes), exactly as ``./run.sh predict --runtime``
runs it. Columns:

- size: the files the runtime loads (weights included), MiB;
- latency: median and 90th percentile, in ms per batch of ``--batch`` images,
  over ``--reps`` timed runs after ``--warmup`` untimed ones, of the whole path
  an application calls: pre-processing (letterbox to EXPORT.INPUT_SIZE,
  normalisation is in the graph), network (the graph: backbone, heads, peak
  masking and, for decoded graphs, top-K decode), decode (raw graphs only: the
  detector's decode in PyTorch), post-processing (score threshold, boxes back to
  image pixels); the median of each stage is printed below the table;
- throughput: images per second over the timed runs;
- AP: COCO box AP on ``--dataset`` (default DATASETS.TEST[0]; ``--ap-images N``
  for its first N images, 0 to skip), images run one at a time.

Timed on ``--images`` images of the dataset (BGR, as read from disk), with
``--threads`` CPU threads for PyTorch, ONNX Runtime and OpenVINO. Speed ratios
to the backbone alone and to detectron2's RetinaNet-R18-FPN on the same
runtimes: projects/speedup/latency_vs_retinanet.py.
"""

import argparse
import importlib.util
import logging
import os
import statistics
import sys
import time

import cv2
import numpy as np
import torch
from detectron2.data import DatasetCatalog
from detectron2.utils.logger import setup_logger
from tabulate import tabulate

import centerx
from centerx.checkpoint import WEIGHTS_ERRORS
from centerx.config import exit_on_config_error, load_config
from centerx.deploy.evaluation import evaluate_runtime, resolve_dataset
from centerx.deploy.exporters import export, exporter_formats, get_exporter
from centerx.deploy.runtimes import TorchRuntime, build_runtime, get_runtime
from centerx.plugins import PluginImportError, add_imports_argument, preimport

logger = logging.getLogger("centerx.benchmark")
STAGES = ("pre-processing", "network", "decode", "post-processing")


# flags of the latency comparison with RetinaNet, which this file's name meant before 0.2.0
LATENCY_FLAGS = ("--models", "--runtimes", "--batches", "--size")


def parse_args(argv=None):
    given = sys.argv[1:] if argv is None else list(argv)
    old = [flag for flag in LATENCY_FLAGS if flag in given]
    if old and "--config-file" not in given:
        raise SystemExit(
            f"{' '.join(old)}: the latency comparison with RetinaNet is projects/speedup/latency_vs_retinanet.py "
            "since 0.2.0; this script (./run.sh benchmark) is the per-format table of one model (--config-file)."
        )
    preimport(argv)  # a user's module may register formats
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument(
        "--formats",
        nargs="+",
        choices=["pytorch"] + exporter_formats(),
        help="default: pytorch and every format whose runtime is available here",
    )
    p.add_argument("--batch", type=int, default=1, help="images per run")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--reps", type=int, default=50, help="timed runs per format")
    p.add_argument("--images", type=int, default=16, help="dataset images cycled through the timed runs")
    p.add_argument("--dataset", metavar="NAME", help="registered dataset (default DATASETS.TEST[0])")
    p.add_argument("--ap-images", type=int, default=-1, help="images of the dataset for AP (-1: all, 0: no AP)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads of every runtime")
    p.add_argument("--output", metavar="DIR", help="exported files and table.md (default OUTPUT_DIR/benchmark)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE pairs")
    add_imports_argument(p)
    args = p.parse_args(argv)
    late = [token for token in args.opts if token.startswith("--")]
    if late:
        p.error(f"{late[0]} came after the KEY VALUE overrides; put every --flag before them")
    for flag, value, least in (
        ("--batch", args.batch, 1),
        ("--reps", args.reps, 1),
        ("--images", args.images, 1),
        ("--threads", args.threads, 1),
        ("--warmup", args.warmup, 0),
        ("--ap-images", args.ap_images, -1),
    ):
        if value < least:
            p.error(f"{flag} must be at least {least}, got {value}")
    return args


def available_formats(cfg) -> list[str]:
    """pytorch and the registered formats whose exporter takes this model here
    (``Exporter.unsupported``) and whose runtime's packages are installed
    (``Runtime.requires``); each one left out is logged with the reason."""
    formats = ["pytorch"]
    for fmt in exporter_formats():
        exporter = get_exporter(fmt)
        missing = [
            p
            for p in (get_runtime(exporter.runtime).requires if exporter.runtime else ())
            if importlib.util.find_spec(p) is None
        ]
        if not exporter.runtime:
            reason = "no runtime runs it"
        elif exporter.unsupported(cfg):
            reason = exporter.unsupported(cfg)
        elif missing:
            reason = f"{', '.join(missing)} is not installed"
        else:
            formats.append(fmt)
            continue
        logger.info(f"--format {fmt} left out: {reason}.")
    return formats


def files_size(path: str) -> float:
    """MiB of the file and its companions (.bin of an OpenVINO .xml, .caffemodel of a .prototxt)."""
    stem, ext = os.path.splitext(path)
    companions = {".xml": [".bin"], ".prototxt": [".caffemodel"]}.get(ext, [])
    return sum(os.path.getsize(p) for p in [path] + [stem + c for c in companions] if os.path.exists(p)) / 2**20


def time_stages(runtime, images: list[np.ndarray], batch: int, warmup: int, reps: int) -> dict[str, list[float]]:
    """Seconds of each stage and in total, per timed run."""
    times = {stage: [] for stage in STAGES + ("total",)}
    for rep in range(warmup + reps):
        chosen = [images[(rep * batch + i) % len(images)] for i in range(batch)]
        t0 = time.perf_counter()
        letterboxed, scales = runtime.letterbox(chosen)
        t1 = time.perf_counter()
        out = runtime.run(letterboxed)
        t2 = time.perf_counter()
        det = runtime.decode(out)
        t3 = time.perf_counter()
        runtime.postprocess(det, scales, chosen)
        t4 = time.perf_counter()
        if rep >= warmup:
            for stage, (a, b) in zip(STAGES, ((t0, t1), (t1, t2), (t2, t3), (t3, t4))):
                times[stage].append(b - a)
            times["total"].append(t4 - t0)
    return times


@exit_on_config_error
def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logger(name="centerx")
    torch.set_num_threads(args.threads)
    try:
        cfg = load_config(args.config_file, args.opts, args.imports)
    except PluginImportError as e:
        raise SystemExit(str(e)) from None
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"--config-file {args.config_file}: {e}") from None
    cfg.freeze()
    if not cfg.MODEL.WEIGHTS:
        raise SystemExit(
            "MODEL.WEIGHTS is empty: the benchmark measures a trained model; give its checkpoint, e.g. "
            "MODEL.WEIGHTS output/ttfnet_r18_demo/model_final.pth"
        )
    centerx.register_config_datasets(cfg)
    dataset = resolve_dataset(cfg, args.dataset)
    images = timing_images(DatasetCatalog.get(dataset), args.images, dataset)
    out_dir = args.output or os.path.join(cfg.OUTPUT_DIR, "benchmark")
    formats = args.formats or available_formats(cfg)
    rows, scopes, failed = [], [], []
    for fmt in formats:
        try:
            if fmt == "pytorch":
                weights = os.path.expanduser(cfg.MODEL.WEIGHTS)
                runtime, size = TorchRuntime(cfg), files_size(weights) if os.path.isfile(weights) else float("nan")
            else:
                path = export(cfg, fmt, os.path.join(out_dir, fmt))
                runtime, size = build_runtime(get_exporter(fmt).runtime, cfg, path, args.threads), files_size(path)
            times = time_stages(runtime, images, args.batch, args.warmup, args.reps)
            ap: float | None = None
            if args.ap_images != 0:
                ap = evaluate_runtime(runtime, dataset, None if args.ap_images < 0 else args.ap_images)["AP"]
        except WEIGHTS_ERRORS as e:
            raise SystemExit(f"MODEL.WEIGHTS {cfg.MODEL.WEIGHTS!r}: {e}") from e
        except Exception as e:  # a format that fails here is a row saying why, the others still run
            logger.warning(f"{fmt}: not measured ({type(e).__name__}: {e})")
            rows.append([fmt, "-", "-", "-", "-", "-", f"failed: {type(e).__name__}"])
            failed.append(fmt)
            continue
        total = np.asarray(times["total"]) * 1000
        rows.append(
            [
                fmt,
                f"{size:.1f}",
                f"{np.median(total):.1f}",
                f"{np.percentile(total, 90):.1f}",
                f"{args.batch * len(total) / (total.sum() / 1000):.1f}",
                "-" if ap is None else f"{ap:.1f}",
                "",
            ]
        )
        scopes.append(f"{fmt}: " + ", ".join(f"{s} {1000 * statistics.median(times[s]):.2f} ms" for s in STAGES))
        logger.info(f"{fmt}: {np.median(total):.1f} ms per batch of {args.batch}")
    size = tuple(cfg.EXPORT.INPUT_SIZE)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    header = (
        f"{cfg.MODEL.META_ARCHITECTURE} ({os.path.basename(args.config_file)}), input {size[0]} x {size[1]}, "
        f"batch {args.batch}, {args.threads} threads, {device}; latency over {args.reps} runs; AP on {dataset}"
    )
    table = tabulate(
        rows,
        headers=["format", "size MiB", "latency ms (median)", "latency ms (p90)", "images / s", "AP", "note"],
        tablefmt="github",
        disable_numparse=True,
        colalign=("left",) + ("right",) * 5 + ("left",),
    )
    text = header + "\n\n" + table + "\n\nTiming scope, median per batch:\n" + "\n".join(f"- {s}" for s in scopes)
    print("\n" + text)
    os.makedirs(out_dir, exist_ok=True)
    table_file = os.path.join(out_dir, "table.md")
    with open(table_file, "w") as f:
        f.write(text + "\n")
    if failed:
        logger.error(
            f"{len(failed)} of {len(formats)} formats failed ({', '.join(failed)}); the reasons are logged "
            f"above and the table is in {table_file}."
        )
        return 1
    return 0


def timing_images(records: list[dict], count: int, dataset: str) -> list[np.ndarray]:
    """The first ``count`` readable images of ``records`` (BGR); unreadable ones are
    skipped and counted in the log; none readable stops the benchmark."""
    images, skipped = [], []
    for record in records:
        if len(images) == count:
            break
        image = cv2.imread(record["file_name"], cv2.IMREAD_COLOR)
        if image is None:
            skipped.append(record["file_name"])
        else:
            images.append(image)
    if skipped:
        logger.warning(
            f"Dataset '{dataset}': {len(skipped)} unreadable images skipped for timing "
            f"({', '.join(skipped[:3])}{' ...' if len(skipped) > 3 else ''})."
        )
    if not images:
        raise SystemExit(
            f"Dataset '{dataset}' has no readable image to time the formats on"
            + (f" (e.g. {skipped[0]} cannot be read)." if skipped else ".")
        )
    return images


if __name__ == "__main__":
    sys.exit(main())
