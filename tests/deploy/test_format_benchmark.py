"""./run.sh benchmark (projects/speedup/benchmark.py): one row per format with size,
latency, throughput and AP, the timing scope of each stage, written to table.md."""

import os

import pytest
import torch
from detectron2.modeling import build_model

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
