"""projects/benchmarks: the learning-efficiency, step-profile, training-throughput, data-pipeline and
target-generation scripts run end to end on a tiny setting and report one row per measurement with
positive figures."""

import glob
import os
import subprocess
import tempfile

import pytest

from project_scripts import load_script


def _load(name):
    return load_script("benchmarks", name)


def test_train_throughput(tiny_shapes, one_thread, tmp_path, capsys):
    """Every model trains on the same tiny batches; the AMP rows are skipped on a
    CPU with a message; RetinaNet's row is the 1.00 reference of the ratios."""
    script = _load("train_throughput")
    output = tmp_path / "train.md"
    rows = script.main(
        [
            "--size",
            "64",
            "--batch",
            "2",
            "--iters",
            "1",
            "--warmup",
            "0",
            "--amp",
            "both",
            "--distinct-batches",
            "1",
            "--output",
            str(output),
            "MODEL.DEVICE",
            "cpu",
            "DATASETS.TRAIN",
            f"('{tiny_shapes[0]}',)",
        ]
    )
    printed = capsys.readouterr().out
    assert "AMP rows need CUDA" in printed
    assert [(r["model"], r["amp"]) for r in rows] == [
        ("CenterNet-R18", "off"),
        ("TTFNet-R18", "off"),
        ("RetinaNet-R18-FPN", "off"),
    ]
    assert [r["optimizer"] for r in rows] == ["ADAM", "ADAM", "SGD"]
    for r in rows:
        assert r["images_per_s"] > 0 and r["s_per_iter"] > 0 and r["peak_mib"] >= 0
        assert abs(r["images_per_s"] * r["s_per_iter"] - 2) < 1e-6
        assert r["vs_retinanet"] > 0
        assert f"| {r['model']}" in printed
    assert rows[-1]["vs_retinanet"] == 1.0
    assert output.read_text().count("| ") >= 5


def test_data_pipeline(tiny_shapes, tmp_path, capsys):
    """The loader of the demo config on the tiny dataset: one row per worker count."""
    script = _load("data_pipeline")
    rows = script.main(
        [
            "--workers",
            "0",
            "--warmup",
            "1",
            "--batches",
            "2",
            "--batch",
            "2",
            "--output",
            str(tmp_path / "data.md"),
            "DATASETS.TRAIN",
            f"('{tiny_shapes[0]}',)",
            "INPUT.TRAIN_SIZE",
            "64",
        ]
    )
    printed = capsys.readouterr().out
    assert [(r["workers"], r["batch"], r["batches"]) for r in rows] == [(0, 2, 2)]
    row = rows[0]
    assert row["images_per_s"] > 0 and row["images_per_s_per_worker"] == row["images_per_s"]
    assert row["first_batch_s"] > 0 and row["vs_main"] == 1.0
    assert "| 0 (main process)" in printed
    assert "0 (main process)" in (tmp_path / "data.md").read_text()


def test_target_generation(one_thread, tmp_path):
    """One row per model and object count, printed as returned."""
    script = _load("target_generation")
    rows = script.main(
        [
            "--size",
            "128",
            "--batch",
            "2",
            "--objects",
            "1",
            "5",
            "--iters",
            "1",
            "--warmup",
            "0",
            "--device",
            "cpu",
            "--output",
            str(tmp_path / "targets.md"),
        ]
    )
    assert [(r["model"], r["objects"]) for r in rows] == [
        ("CenterNet", 1),
        ("TTFNet", 1),
        ("CenterNet", 5),
        ("TTFNet", 5),
    ]
    # the table reports exactly the returned times, and its goal column follows them
    table = [line.split("|")[1:-1] for line in (tmp_path / "targets.md").read_text().splitlines()]
    printed = [[c.strip() for c in cells] for cells in table if cells and cells[0].strip() in ("CenterNet", "TTFNet")]
    assert printed == [
        [r["model"], str(r["objects"]), f"{r['ms_per_image']:.3f}", "yes" if r["ms_per_image"] < 1 else "no"]
        for r in rows
    ]


