#!/usr/bin/env python
"""Everything centerX does only on an NVIDIA GPU, checked in one go (under 10 minutes
on one GPU), with a pass / fail / skip table at the end:

    ./run.sh gpu-check                       # = python projects/benchmarks/gpu_check.py
    ./run.sh gpu-check --skip-benchmarks     # the checks without the benchmark rows

1. AMP training: 100 iterations of the CenterNet and TTFNet shapes demos with
   SOLVER.AMP.ENABLED (detectron2's AMPTrainer, float16): every loss finite,
   the mean of the last 10 below the mean of the first 10;
2. EMA: 30 AMP iterations with MODEL_EMA.ENABLED: the EMA is finite and moved away
   from its start, evaluation with it runs;
3. DDP: two processes through detectron2's launch (NCCL), one GPU each; skipped
   with the reason on a machine with one GPU (NCCL cannot give one GPU to two
   processes; the two-process path is tested on CPU with gloo);
4. FP16 peak masking on CUDA: the float16 mask keeps exactly the float32 peaks;
5. ONNX Runtime with its CUDA provider: detections match PyTorch's;
6. TensorRT FP32 and FP16 engines (where ``tensorrt`` imports): detections match
   PyTorch's (FP16: the score tolerance of float16);
7. the GPU rows of the inference benchmark (projects/speedup/latency_vs_retinanet.py) and
   of the training benchmark (projects/benchmarks/train_throughput.py), printed.

Without a GPU it runs the CPU counterpart of what can run on a CPU (a few
bfloat16-autocast training steps, FP16 peak masking and ONNX Runtime parity on
the CPU), marks every GPU check SKIP with the reason and exits 0, so the script
itself is tested where CI runs. A FAIL makes the exit code 1.

It installs nothing: TensorRT comes from ``pip install tensorrt-cu12`` (TensorRT
10, CUDA 12; ``tensorrt-cu13`` for CUDA 13) in the project's environment,
ONNX Runtime's CUDA provider from ``pip install onnxruntime-gpu`` in place of
``onnxruntime``.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable

import numpy as np
import torch
from detectron2.modeling import build_model
from tabulate import tabulate

import centerx
from centerx.data.datasets import ensure_datasets
from centerx.deploy import DeployModel
from centerx.deploy.verify import FP32_TOLERANCE, compare_detections
from centerx.modeling.decode import peak_mask

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMOS = {"CenterNet": "configs/shapes/centernet_r18_demo.yaml", "TTFNet": "configs/shapes/ttfnet_r18_demo.yaml"}
# float16 keeps ~3 significant digits: scores of an FP16 engine against FP32
FP16_TOLERANCE = {"box_px": 2.0, "score": 5e-3, "tie": 5e-3}


class Skip(Exception):
    """The check cannot run here; the message says why."""


def cuda() -> bool:
    return torch.cuda.is_available()


def demo_cfg(arch: str, device: str, *opts):
    cfg = centerx.get_centerx_cfg()
    cfg.merge_from_file(os.path.join(REPO, DEMOS[arch]))
    cfg.merge_from_list(
        [
            "MODEL.DEVICE",
            device,
            "MODEL.TTFNET.DEFORMABLE",
            False,
            "TEST.VIS_IMAGES",
            0,
            "DATALOADER.NUM_WORKERS",
            2 if device == "cuda" else 0,
            *opts,
        ]
    )
    return cfg


def train(cfg, iters: int):
    """``iters`` steps of centerX's Trainer (no evaluation); (total loss of each step, trainer)."""
    from centerx.engine import Trainer

    cfg.merge_from_list(
        [
            "SOLVER.MAX_ITER",
            iters,
            "SOLVER.CHECKPOINT_PERIOD",
            10**9,
            "TEST.EVAL_PERIOD",
            0,
            "DATASETS.TEST",
            (),
            "SOLVER.WARMUP_ITERS",
            min(10, iters // 4),
        ]
    )
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    return [value for value, _ in trainer.storage.history("total_loss").values()], trainer


def check_amp_training(arch: str) -> Callable[[], str]:
    def run():
        with tempfile.TemporaryDirectory() as out:
            if cuda():
                losses, _ = train(demo_cfg(arch, "cuda", "SOLVER.AMP.ENABLED", True, "OUTPUT_DIR", out), 100)
            else:
                losses, _ = train(
                    demo_cfg(
                        arch,
                        "cpu",
                        "SOLVER.AMP.ENABLED",
                        True,
                        "OUTPUT_DIR",
                        out,
                        "INPUT.TRAIN_SIZE",
                        64,
                        "SOLVER.IMS_PER_BATCH",
                        2,
                    ),
                    3,
                )
        if not all(np.isfinite(losses)):
            raise AssertionError(f"non-finite loss: {losses}")
        if not cuda():
            raise Skip(f"no CUDA device; CPU bfloat16-autocast smoke run: 3 finite steps (loss {losses[-1]:.2f})")
        first, last = float(np.mean(losses[:10])), float(np.mean(losses[-10:]))
        if not last < first:
            raise AssertionError(f"loss did not fall: first 10 {first:.3f}, last 10 {last:.3f}")
        return f"100 it float16, loss {first:.2f} -> {last:.2f}"

    return run


def check_ema():
    with tempfile.TemporaryDirectory() as out:
        device, iters = ("cuda", 30) if cuda() else ("cpu", 3)
        opts = [
            "SOLVER.AMP.ENABLED",
            True,
            "MODEL_EMA.ENABLED",
            True,
            "MODEL_EMA.WARMUP_ITERS",
            0,
            "MODEL_EMA.DECAY",
            0.9,
            "OUTPUT_DIR",
            out,
        ]
        if device == "cpu":
            opts += ["INPUT.TRAIN_SIZE", 64, "SOLVER.IMS_PER_BATCH", 2]
        _, trainer = train(demo_cfg("TTFNet", device, *opts), iters)
        ema = trainer.ema.state
        model = trainer.unwrapped_model.state_dict()
        moved = sum(not torch.equal(ema[k].float(), model[k].float()) for k in model if model[k].is_floating_point())
        if not all(torch.isfinite(v.float()).all() for v in ema.values()):
            raise AssertionError("non-finite EMA weights")
        if moved == 0:
            raise AssertionError("the EMA equals the trained weights")
    if not cuda():
        raise Skip(f"no CUDA device; CPU smoke run: EMA finite, {moved} tensors differ from the trained ones")
    return f"{iters} it, EMA finite, {moved} tensors differ from the trained ones"


def check_ddp():
    if not cuda():
        raise Skip("no CUDA device (two-process training is tested on CPU with gloo: tests/engine/test_distributed.py)")
    if torch.cuda.device_count() < 2:
        raise Skip("one GPU: NCCL gives each process its own GPU, so 2-process DDP needs 2 GPUs")
    with tempfile.TemporaryDirectory() as out:
        ensure_datasets(["shapes_train"])
        cmd = [
            sys.executable,
            os.path.join(REPO, "train_net.py"),
            "--config-file",
            os.path.join(REPO, DEMOS["TTFNet"]),
            "--num-gpus",
            "2",
            "SOLVER.MAX_ITER",
            "20",
            "TEST.EVAL_PERIOD",
            "0",
            "DATASETS.TEST",
            "()",
            "MODEL.CENTERX.NECK_NORM",
            "SyncBN",
            "SOLVER.AMP.ENABLED",
            "True",
            "OUTPUT_DIR",
            out,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
        if proc.returncode != 0:
            raise AssertionError((proc.stdout + proc.stderr)[-1500:])
        text = proc.stdout + proc.stderr
        if "identical on all 2 processes" not in text:
            raise AssertionError("the replicas were not reported identical")
    return "2 processes x 1 GPU, 20 it, SyncBN, replicas identical"


def check_fp16_peaks():
    device = "cuda" if cuda() else "cpu"
    g = torch.Generator().manual_seed(0)
    heat = torch.rand(2, 4, 64, 64, generator=g)
    heat[heat < 0.7] *= 0.1
    reference = peak_mask(heat.double()) > 0
    half = peak_mask(heat.to(device).half()).float().cpu() > 0
    exact = peak_mask(heat.half().double()) > 0  # the FP32 mask of the same float16 values
    if not torch.equal(half, exact):
        raise AssertionError(f"{int((half != exact).sum())} cells differ from the mask of the same float16 scores")
    detail = (
        f"{int(half.sum())} peaks, identical to the FP64 mask of the float16 scores "
        f"({int((half != reference).sum())} differ from FP64 of the FP32 scores: float16 ties)"
    )
    if not cuda():
        raise Skip(f"no CUDA device; CPU float16 run: {detail}")
    return detail


def _tiny_exported(tmp: str, arch: str = "CenterNet") -> tuple:
    """A random-weight demo model at 256 px, exported to ONNX; (cfg, DeployModel, onnx path)."""
    from centerx.deploy.onnx_export import export_onnx

    cfg = demo_cfg(arch, "cpu", "EXPORT.INPUT_SIZE", (256, 256))
    model = build_model(cfg).eval()
    with torch.no_grad():
        for m in model.heads.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
    wrapper = DeployModel(model).eval()
    path = os.path.join(tmp, "model.onnx")
    export_onnx(wrapper, path, (256, 256))
    return cfg, wrapper, path


def check_onnxruntime_cuda():
    import onnxruntime as ort

    provider = "CUDAExecutionProvider" if cuda() else "CPUExecutionProvider"
    if cuda() and provider not in ort.get_available_providers():
        raise Skip("onnxruntime has no CUDAExecutionProvider: pip install onnxruntime-gpu (in place of onnxruntime)")
    with tempfile.TemporaryDirectory() as tmp:
        _, wrapper, path = _tiny_exported(tmp)
        x = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(2)) * 255
        session = ort.InferenceSession(path, providers=[provider])
        out = dict(
            zip(["boxes", "scores", "classes"], session.run(["boxes", "scores", "classes"], {"images": x.numpy()}))
        )
        with torch.no_grad():
            ref = {k: v.numpy() for k, v in wrapper(x).items()}
    agreement = compare_detections(out, ref, **FP32_TOLERANCE)
    if not agreement.ok:
        raise AssertionError(str(agreement))
    if not cuda():
        raise Skip(f"no CUDA device; CPU provider run: {agreement}")
    return str(agreement)


def check_tensorrt(fp16: bool) -> Callable[[], str]:
    def run():
        from centerx.deploy.tensorrt_engine import (
            TensorRTUnavailable,
            build_engine,
            execute,
            import_tensorrt,
            load_engine,
        )

        try:
            import_tensorrt()
        except TensorRTUnavailable as e:
            raise Skip(str(e)) from None
        with tempfile.TemporaryDirectory() as tmp:
            _, wrapper, path = _tiny_exported(tmp)
            engine_path = build_engine(path, os.path.join(tmp, "m.engine"), (256, 256), 4, fp16, 2048)
            engine = load_engine(engine_path)
            x = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(3)) * 255
            out = execute(engine, engine.create_execution_context(), x.cuda(), torch.cuda.Stream())
            with torch.no_grad():
                ref = {k: v.numpy() for k, v in wrapper(x).items()}
        agreement = compare_detections(
            {k: v.cpu().numpy() for k, v in out.items()}, ref, **(FP16_TOLERANCE if fp16 else FP32_TOLERANCE)
        )
        if not agreement.ok:
            raise AssertionError(str(agreement))
        return str(agreement)

    return run


