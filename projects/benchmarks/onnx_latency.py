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

``--spinning`` measures what a program that runs one model back to back gets from ONNX
Runtime's defaults instead: idle worker threads spin between runs (at 2 threads every
graph is then 1.3x-1.8x faster on the 2-core host of docs/benchmarks.md, small kernels
the most). Since spinning pools must not share the cores, each graph then runs in a
process of its own, one process at a time, graphs in turn for ``--rounds`` rounds of
``--reps`` runs after ``--warmup``. A graph's median is then the median of its rounds'
medians, its ratio the median of its rounds' ratios to the first graph's median of the
same round (what the machine does falls on a round, not on single runs: take more
rounds, not more runs, for steadier ratios); the 90th percentile is over all runs.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort
from tabulate import tabulate
from tqdm import tqdm

PROJECTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # projects/experiments.py


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
    p.add_argument(
        "--spinning",
        action="store_true",
        help="ONNX Runtime's default: idle threads spin between runs; each graph in a process of its own, in turn",
    )
    p.add_argument("--rounds", type=int, default=5, help="with --spinning: processes per graph, run in turn")
    p.add_argument("--output", default="")
    p.add_argument("--times-json", action="store_true", help=argparse.SUPPRESS)  # a --spinning child's answer
    args = p.parse_args(argv)
    for path in args.models:
        if not os.path.isfile(path):
            p.error(f"--models: {path} does not exist")
    if args.reps < 1 or args.warmup < 0 or args.rounds < 1 or args.threads < 1:
        p.error("--reps, --rounds and --threads must be at least 1, --warmup at least 0")
    check_size(p, args.size)
    return args


def check_size(parser: argparse.ArgumentParser, size: int) -> None:
    """Refuse a ``--size`` the graphs cannot take: centerX's (and YOLO's) input sides
    are multiples of 32, and another side fails deep in ONNX Runtime (a broadcast of
    63 by 64 cells in the upsampler's sum)."""
    if size < 32 or size % 32:
        parser.error(f"--size must be a positive multiple of 32 (the graphs' input sides), got {size}")


def load_session(path: str, options: ort.SessionOptions) -> ort.InferenceSession:
    """ONNX Runtime's CPU session of the graph at ``path``; a file it cannot load
    (not ONNX, damaged, an operator it lacks) stops the script naming the file."""
    try:
        return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # ONNX Runtime's own errors (InvalidProtobuf, Fail, ...) derive from Exception only
        first = str(e).splitlines()[0] if str(e) else ""
        raise SystemExit(f"--models {path}: ONNX Runtime cannot load it ({type(e).__name__}: {first})") from None


def session_and_input(path: str, size: int, threads: int, rng: np.random.Generator, spinning: bool = False):
    """(ONNX Runtime session, its input name, a batch-1 input) for the graph at ``path``;
    its idle worker threads spin between runs only with ``spinning``."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # without spinning idle threads sleep at once: spinning, one session's pool would take the cores
    # from the next session in an alternation (all graphs measured 1.7x slower at 512 px with four)
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    session = load_session(path, options)
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


def time_in_turn(args, pairs: list[tuple[str, str]]) -> list[tuple[str, list[float]]]:
    """Every (graph, runtime) of ``pairs`` loaded in this process and run once per
    repetition, in turn: per pair (its input shape "1x3xHxW", the timed runs' ms)."""
    rng = np.random.default_rng(args.seed)
    runs, sessions = [], {}  # runs: (run(x), x)
    for path, runtime in pairs:
        if path not in sessions:
            sessions[path] = session_and_input(path, args.size, args.threads, rng, args.spinning)
        session, name, x = sessions[path]
        if runtime == "onnxruntime":
            runs.append((lambda x, s=session, n=name: s.run(None, {n: x}), x))
        else:
            runs.append((openvino_runner(path, name, args.threads), x))
    times = [[] for _ in runs]
    for rep in range(args.warmup + args.reps):
        for i, (run, x) in enumerate(runs):
            start = time.perf_counter()
            run(x)
            if rep >= args.warmup:
                times[i].append((time.perf_counter() - start) * 1000)
    return [("x".join(str(d) for d in x.shape), t) for (_, x), t in zip(runs, times)]


def time_in_processes(args, pairs: list[tuple[str, str]]) -> list[tuple[str, list[list[float]]]]:
    """As :func:`time_in_turn`, but each pair timed by a process of its own (this script
    with one graph and one runtime), one process at a time, the pairs in turn for
    ``args.rounds`` rounds: per pair (input shape, per round the timed runs' ms)."""
    shared = ["--size", str(args.size), "--threads", str(args.threads), "--warmup", str(args.warmup)]
    shared += ["--reps", str(args.reps), "--seed", str(args.seed), "--spinning", "--times-json"]
    results = [("", []) for _ in pairs]
    with tqdm(total=args.rounds * len(pairs), desc="graph processes", unit="process", file=sys.stderr) as bar:
        for _ in range(args.rounds):
            for i, (path, runtime) in enumerate(pairs):
                cmd = [sys.executable, os.path.abspath(__file__), "--models", path, "--runtimes", runtime, *shared]
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode != 0:
                    raise SystemExit(f"timing {path} in {runtime} failed:\n{done.stderr[-2000:].strip()}")
                shape, times = json.loads(done.stdout.strip().splitlines()[-1])
                results[i] = (shape, [*results[i][1], times])
                bar.update()
    return results


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    pairs = [(path, runtime) for path in args.models for runtime in args.runtimes]
    if args.spinning and not args.times_json:
        timed = time_in_processes(args, pairs)
    else:  # one round in this process (a --spinning child times its one graph this way)
        timed = [(shape, [t]) for shape, t in time_in_turn(args, pairs)]
    if args.times_json:
        shape, (times,) = timed[0]
        print(json.dumps([shape, times]))
        return []
    # per round the median of each pair's runs; a round's ratios compare runs close in time, so
    # a round the machine slowed for all pairs alike (seen: every graph 1.5x slower) moves no ratio
    first = [statistics.median(t) for t in timed[0][1]]
    rows = []
    for (path, runtime), (shape, rounds) in zip(pairs, timed):
        medians = [statistics.median(t) for t in rounds]
        runs = [ms for t in rounds for ms in t]
        rows.append(
            {
                "model": path,
                "runtime": runtime,
                "input": shape,
                "median_ms": statistics.median(medians),
                "p90_ms": float(np.percentile(runs, 90)),
                "ratio": statistics.median(m / f for m, f in zip(medians, first)),
                "runs": len(runs),
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
    if args.spinning:
        how = f"idle threads spinning, each graph in its own process, {args.rounds} rounds of {args.reps} runs"
        how += f" after {args.warmup}"
    else:
        how = f"idle threads sleeping, {args.reps} runs each after {args.warmup}, alternating"
    title = f"{versions}, CPU, {args.threads} threads, batch 1, {how}"
    # imported here, not at the top: experiments.py loads torch and detectron2 (3 s), which the
    # timing children of --spinning do not need
    sys.path.insert(0, PROJECTS)
    from experiments import report

    report(title, table, args.output)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