@pytest.mark.parametrize(
    "opts, message",
    [
        (["MODEL.TIMM.NAM", "x"], r"MODEL.TIMM.NAM \(among the KEY VALUE overrides\) is not a config key; did"),
        (["INPUT.TRAIN_SIZE", "250"], r"^INPUT.TRAIN_SIZE must be a positive multiple of 32"),
    ],
)
def test_step_profile_and_train_throughput_check_the_config_as_train_net_does(opts, message):
    """A misspelt key and a value train_net.py refuses: step_profile.py stopped in yacs'
    merge (AssertionError traceback) or profiled a run train_net.py would not start."""
    script = _load("step_profile")
    with pytest.raises(SystemExit, match=message):
        script.main(script.parse_args(["--iters", "1", *opts]))
    script = _load("train_throughput")
    with pytest.raises(SystemExit, match=message.replace("^", "")):
        script.main(["--models", "ttfnet", "--size", "64", "--iters", "1", *opts])
    with pytest.raises(SystemExit, match=r"--size must be a positive multiple of 32 \(the training input side\)"):
        script.main(["--size", "250"])


def test_step_profile(tiny_shapes, one_thread, tmp_path, capsys):
    """Every phase of a real trainer's step is timed (the target builders too,
    through their wrappers) and the phases add up to the table's sum; the
    trainer's scratch folder is removed."""
    script = _load("step_profile")
    scratch = set(glob.glob(os.path.join(tempfile.gettempdir(), "step_profile_*")))
    phases, measured = script.main(
        script.parse_args(
            [
                "--warmup",
                "1",
                "--iters",
                "2",
                "--output",
                str(tmp_path / "step.md"),
                "DATASETS.TRAIN",
                f"('{tiny_shapes[0]}',)",
                "INPUT.TRAIN_SIZE",
                "64",
                "SOLVER.IMS_PER_BATCH",
                "2",
            ]
        )
    )
    assert list(phases) == list(script.PHASES)
    assert all(v > 0 for k, v in phases.items() if k != "hooks") and phases["hooks"] >= 0
    assert 0.8 * measured <= sum(phases.values()) <= 1.05 * measured
    table = (tmp_path / "step.md").read_text()
    assert all(f"| {phase}" in table for phase in script.PHASES) and "| sum" in table
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "step_profile_*"))) == scratch


@pytest.mark.slow
def test_learning_efficiency(tiny_shapes, one_thread, tmp_path):
    """Three detectors on the same tiny batches: a curve per evaluation for the
    equal-iteration runs, and the slower models retrained to the fastest one's
    training time (fewer iterations, never more). FP32: under bfloat16
    RetinaNet's classification loss is NaN on the second step of this 64 px,
    batch-2 setting."""
    script = _load("learning_efficiency")
    name = tiny_shapes[0]
    equal_iters, equal_time = script.main(
        [
            "--iters",
            "2",
            "--eval-period",
            "1",
            "--models",
            "centernet",
            "ttfnet",
            "retinanet",
            "--output-dir",
            str(tmp_path),
            "DATASETS.TRAIN",
            f"('{name}',)",
            "DATASETS.TEST",
            f"('{name}',)",
            "SOLVER.IMS_PER_BATCH",
            "2",
            "INPUT.TRAIN_SIZE",
            "64",
            "INPUT.MIN_SIZE_TEST",
            "64",
            "INPUT.MAX_SIZE_TEST",
            "64",
            "SOLVER.AMP.ENABLED",
            "False",
        ]
    )
    for run in equal_iters.values():
        assert [c[0] for c in run["curve"]] == [1, 2] and run["train_s"] > 0 and run["iterations"] == 2
    fastest = min(equal_iters, key=lambda m: equal_iters[m]["train_s"] / 2)
    assert equal_time[fastest] is equal_iters[fastest]
    assert all(1 <= r["iterations"] <= 2 for r in equal_time.values())
    assert "AP at equal wall time" in (tmp_path / "table.md").read_text()


