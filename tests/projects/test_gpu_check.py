"""./run.sh gpu-check on a machine without a GPU: the CPU counterparts of its checks
run (bfloat16-autocast training steps, EMA, float16 peak masking, ONNX Runtime
parity), every GPU check is skipped with its reason, and it exits 0."""

import pytest
import torch

from project_scripts import load_script


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU path of gpu-check")
def test_cpu_path_skips_every_gpu_check_with_a_reason(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the trainer writes its logs and checkpoints into temporary folders only
    cli = load_script("benchmarks", "gpu_check")
    assert cli.main(["--skip-benchmarks"]) == 0
    names = [name for name, _ in cli.CHECKS]
    table = [
        line
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("| ") and line[2:].split(" | ")[0].strip() in names
    ]
    assert len(table) == len(cli.CHECKS)
    assert all("| SKIP " in line for line in table), table
    smoke = [line for line in table if "CPU" in line and "run" in line]
    assert len(smoke) == 5, table  # AMP x2, EMA, FP16 peaks, ONNX Runtime ran on the CPU
    assert not any(f"| {s} " in line for line in table for s in ("FAIL", "PASS"))
