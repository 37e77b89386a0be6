"""./run.sh gpu-check on a machine without a GPU: the CPU counterparts of its checks
run (bfloat16-autocast training steps, EMA, float16 peak masking, ONNX Runtime
parity), every GPU check is skipped with its reason, and it exits 0."""
import importlib.util
import os

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU path of gpu-check")
def test_cpu_path_skips_every_gpu_check_with_a_reason(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the trainer writes its logs and checkpoints into temporary folders only
    spec = importlib.util.spec_from_file_location("gpu_check", os.path.join(REPO, "projects", "benchmarks",
                                                                            "gpu_check.py"))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    assert cli.main(["--skip-benchmarks"]) == 0
    names = [name for name, _ in cli.CHECKS]
    table = [line for line in capsys.readouterr().out.splitlines()
             if line.startswith("| ") and line[2:].split(" | ")[0].strip() in names]
    assert len(table) == len(cli.CHECKS)
    assert all("| SKIP " in line for line in table), table
    smoke = [line for line in table if "CPU" in line and "run" in line]
    assert len(smoke) == 5, table  # AMP x2, EMA, FP16 peaks, ONNX Runtime ran on the CPU
    assert not any(f"| {s} " in line for line in table for s in ("FAIL", "PASS"))