def test_flops_counts_scale_with_the_input_area(tmp_path):
    """projects/benchmarks/flops.py: one row for the config and one per timm backbone; a fully
    convolutional network's multiply-adds grow with the input's area (4x from 128 to 256 px,
    to within the count's rounding), its parameters not at all."""
    script = _load("flops")
    config = os.path.join(
        os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
        "configs",
        "shapes",
        "ttfnet_nano_demo.yaml",
    )
    small = script.main(["--config-file", config, "--size", "128", "--backbones", "mobilenetv3_small_100"])
    large = script.main(["--config-file", config, "--size", "256", "--output", str(tmp_path / "flops.md")])
    assert [r[2] for r in small] == ["lcnet_075", "mobilenetv3_small_100"]
    assert large[0][3] == small[0][3]
    assert float(large[0][4]) == pytest.approx(4 * float(small[0][4]), rel=0.01)
    assert "| (the config's) |" in (tmp_path / "flops.md").read_text()


def test_onnx_latency_table_keeps_two_decimals(tmp_path, monkeypatch):
    """A graph timed at exactly 0.1 ms reads "0.10" in the table, not tabulate's re-parsed "0.1"
    (a CI run failed on that): on a clock that only the runs move, each run of graph a taking
    0.1 ms and of graph b 0.3 ms, the medians read 0.10 / 0.30 and the ratios 1.00x / 3.00x."""
    import types

    import numpy as np

    clock = {"now": 0.0}

    class Session:
        def __init__(self, seconds):
            self.seconds = seconds

        def run(self, outputs, feeds):
            clock["now"] += self.seconds

    def session_and_input(path, size, threads, rng, spinning=False):
        return Session(1e-4 if path.endswith("a.onnx") else 3e-4), "x", np.zeros((1, 3, 8, 8), np.float32)

    script = _load("onnx_latency")
    monkeypatch.setattr(script, "session_and_input", session_and_input)
    monkeypatch.setattr(script, "time", types.SimpleNamespace(perf_counter=lambda: clock["now"]))
    graphs = [str(tmp_path / "a.onnx"), str(tmp_path / "b.onnx")]
    for g in graphs:  # the script checks the files exist; the stand-in sessions never read them
        open(g, "w").close()
    script.main(
        ["--models", *graphs, "--threads", "1", "--warmup", "1", "--reps", "3", "--output", str(tmp_path / "t.md")]
    )
    lines = (tmp_path / "t.md").read_text().splitlines()
    cells = [[c.strip() for c in line.split("|")[4:7]] for line in lines if ".onnx" in line]
    assert cells == [["0.10", "0.10", "1.00x"], ["0.30", "0.30", "3.00x"]]


