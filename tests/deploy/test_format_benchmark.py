"""./run.sh benchmark (projects/speedup/benchmark.py): one row per format with size,
latency, throughput and AP, the timing scope of each stage, written to table.md."""

import collections
import os

import pytest
import torch
from detectron2.modeling import build_model

from centerx.deploy.runtimes import OnnxRuntime, OpenVINORuntime, TorchRuntime

from project_scripts import load_script
from tiny_models import randomize_, tiny_cfg


@pytest.mark.slow
def test_formats_table(tiny_shapes, tmp_path):
    cli = load_script("speedup", "benchmark")
    name, _ = tiny_shapes
    cfg = tiny_cfg("TTFNet", "MODEL.TTFNET.NUM_CLASSES", "4")  # the tiny shapes' classes
    weights = tmp_path / "w.pth"
    torch.save({"model": randomize_(build_model(cfg), seed=2).state_dict()}, weights)
    config = tmp_path / "tiny.yaml"
    config.write_text(cfg.dump())
    assert (
        cli.main(
            [
                "--config-file",
                str(config),
                "--formats",
                "pytorch",
                "onnx",
                "torchscript",
                "--reps",
                "3",
                "--warmup",
                "1",
                "--images",
                "2",
                "--batch",
                "2",
                "--threads",
                "1",
                "--output",
                str(tmp_path / "b"),
                "MODEL.WEIGHTS",
                str(weights),
                "DATASETS.TEST",
                f"('{name}',)",
                "MODEL.TTFNET.SCORE_THRESH_TEST",
                "0.05",
            ]
        )
        == 0
    )
    text = (tmp_path / "b" / "table.md").read_text()
    rows = {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
        for line in text.splitlines()
        if line.startswith("| ") and "format" not in line
    }
    assert sorted(rows) == ["onnx", "pytorch", "torchscript"]
    for fmt, (size, median, p90, ips, _ap, note) in rows.items():
        assert float(size) > 0 and 0 < float(median) <= float(p90) and float(ips) > 0 and note == "", (fmt, rows)
    # the three FP32 paths compute the same detections, hence the same AP
    assert rows["onnx"][4] == rows["pytorch"][4] == rows["torchscript"][4]
    for fmt in rows:
        assert f"- {fmt}: pre-processing " in text and "network" in text and "post-processing" in text
    assert os.path.isfile(tmp_path / "b" / "onnx" / "model.onnx")
    assert os.path.isfile(tmp_path / "b" / "torchscript" / "model.ts")


def test_the_old_names_say_where_things_went(tmp_path):
    """Before 0.2.0 this table was formats.py and benchmark.py was the latency comparison
    with RetinaNet: its flags and the old file name point to the new names."""
    import subprocess
    import sys

    cli = load_script("speedup", "benchmark")
    with pytest.raises(SystemExit, match="latency_vs_retinanet.py since 0.2.0"):
        cli.parse_args(["--models", "centernet", "ttfnet", "--runtimes", "pytorch"])
    old = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "projects",
                       "speedup", "formats.py")  # fmt: skip
    result = subprocess.run([sys.executable, old], capture_output=True, text=True)
    assert result.returncode == 1 and "projects/speedup/benchmark.py since 0.2.0" in result.stderr


@pytest.mark.slow
def test_the_latency_comparison_runs_centerx_through_the_registered_runtimes(tiny_shapes, monkeypatch, capsys):
    """projects/speedup/latency_vs_retinanet.py: every centerX row is measured, by the
    registered runtime of its format (the backbone's reference graph by plain sessions)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    used = []
    for runtime in (TorchRuntime, OnnxRuntime, OpenVINORuntime):
        original = runtime.run
        monkeypatch.setattr(
            runtime, "run", lambda self, x, run=original: used.append((self.name, x.shape)) or run(self, x)
        )
    cli = load_script("speedup", "latency_vs_retinanet")
    argv = ["--size", "64", "--batches", "1", "--warmup", "0", "--reps", "2", "--models", "ttfnet", "--threads", "1"]
    argv += ["--calibration-dataset", tiny_shapes[0]]  # nothing generated in the repository
    assert cli.main([*argv, "--runtimes", "pytorch", "onnxruntime", "onnxruntime-int8", "openvino"]) == 0
    rows = [line.split("|") for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    measured = {(r[1].strip(), r[2].strip()) for r in rows if r[4].strip() != "n/a"}
    runtimes = {"pytorch-cpu", "onnxruntime-cpu", "onnxruntime-int8-cpu", "openvino-cpu"}
    assert {("TTFNet-R18", r) for r in runtimes} <= measured
    assert {("ResNet-18 backbone", r) for r in runtimes - {"onnxruntime-int8-cpu"}} <= measured
    # each centerX row's 2 timed runs on its [1, 3, 64, 64] batch went through its runtime (the
    # exporters' own checks add a few runs)
    timed = collections.Counter(name for name, shape in used if shape == (1, 3, 64, 64))
    assert set(timed) == {"pytorch", "onnxruntime", "openvino"} and min(timed.values()) >= 2, timed
    assert timed["onnxruntime"] >= 4, timed  # FP32 and INT8


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--size", "250"], "--size must be a positive multiple of 32, got 250"),
        (["--reps", "0"], "--reps, --batches and --threads must be at least 1, --warmup at least 0"),
        (["--batches", "1", "0"], "--reps, --batches and --threads must be at least 1, --warmup at least 0"),
    ],
)
def test_the_latency_comparison_refuses_what_no_row_could_measure(argv, message, capsys):
    """A --size that centerX's exports cannot take (every centerX row was "n/a" after a
    minute of RetinaNet timings) or a count below 1 is refused before anything is built."""
    cli = load_script("speedup", "latency_vs_retinanet")
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err
