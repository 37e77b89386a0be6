#!/usr/bin/env python
"""Where the time of one or more ONNX graphs goes in ONNX Runtime on the CPU, part by
part, side by side: an FP32 export and its INT8 version, say, to see which layers the
integer kernels speed up, which they slow down, and what both graphs pay alike.

    .venv/bin/python projects/benchmarks/onnx_profile.py --models <export>/model.onnx \\
        <export>/model_int8.onnx --size 256 --threads 2 --reps 100

ONNX Runtime's own profiler times every kernel of ``--reps`` runs per graph (after
``--warmup`` untimed ones; the graphs run in turn, one run each per repetition, as in
``onnx_latency.py``). A kernel belongs to a part by its node's name, which ONNX Runtime
keeps from the exported module path after fusing (``/backbone/body/blocks.1/.../Conv`` or,
for a convolution fused with its activation, the activation's output name): the first
``--depth`` path components (``backbone/body/blocks.1``; a numbered child of a
Sequential, ``stages.0/stages.0.2``, counts with its container, ``stages.0``). Two parts go by operator
instead, whatever their names: the layout changes the optimiser inserts between its FP32
(blocked, ``ReorderInput`` / ``ReorderOutput``) and integer (NHWC, ``Transpose``) kernels,
and the quantise / dequantise nodes. Nodes at the graph's top level (for centerX's graphs:
the input normalisation, the heatmap's last convolution fused with its sigmoid, the peak
mask, top-K and box decode) are one part per operator, ``(top level) TopK`` and so on.

Prints per part the median over the runs of its kernel milliseconds in a run, for each
graph, its share of the first graph's kernel time and each later graph's speed-up over the
first (first / later; above 1 is faster), then the median of the runs' kernel sums and the
median run time (profiling on: each kernel pays the profiler's bookkeeping, so runs are
slower than ``onnx_latency.py`` measures them, the more so the more nodes; take latencies
and their ratios from ``onnx_latency.py``, where the time goes from here). The medians of
the parts need not add up to the median of the sums. Writes the table to ``--output``.
Kernel times are those of ONNX Runtime's sequential executor: a kernel split over the
intra-op threads counts once, at its wall time.
"""

import argparse
import bisect
import json
import os
import re
import statistics
import sys
import tempfile

import numpy as np
import onnxruntime as ort
from tabulate import tabulate

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # projects/experiments.py
sys.path.insert(0, HERE)  # onnx_latency.py
from onnx_latency import check_size, graph_input, load_session

from experiments import report

LAYOUT_OPS = frozenset({"ReorderInput", "ReorderOutput", "Transpose"})
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})
LAYOUT_PART = "layout changes (ReorderInput / ReorderOutput / Transpose)"
QDQ_PART = "quantise / dequantise"
KERNEL_SUFFIX = "_kernel_time"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--models", nargs="+", required=True, metavar="ONNX", help="the graphs; speed-ups are over the first"
    )
    p.add_argument("--size", type=int, default=256, help="input side where a graph's input size is dynamic")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs of each graph (not counted)")
    p.add_argument("--reps", type=int, default=100, help="profiled runs of each graph")
    p.add_argument("--depth", type=int, default=3, help="module path components that name a part")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default="")
    args = p.parse_args(argv)
    for path in args.models:
        if not os.path.isfile(path):
            p.error(f"--models: {path} does not exist")
    if args.reps < 1 or args.warmup < 0 or args.depth < 1:
        p.error(
            f"--reps and --depth must be at least 1, --warmup at least 0; got {args.reps}, {args.depth}, {args.warmup}"
        )
    check_size(p, args.size)
    return args


def part_of(node: str, op: str, depth: int) -> str:
    """The part a kernel of operator ``op`` from node ``node`` counts in (see the module
    docstring): ``LAYOUT_PART``, ``QDQ_PART``, the first ``depth`` components of the node's
    module path (numbered children of a Sequential left out), ``(top level) <op>`` for a
    node outside any module, ``(unnamed) <op>`` for one the optimiser named without a path."""
    if op in LAYOUT_OPS:
        return LAYOUT_PART
    if op in QDQ_OPS:
        return QDQ_PART
    if not node.startswith("/"):
        return f"(unnamed) {op}"
    modules = node.strip("/").split("/")[:-1]  # the last component is the node's own name
    # a numbered child of a Sequential (``stages.0/stages.0.2``) counts with its container: after
    # fusing, a convolution takes its activation's name, which can sit in the next child
    modules = [m for i, m in enumerate(modules) if not (i and re.fullmatch(re.escape(modules[i - 1]) + r"\.\d+", m))]
    if not modules:
        return f"(top level) {op}"
    return "/".join(modules[:depth])