def test_onnx_latency_spinning_times_each_graph_in_a_process_of_its_own(tmp_path, monkeypatch):
    """--spinning keeps ONNX Runtime's spinning pools, so no two graphs may share the process:
    two graphs x 2 rounds are timed by 4 child processes, one graph each, in the order a b a b;
    each row pools its rounds' runs (2 x 3); the sessions spin; a child that fails stops the
    measurement with its error."""
    import types

    import numpy as np
    import torch

    for name in ("a", "b"):
        torch.onnx.export(torch.nn.Conv2d(3, 3, 3, padding=1).eval(), torch.zeros(1, 3, 32, 32),
                          str(tmp_path / f"{name}.onnx"), input_names=["x"], dynamo=False)  # fmt: skip
    script = _load("onnx_latency")
    children = []

    def run(cmd, **kwargs):
        children.append((os.path.basename(cmd[cmd.index("--models") + 1]), "--spinning" in cmd))
        return subprocess.run(cmd, **kwargs)

    monkeypatch.setattr(script, "subprocess", types.SimpleNamespace(run=run))
    graphs = [str(tmp_path / "a.onnx"), str(tmp_path / "b.onnx")]
    timing = ["--threads", "2", "--warmup", "1", "--reps", "3", "--rounds", "2", "--output", str(tmp_path / "t.md")]
    rows = script.main(["--models", *graphs, "--spinning", *timing])
    assert children == [("a.onnx", True), ("b.onnx", True), ("a.onnx", True), ("b.onnx", True)]
    assert [(r["input"], r["runs"]) for r in rows] == [("1x3x32x32", 6), ("1x3x32x32", 6)] and rows[0]["ratio"] == 1.0
    assert "idle threads spinning, each graph in its own process, 2 rounds of 3 runs" in (tmp_path / "t.md").read_text()
    session, _, _ = script.session_and_input(graphs[0], 64, 2, np.random.default_rng(0), spinning=True)
    assert session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "1"
    (tmp_path / "broken.onnx").write_bytes(b"not a graph")
    cannot = r"--models .*broken.onnx: ONNX Runtime cannot load it \(InvalidProtobuf"  # the message, no traceback
    with pytest.raises(SystemExit, match=r"(?s)^timing .*broken.onnx in onnxruntime failed:\n" + cannot):
        script.main(["--models", graphs[0], str(tmp_path / "broken.onnx"), "--spinning", *timing])
    with pytest.raises(SystemExit, match="^" + cannot):
        script.main(["--models", graphs[0], str(tmp_path / "broken.onnx"), *timing])


def test_onnx_latency_and_profile_refuse_a_size_the_graphs_cannot_take(tmp_path, capsys):
    """--size not a multiple of 32 (a centerX graph at 250 px failed deep in ONNX Runtime,
    broadcasting 63 by 64 cells in the upsampler's sum) is refused before any graph loads."""
    graph = tmp_path / "a.onnx"
    graph.write_bytes(b"never read")
    for name in ("onnx_latency", "onnx_profile"):
        with pytest.raises(SystemExit) as info:
            _load(name).main(["--models", str(graph), "--size", "250"])
        assert info.value.code == 2
        assert "--size must be a positive multiple of 32 (the graphs' input sides), got 250" in capsys.readouterr().err


def test_onnx_latency_spinning_ratios_are_the_rounds_ratios(tmp_path, monkeypatch):
    """With --spinning a graph's ratio is the median of its per-round ratios to the first graph
    (runs close in time), not the ratio of the medians: rounds of medians a 1, 3, 3 ms and
    b 2, 6, 2.5 ms give b the ratios 2, 2, 0.83, so 2.00x (the medians' ratio would be 0.83);
    the median is of the round medians (a 3, b 2.5), the p90 and run count over all runs."""
    script = _load("onnx_latency")
    rounds = {"a.onnx": [[1.0, 1.0, 1.0], [3.0, 3.0, 3.0], [3.0, 3.0, 3.0]],
              "b.onnx": [[2.0, 2.0, 2.0], [6.0, 6.0, 6.0], [2.5, 2.5, 2.5]]}  # fmt: skip
    monkeypatch.setattr(
        script, "time_in_processes", lambda args, pairs: [("1x3x8x8", rounds[os.path.basename(p)]) for p, _ in pairs]
    )
    graphs = [str(tmp_path / "a.onnx"), str(tmp_path / "b.onnx")]
    for g in graphs:  # the script checks the files exist; the stand-in never reads them
        open(g, "w").close()
    rows = script.main(["--models", *graphs, "--spinning", "--rounds", "3", "--output", str(tmp_path / "t.md")])
    assert [(r["median_ms"], r["ratio"], r["runs"]) for r in rows] == [(3.0, 1.0, 9), (2.5, 2.0, 9)]
    assert rows[1]["p90_ms"] == pytest.approx(6.0)


