"""Two CPU processes (gloo) through train_net.py and detectron2's launch."""

import os
import re
import subprocess
import sys

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model

import centerx
from centerx.engine.replicas import replica_digests

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(REPO, "configs", "shapes", "centernet_r18_demo.yaml")


@pytest.mark.slow
def test_two_processes_train_identical_replicas(tiny_shapes, tmp_path):
    """`train_net.py --num-gpus 2` on a CPU machine: two gloo processes,
    detectron2's REFERENCE_WORLD_SIZE scaling (batch 2 -> 4, lr x2, 4 -> 2
    iterations), naiveSyncBN in the backbone, upsampler and heads, and both
    ranks end with the same parameters and BatchNorm statistics, those of
    model_final.pth."""
    name, json_file = tiny_shapes
    image_root = MetadataCatalog.get(name).image_root
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        os.path.join(REPO, "train_net.py"),
        "--config-file",
        DEMO,
        "--verbose",
        "--num-gpus",
        "2",
        "--dist-url",
        "auto",
        "DATASETS.COCO_JSON",
        f"[('{name}', '{json_file}', '{image_root}')]",
        "DATASETS.TRAIN",
        f"('{name}',)",
        "DATASETS.TEST",
        "()",
        "INPUT.TRAIN_SIZE",
        "64",
        "SOLVER.IMS_PER_BATCH",
        "2",
        "SOLVER.REFERENCE_WORLD_SIZE",
        "1",
        "SOLVER.BASE_LR",
        "0.001",
        "SOLVER.MAX_ITER",
        "4",
        "SOLVER.WARMUP_ITERS",
        "0",
        "DATALOADER.NUM_WORKERS",
        "0",
        "MODEL.CENTERX.BACKBONE_NORM",
        "naiveSyncBN",
        "MODEL.CENTERX.NECK_NORM",
        "naiveSyncBN",
        "MODEL.CENTERX.HEAD_NORM",
        "naiveSyncBN",
        "TEST.VIS_IMAGES",
        "0",
        "OUTPUT_DIR",
        str(out),
        "SEED",
        "4",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]

    assert re.search(r"Auto-scaling the config to batch_size=4, learning_rate=0\.002, max_iter=2", log), log[-3000:]
    digests = {}
    for part in ("parameters", "buffers"):
        match = re.search(
            rf"Model {part} after training are identical on all 2 processes \(sha1 ([0-9a-f]{{40}})\)", log
        )
        assert match, log[-3000:]
        digests[part] = match.group(1)

    cfg = centerx.add_centerx_config(get_cfg())
    cfg.merge_from_file(DEMO)
    cfg.merge_from_list(
        [
            "MODEL.CENTERX.BACKBONE_NORM",
            "naiveSyncBN",
            "MODEL.CENTERX.NECK_NORM",
            "naiveSyncBN",
            "MODEL.CENTERX.HEAD_NORM",
            "naiveSyncBN",
        ]
    )
    model = build_model(cfg)
    model.load_state_dict(torch.load(out / "model_final.pth", weights_only=False)["model"])
    assert replica_digests(model) == (digests["parameters"], digests["buffers"])


@pytest.mark.slow
def test_two_processes_end_with_equal_tensors(tiny_shapes, tmp_path):
    """The same run through detectron2's launch, each rank saving its final state dict:
    every parameter and buffer is equal across the two ranks, and equal to
    model_final.pth (rank 0's checkpoint)."""
    name, json_file = tiny_shapes
    image_root = MetadataCatalog.get(name).image_root
    out = tmp_path / "out"
    out.mkdir()
    cmd = [
        sys.executable,
        os.path.join(REPO, "tests", "distributed_worker.py"),
        DEMO,
        str(out),
        "DATASETS.COCO_JSON",
        f"[('{name}', '{json_file}', '{image_root}')]",
        "DATASETS.TRAIN",
        f"('{name}',)",
        "DATASETS.TEST",
        "()",
        "INPUT.TRAIN_SIZE",
        "64",
        "SOLVER.IMS_PER_BATCH",
        "4",
        "SOLVER.BASE_LR",
        "0.001",
        "SOLVER.MAX_ITER",
        "3",
        "SOLVER.WARMUP_ITERS",
        "0",
        "DATALOADER.NUM_WORKERS",
        "0",
        "MODEL.CENTERX.BACKBONE_NORM",
        "naiveSyncBN",
        "MODEL.CENTERX.NECK_NORM",
        "naiveSyncBN",
        "MODEL.CENTERX.HEAD_NORM",
        "naiveSyncBN",
        "TEST.VIS_IMAGES",
        "0",
        "SEED",
        "5",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    ranks = [torch.load(out / f"rank{r}.pth") for r in (0, 1)]
    checkpoint = torch.load(out / "model_final.pth", weights_only=False)
    assert checkpoint["iteration"] == 2  # three steps were taken
    final = checkpoint["model"]
    assert sorted(ranks[0]) == sorted(ranks[1]) == sorted(final)
    for key in ranks[0]:
        assert torch.equal(ranks[0][key], ranks[1][key]), key
        assert torch.equal(ranks[0][key], final[key].cpu()), key
