"""A real train_net.py process killed with SIGKILL, once right after a checkpoint
and once while writing one, resumes with --resume and ends with exactly the
weights of a run that was never interrupted; the partial file of the killed
write is removed on the next start; each centerx log line is printed once."""

import glob
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = pytest.mark.slow  # real processes: about 40 s in all
DEMO = os.path.join(REPO, "configs", "shapes", "ttfnet_r18_demo.yaml")


def command(tiny_shapes, out, *extra):
    name, json_file = tiny_shapes
    images = os.path.join(os.path.dirname(json_file), "..", "tiny")
    return [
        sys.executable,
        os.path.join(REPO, "train_net.py"),
        "--config-file",
        DEMO,
        *extra,
        "DATASETS.COCO_JSON",
        f"[('{name}_sub', '{json_file}', '{images}')]",
        "DATASETS.TRAIN",
        f"('{name}_sub',)",
        "DATASETS.TEST",
        "()",
        "INPUT.TRAIN_SIZE",
        "64",
        "SOLVER.IMS_PER_BATCH",
        "2",
        "SOLVER.MAX_ITER",
        "6",
        "SOLVER.WARMUP_ITERS",
        "0",
        "SOLVER.CHECKPOINT_PERIOD",
        "2",
        "SEED",
        "5",
        "OUTPUT_DIR",
        str(out),
    ]


def environment():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)


def run(cmd):
    done = subprocess.run(cmd, cwd=REPO, env=environment(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def kill_when(cmd, ready, timeout=300):
    """Start ``cmd`` and SIGKILL it as soon as ``ready()`` is true."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    start = time.time()
    try:
        while not ready():
            assert proc.poll() is None, "the run ended before it could be interrupted"
            assert time.time() - start < timeout
            time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()


def final_weights(out):
    return torch.load(os.path.join(out, "model_final.pth"), map_location="cpu", weights_only=True)["model"]


@pytest.fixture(scope="module")
def uninterrupted(tiny_shapes, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    log = run(command(tiny_shapes, out))
    return final_weights(out), log, out


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_each_log_line_is_printed_once(uninterrupted):
    _, console, out = uninterrupted
    assert console.count("iter 6/6 (100%)") == 1  # the console's progress line
    with open(os.path.join(out, "log.txt")) as f:  # detectron2's and centerX's lines, in the file
        log = f.read()
    assert log.count("SOLVER.AMP.ENABLED on CPU") + log.count("SOLVER.AMP.ENABLED on a CPU without") == 1


def test_killed_right_after_a_checkpoint_resumes_exactly(tiny_shapes, uninterrupted, tmp_path):
    tag = tmp_path / "last_checkpoint"
    kill_when(command(tiny_shapes, tmp_path), lambda: tag.exists() and tag.read_text().strip() == "model_0000001.pth")
    assert not (tmp_path / "model_final.pth").exists()
    run(command(tiny_shapes, tmp_path, "--resume"))
    assert_same(final_weights(tmp_path), uninterrupted[0])


def test_killed_while_writing_a_checkpoint_resumes_exactly(tiny_shapes, uninterrupted, tmp_path):
    kill_when(command(tiny_shapes, tmp_path), lambda: bool(glob.glob(str(tmp_path / "model_0000003.pth.tmp-*"))))
    assert glob.glob(str(tmp_path / "*.tmp-*")), "the kill should leave the partial file"
    assert not (tmp_path / "model_0000003.pth").exists()
    log = run(command(tiny_shapes, tmp_path, "--resume"))
    assert "partial checkpoint file(s) left by an interrupted save" in log
    assert not glob.glob(str(tmp_path / "*.tmp-*"))
    assert_same(final_weights(tmp_path), uninterrupted[0])