def test_onnx_latency_times_graphs_alternately(tmp_path):
    """projects/benchmarks/onnx_latency.py on two tiny graphs (one conv; three): a row per
    graph with its input shape (a dynamic side takes --size), the first graph's ratio 1, and
    the table written as returned."""
    import numpy as np
    import torch

    for name, depth in (("small", 1), ("deep", 3)):
        net = torch.nn.Sequential(*[torch.nn.Conv2d(3, 3, 3, padding=1) for _ in range(depth)]).eval()
        torch.onnx.export(net, torch.zeros(1, 3, 32, 32), str(tmp_path / f"{name}.onnx"), input_names=["x"],
                          dynamic_axes={"x": {2: "h", 3: "w"}}, dynamo=False)  # fmt: skip
    script = _load("onnx_latency")
    graphs = [str(tmp_path / "small.onnx"), str(tmp_path / "deep.onnx")]
    timing = ["--threads", "1", "--warmup", "1", "--reps", "5", "--output", str(tmp_path / "t.md")]
    rows = script.main(["--models", *graphs, "--size", "64", *timing])
    assert [r["input"] for r in rows] == ["1x3x64x64", "1x3x64x64"] and rows[0]["ratio"] == 1.0
    assert all(0 < r["median_ms"] <= r["p90_ms"] for r in rows)
    text = (tmp_path / "t.md").read_text()
    assert all(f"{r['median_ms']:.2f} " in text and f"{r['ratio']:.2f}x" in text for r in rows)
    # the alternated sessions' idle threads sleep rather than spin (they would take the next graph's cores)
    session, _, _ = script.session_and_input(graphs[0], 64, 1, np.random.default_rng(0))
    assert session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
    pytest.importorskip("openvino")
    rows = script.main(["--models", *graphs, "--size", "64", "--runtimes", "onnxruntime", "openvino", *timing])
    assert [(r["model"], r["runtime"]) for r in rows] == [
        (g, runtime) for g in graphs for runtime in ("onnxruntime", "openvino")
    ]
    assert all(r["median_ms"] > 0 for r in rows) and "OpenVINO" in (tmp_path / "t.md").read_text()


def test_onnx_profile_groups_kernel_times_by_part_over_the_timed_runs():
    """projects/benchmarks/onnx_profile.py's grouping on a hand-made profile: the warm-up run's
    kernels left out, module paths cut at --depth with a Sequential's numbered children in their
    container, layout and quantise nodes by operator, top-level nodes per operator, medians per
    part and of the runs' kernel sums."""
    script = _load("onnx_profile")

    def kernel(node, op, ts, dur):
        return {"cat": "Node", "name": f"{node}_kernel_time", "ts": ts, "dur": dur, "args": {"op_name": op}}

    events = [
        {"cat": "Session", "name": "session_initialization", "ts": 0, "dur": 5},
        {"cat": "Session", "name": "model_run", "ts": 10, "dur": 100},  # warm-up
        kernel("/backbone/body/blocks.1/blocks.1.0/conv_dw/Conv", "Conv", 20, 90),
        {"cat": "Session", "name": "model_run", "ts": 200, "dur": 100},
        kernel("/backbone/body/blocks.1/blocks.1.0/conv_dw/Conv", "Conv", 201, 30),
        {"cat": "Node", "name": "/backbone/body/blocks.1/blocks.1.0/conv_dw/Conv_fence_before", "ts": 201, "dur": 9},
        kernel("/backbone/body/blocks.1/blocks.1.1/conv_pw/Conv", "QLinearConv", 232, 20),
        kernel("ReorderInput_token_1", "ReorderInput", 253, 5),
        kernel("/Sub", "Sub", 259, 7),
        kernel("/heads/x/Relu_output_0_DequantizeLinear", "DequantizeLinear", 267, 3),
        {"cat": "Session", "name": "model_run", "ts": 400, "dur": 120},
        kernel("/backbone/body/blocks.1/blocks.1.0/conv_dw/Conv", "Conv", 401, 40),
        kernel("/Sub", "Sub", 442, 9),
        kernel("/upsampler/stages.0/stages.0.2/Relu_output_0_nchwc", "Conv", 452, 11),
    ]
    parts, total, run = script.kernel_times(events, reps=2, depth=3)
    assert list(parts) == [
        "backbone/body/blocks.1", script.LAYOUT_PART, "(top level) Sub", script.QDQ_PART, "upsampler/stages.0"
    ]  # fmt: skip
    assert parts == {
        "backbone/body/blocks.1": 45.0,  # runs: 30 + 20, 40
        script.LAYOUT_PART: 2.5,
        "(top level) Sub": 8.0,
        script.QDQ_PART: 1.5,
        "upsampler/stages.0": 5.5,
    }
    assert (total, run) == (62.5, 110.0)  # run sums 65 and 60; runs of 100 and 120 µs
    assert list(script.kernel_times(events, reps=2, depth=2)[0])[0] == "backbone/body"
    assert script.kernel_times(events, reps=3, depth=3)[0]["backbone/body/blocks.1"] == 50.0  # 90, 50, 40: median
    with pytest.raises(ValueError, match="3 runs; 4 asked"):
        script.kernel_times(events, reps=4, depth=3)
    assert script.part_of("/blocks.10/blocks.1/Conv", "Conv", 3) == "blocks.10/blocks.1"  # not a child of blocks.10
    assert script.part_of("Conv_token_5", "Conv", 3) == "(unnamed) Conv"