def kernel_times(events: list[dict], reps: int, depth: int) -> tuple[dict[str, float], float, float]:
    """Per part, the median over the last ``reps`` runs of a profile of the part's kernel
    microseconds in a run.

    Args:
        events: ONNX Runtime's profile (the JSON list ``end_profiling`` writes): one
            ``model_run`` session event per run, one ``<node>_kernel_time`` node event per
            kernel, each with ``ts`` and ``dur`` in microseconds.
        reps: the runs to count, the profile's last ones (earlier runs were warm-up).
        depth: as in :func:`part_of`.

    Returns:
        (part -> median µs per run, in order of first appearance in execution; the median
        of the runs' summed kernel µs; the median run duration in µs). Medians, not means:
        one run slowed by the machine would otherwise move every part. Raises ValueError
        when the profile has fewer runs.
    """
    runs = sorted(
        (e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"), key=lambda e: e["ts"]
    )
    if len(runs) < reps:
        raise ValueError(f"the profile has {len(runs)} runs; {reps} asked")
    runs = runs[len(runs) - reps :]
    starts = [r["ts"] for r in runs]
    per_run: dict[str, list[float]] = {}
    kernels = sorted(
        (e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith(KERNEL_SUFFIX)),
        key=lambda e: e["ts"],
    )
    for event in kernels:
        run = bisect.bisect_right(starts, event["ts"]) - 1
        if run < 0 or event["ts"] > runs[run]["ts"] + runs[run]["dur"]:
            continue  # a warm-up run's kernel
        part = part_of(event["name"][: -len(KERNEL_SUFFIX)], event["args"]["op_name"], depth)
        per_run.setdefault(part, [0.0] * reps)[run] += event["dur"]
    totals = [sum(times[i] for times in per_run.values()) for i in range(reps)]
    medians = {part: statistics.median(times) for part, times in per_run.items()}
    return medians, statistics.median(totals), statistics.median(float(r["dur"]) for r in runs)


def profiled_session(path: str, size: int, threads: int, prefix: str, rng: np.random.Generator):
    """(ONNX Runtime session with profiling on, its input name, a batch-1 input: onnx_latency.py's)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as onnx_latency.py, alternating
    options.enable_profiling = True
    options.profile_file_prefix = prefix
    session = load_session(path, options)
    return (session, *graph_input(session, size, rng))


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    rng = np.random.default_rng(args.seed)
    profiles = []
    with tempfile.TemporaryDirectory() as tmp:
        sessions = [
            profiled_session(path, args.size, args.threads, os.path.join(tmp, f"graph{i}"), rng)
            for i, path in enumerate(args.models)
        ]
        for _ in range(args.warmup + args.reps):
            for session, name, x in sessions:
                session.run(None, {name: x})
        for session, _, _ in sessions:
            with open(session.end_profiling()) as f:
                profiles.append(kernel_times(json.load(f), args.reps, args.depth))
    parts = list(dict.fromkeys(part for times, _, _ in profiles for part in times))
    reference = profiles[0][1]
    rows = []
    for part in parts:
        ms = [times.get(part, 0.0) / 1000 for times, _, _ in profiles]
        rows.append({"part": part, "ms": ms, "share": ms[0] * 1000 / reference})
    rows.append({"part": "all kernels", "ms": [total / 1000 for _, total, _ in profiles], "share": 1.0})
    rows.append({"part": "run (profiling on)", "ms": [run / 1000 for _, _, run in profiles]})

    def speed_up(first: float, later: float) -> str:
        return f"{first / later:.2f}x" if first > 0 and later > 0 else "-"

    names = [os.path.join(*os.path.abspath(p).split(os.sep)[-2:]) for p in args.models]  # folder/file
    headers = ["part", *(f"{n} ms" for n in names), f"share of {names[0]}"]
    headers += [f"{n} speed-up" for n in names[1:]]
    table = tabulate(
        [
            [r["part"], *(f"{m:.3f}" for m in r["ms"]), f"{100 * r['share']:.1f} %" if "share" in r else ""]
            + [speed_up(r["ms"][0], m) for m in r["ms"][1:]]
            for r in rows
        ],
        headers=headers,
        tablefmt="github",
        disable_numparse=True,
        colalign=("left",) + ("right",) * (len(headers) - 1),
    )
    title = (
        f"ONNX Runtime {ort.__version__} profiler, CPU, {args.threads} threads, batch 1, input side {args.size} "
        f"where dynamic, {args.reps} runs each after {args.warmup}, alternating; kernel ms per run"
    )
    report(title, table, args.output)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
