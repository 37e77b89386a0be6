#!/usr/bin/env python
"""Latency of several ONNX graphs in ONNX Runtime on the CPU, timed alternately in one
process so that what the machine does meanwhile (other jobs, frequency changes)
falls on all of them alike: per repetition, each graph runs once on the same input,
in turn. Batch 1, each graph's own input size (``--size`` when its input is dynamic).

    .venv/bin/python projects/benchmarks/onnx_latency.py --models output/ttfnet_nano_demo/deploy/model.onnx \\
        output/yolo_peer/runs/train/weights/best.onnx --size 256 --threads 2 --reps 100

Prints per graph the median and 90th percentile in ms and the ratio of medians to the
first graph (and writes the table to ``--output``). ``--runtimes onnxruntime openvino``
times every graph in OpenVINO too (the ONNX file converted in memory, FP32 inference
precision, ``--threads`` threads), in the same alternation: one row per graph and runtime,
ratios to the first graph in ONNX Runtime. The input is uniform noise in
0..255 for centerX's graphs (they normalise inside; their properties say centerX),
0..1 for others (YOLO's graphs take 0..1). ONNX Runtime's worker threads do not
spin between runs (``session.intra_op.allow_spinning`` 0): with several sessions
alternating, a spinning pool would hold the cores the next graph needs.
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort
from tabulate import tabulate

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # projects/experiments.py
from experiments import report


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", required=True, metavar="ONNX", help="the graphs; ratios are to the first")
    p.add_argument("--size", type=int, default=256, help="input side where a graph's input size is dynamic")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--reps", type=int, default=100, help="timed runs of each graph")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--runtimes", nargs="+", default=["onnxruntime"], choices=["onnxruntime", "openvino"], help="where each runs"
    )
    p.add_argument("--output", default="")
    args = p.parse_args(argv)
    for path in args.models:
        if not os.path.isfile(path):
            p.error(f"--models: {path} does not exist")
    return args


def session_and_input(path: str, size: int, threads: int, rng: np.random.Generator):
    """(ONNX Runtime session, its input name, a batch-1 input) for the graph at ``path``."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # idle threads sleep at once: spinning, one session's pool would take the cores from the next
    # session in the alternation (all graphs measured 1.7x slower at 512 px with four sessions)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return (session, *graph_input(session, size, rng))


def graph_input(session: ort.InferenceSession, size: int, rng: np.random.Generator) -> tuple[str, np.ndarray]:
    """(input name, a batch-1 input) of a session's graph: noise of its input shape, ``size``
    for a dynamic side, in 0..255 for centerX's graphs (they normalise inside; their
    properties name centerX), 0..1 for others."""
    spec = session.get_inputs()[0]
    shape = [1 if i == 0 else (d if isinstance(d, int) else (3 if i == 1 else size)) for i, d in enumerate(spec.shape)]
    scale = 255.0 if session.get_modelmeta().custom_metadata_map.get("producer") == "centerX" else 1.0
    return spec.name, rng.random(shape, dtype=np.float32) * scale


def openvino_runner(path: str, input_name: str, threads: int):
    """The graph at ``path`` converted to OpenVINO and compiled for its CPU device
    (FP32 inference precision, ``threads`` threads); returns ``run(x)``."""
    import openvino as ov

    config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads}
    compiled = ov.Core().compile_model(ov.convert_model(path), "CPU", config)
    request = compiled.create_infer_request()
    return lambda x: request.infer({input_name: x})


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    rng = np.random.default_rng(args.seed)
    runs = []  # (graph, runtime, run(x), x)
    for path in args.models:
        session, name, x = session_and_input(path, args.size, args.threads, rng)
        for runtime in args.runtimes:
            if runtime == "onnxruntime":
                runs.append((path, runtime, lambda x, s=session, n=name: s.run(None, {n: x}), x))
            else:
                runs.append((path, runtime, openvino_runner(path, name, args.threads), x))
    times = [[] for _ in runs]
    for rep in range(args.warmup + args.reps):
        for i, (_, _, run, x) in enumerate(runs):
            start = time.perf_counter()
            run(x)
            if rep >= args.warmup:
                times[i].append((time.perf_counter() - start) * 1000)
    rows = []
    first = statistics.median(times[0])
    for (path, runtime, _, x), t in zip(runs, times):
        median = statistics.median(t)
        rows.append(
            {
                "model": path,
                "runtime": runtime,
                "input": "x".join(str(d) for d in x.shape),
                "median_ms": median,
                "p90_ms": float(np.percentile(t, 90)),
                "ratio": median / first,
            }
        )
    table = tabulate(
        [
            [r["model"], r["runtime"], r["input"], f"{r['median_ms']:.2f}", f"{r['p90_ms']:.2f}", f"{r['ratio']:.2f}x"]
            for r in rows
        ],
        headers=["graph", "runtime", "input", "median ms", "p90 ms", "vs the first"],
        tablefmt="github",
        disable_numparse=True,
        colalign=("left",) * 3 + ("right",) * 3,
    )
    versions = f"ONNX Runtime {ort.__version__}"
    if "openvino" in args.runtimes:
        import openvino as ov

        versions += f", OpenVINO {ov.get_version()}"
    title = f"{versions}, CPU, {args.threads} threads, batch 1, {args.reps} runs each after {args.warmup}, alternating"
    report(title, table, args.output)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