def test_onnx_profile_compares_an_fp32_graph_with_its_int8_version(tmp_path):
    """projects/benchmarks/onnx_profile.py end to end on a two-module network and its QDQ INT8
    version (ONNX Runtime's quantize_static): a row per module for both graphs, quantise /
    dequantise time in the INT8 graph only, the speed-up column = first / second, a run no
    shorter than its kernels, the table written as printed; a missing graph is refused."""
    import numpy as np
    import torch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, stride=2, padding=1), torch.nn.ReLU())
            self.body = torch.nn.Sequential(torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU())

        def forward(self, x):  # the top-level Add keeps the body's last node named after its module
            return self.body(self.stem(x)) + 1.0

    fp32, int8 = str(tmp_path / "fp32.onnx"), str(tmp_path / "int8.onnx")
    torch.onnx.export(Net().eval(), torch.zeros(1, 3, 32, 32), fp32, input_names=["x"], dynamo=False)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(
                [{"x": np.random.default_rng(i).random((1, 3, 32, 32), dtype=np.float32)} for i in range(2)]
            )

        def get_next(self):
            return next(self.batches, None)

    quantize_static(fp32, int8, Reader(), quant_format=QuantFormat.QDQ)
    script = _load("onnx_profile")
    out = tmp_path / "profile.md"
    rows = script.main(["--models", fp32, int8, "--threads", "1", "--warmup", "1", "--reps", "5", "--output", str(out)])
    by_part = {r["part"]: r["ms"] for r in rows}
    assert {"stem", "body", script.QDQ_PART, "all kernels", "run (profiling on)"} <= set(by_part)
    assert by_part["stem"][0] > 0 and by_part["body"][1] > 0
    assert by_part[script.QDQ_PART][0] == 0 and by_part[script.QDQ_PART][1] > 0
    for graph in (0, 1):
        assert by_part["run (profiling on)"][graph] >= by_part["all kernels"][graph] > 0
        assert by_part["all kernels"][graph] >= max(ms[graph] for part, ms in by_part.items() if "run" not in part)
    text = out.read_text()
    body = next(line for line in text.splitlines() if line.startswith("| body "))
    assert f"{by_part['body'][0] / by_part['body'][1]:.2f}x" in body and "tmp" not in text.split("\n")[2].split("|")[1]
    with pytest.raises(SystemExit):
        script.main(["--models", str(tmp_path / "missing.onnx")])