def check_benchmarks():
    if not cuda():
        raise Skip("no CUDA device: the GPU benchmark rows need one")
    rows = []
    for cmd in (
        [
            sys.executable,
            "projects/speedup/latency_vs_retinanet.py",
            "--models",
            "centernet",
            "ttfnet",
            "retinanet",
            "--runtimes",
            "pytorch",
            "onnxruntime",
            "tensorrt",
            "--batches",
            "1",
            "8",
            "--reps",
            "50",
            "--warmup",
            "10",
        ],
        [
            sys.executable,
            "projects/benchmarks/train_throughput.py",
            "--amp",
            "both",
            "--iters",
            "20",
            "--batch",
            "32",
            "--size",
            "512",
        ],
    ):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO)
        if proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd[1:2])}: {(proc.stdout + proc.stderr)[-1500:]}")
        table = [line for line in proc.stdout.splitlines() if line.startswith("|")]
        print("\n" + " ".join(cmd[1:]) + "\n" + "\n".join(table))
        rows.append(len(table))
    return f"inference and training tables printed above ({rows[0]} and {rows[1]} lines)"


CHECKS = [
    ("AMP training, CenterNet (100 it)", check_amp_training("CenterNet")),
    ("AMP training, TTFNet (100 it)", check_amp_training("TTFNet")),
    ("EMA under AMP", check_ema),
    ("DDP, 2 processes", check_ddp),
    ("FP16 peak masking on CUDA", check_fp16_peaks),
    ("ONNX Runtime CUDA parity", check_onnxruntime_cuda),
    ("TensorRT FP32 engine parity", check_tensorrt(False)),
    ("TensorRT FP16 engine parity", check_tensorrt(True)),
    ("GPU benchmark rows", check_benchmarks),
]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--skip-benchmarks", action="store_true", help="leave out the benchmark rows (the longest part)")
    args = p.parse_args(argv)
    device = torch.cuda.get_device_name(0) if cuda() else "no CUDA device"
    print(f"centerX GPU check on {device} (torch {torch.__version__}, CUDA {torch.version.cuda})")
    ensure_datasets(["shapes_train", "shapes_val"])
    rows, failed = [], False
    for name, check in CHECKS:
        if args.skip_benchmarks and check is check_benchmarks:
            rows.append((name, "SKIP", "--skip-benchmarks", ""))
            continue
        t0 = time.perf_counter()
        try:
            status, detail = "PASS", check()
        except Skip as e:
            status, detail = "SKIP", str(e)
        except Exception as e:  # a failing check is a row of the table, the others still run
            status, detail, failed = "FAIL", f"{type(e).__name__}: {e}", True
            traceback.print_exc()
        rows.append((name, status, detail, f"{time.perf_counter() - t0:.0f} s"))
        print(f"[gpu-check] {name}: {status} {detail}", flush=True)
    print("\n" + tabulate(rows, headers=["check", "result", "detail", "time"], tablefmt="github"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