EQUAL_TIME_OPTS = [
    "SOLVER.IMS_PER_BATCH", "2", "INPUT.TRAIN_SIZE", "64", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64",
    "DATALOADER.NUM_WORKERS", "0", "TEST.VIS_IMAGES", "0", "SOLVER.AMP.ENABLED", "False",
]  # fmt: skip


@pytest.mark.slow
def test_equal_time_trains_each_model_for_the_iterations_its_probe_fits(one_thread, tmp_path):
    """projects/benchmarks/equal_time.py: a probe per model (kept), then per budget each
    model trained for floor(budget / its seconds per iteration) iterations with the
    schedule rescaled; a YOLO folder's training time is a budget and its AP a row."""
    import json

    import yaml

    script = _load("equal_time")
    out = tmp_path / "out"
    common = ["--dataset", "shapes", "--models", "ttfnet_nano", "ttfnet_r18", "--train-images", "4"]
    common += ["--test-images", "2", "--probe-warmup", "1", "--probe-iters", "2", "--output-dir", str(out)]
    script.main(["--budget-s", "1e-9", *common, *EQUAL_TIME_OPTS])  # one iteration each, at least
    speed = {
        m: json.loads((out / "shapes" / m / "probe.json").read_text())["s_per_iter"]
        for m in ("ttfnet_nano", "ttfnet_r18")
    }
    assert all(s > 0 for s in speed.values())
    assert json.loads((out / "shapes" / "ttfnet_r18" / "1it" / "seed1" / "result.json").read_text())["iterations"] == 1

    yolo = tmp_path / "yolo_e8"
    yolo.mkdir()
    yolo_result = {"model": "yolo26n.yaml", "epochs": 8, "train_s": 2.5 * speed["ttfnet_nano"], "AP": 12.5}
    (yolo / "result.json").write_text(json.dumps(dict(yolo_result, AP50=30.0, APs=1.0, APm=2.0, APl=3.0)))
    budget = 3.5 * speed["ttfnet_r18"]
    table = script.main(["--budget-s", str(budget), "--yolo", str(yolo), *common, *EQUAL_TIME_OPTS])
    expected = {
        "ttfnet_nano": [int(budget // speed["ttfnet_nano"]), 2],
        "ttfnet_r18": [3, max(1, int(2.5 * speed["ttfnet_nano"] // speed["ttfnet_r18"]))],
    }
    for model, iterations in expected.items():
        for n in iterations:
            run = out / "shapes" / model / f"{n}it" / "seed1"
            assert json.loads((run / "result.json").read_text())["iterations"] == n
            assert yaml.safe_load((run / "config.yaml").read_text())["SOLVER"]["MAX_ITER"] == n
    rows = [r.split(" | ") for r in (out / "shapes" / "table.md").read_text().splitlines() if r.startswith("| ")][1:]
    assert [(r[1], r[3]) for r in rows] == [
        ("TTFNet-nano", str(expected["ttfnet_nano"][0])),
        ("TTFNet-R18", "3"),
        ("TTFNet-nano", "2"),
        ("TTFNet-R18", str(expected["ttfnet_r18"][1])),
        ("yolo26n", "8 epochs"),
    ]
    assert rows[-1][0] == "| yolo26n, 8 epochs" and rows[-1][6] == "12.5" and table.count("\n| ") == 6

    with pytest.raises(SystemExit, match="no result.json"):
        script.yolo_budgets([str(tmp_path)])
    with pytest.raises(SystemExit):
        script.parse_args(["--dataset", "shapes"])
    for bad in (["--budget-s", "-5"], ["--budget-s", "0"], ["--budget-s", "9", "--probe-iters", "0"]):
        with pytest.raises(SystemExit):  # refused before any probe trains (a negative budget trained 1 step)
            script.parse_args(["--dataset", "shapes", *bad])
