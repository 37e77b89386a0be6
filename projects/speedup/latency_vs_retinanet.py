#!/usr/bin/env python
"""Latency and throughput of CenterNet-R18 and TTFNet-R18 against their backbone
and against detectron2's RetinaNet-R18-FPN, on each available runtime.

    python projects/speedup/latency_vs_retinanet.py [--size 512] [--batches 1 8] [--warmup 2] [--reps 10]
        [--models centernet ttfnet retinanet]
        [--runtimes pytorch torchscript onnxruntime onnxruntime-int8 openvino tensorrt]
        [--threads N]

Every model gets the same input: float32 [N, 3, size, size] pixels. Rows:

- CenterNet-R18 / TTFNet-R18 end to end: the deployment graph (normalisation,
  network, peak masking, top-K decode to boxes); TTFNet with plain convs
  (MODEL.TTFNET.DEFORMABLE False), the exportable variant.
- ResNet-18 backbone: the same normalisation and ResNet-18 body alone.
- RetinaNet-R18-FPN: detectron2's RetinaNet (COCO-Detection/retinanet_R_50_FPN_1x
  with RESNETS.DEPTH 18, RES2_OUT_CHANNELS 64), end to end with its
  pre-processing, NMS and post-processing (ONNX through detectron2's
  TracingAdapter, which fixes the batch). Random weights leave it few boxes
  above its 0.05 score threshold, so its NMS time is a lower bound.

The centerX rows run the way every centerX command runs a model: exported by
the registered exporters (centerx.deploy.exporters: torchscript, onnx,
onnx-int8, openvino, tensorrt) and timed through the registered runtimes'
``run`` (centerx.deploy.runtimes: the graph on a letterboxed batch, inputs in
and outputs out as NumPy arrays, as ``./run.sh predict`` and ``evaluate`` run
it). The backbone and RetinaNet are not centerX models: their graphs are timed
in plain sessions of the same runtimes, with the same thread counts.

Runtimes: PyTorch eager (CUDA when available, else CPU), TorchScript on CPU,
OpenVINO on CPU (FP32), ONNX Runtime on CPU and on CUDA (where onnxruntime has
the CUDA provider), ONNX Runtime on CPU with the static INT8 graph (centerX
graphs; calibrated on 4 images of ``--calibration-dataset``, default shapes_val, which sets its ranges but not its
speed), TensorRT FP32 and FP16 (where TensorRT and a GPU are present; centerX
graphs and the backbone). Models are randomly initialised: speed does not
depend on the weights.
Latency is the median time of one batch; throughput is images per second
over all timed repetitions. "/ backbone" divides a latency by the backbone's
on the same runtime and batch, "/ CenterNet" by CenterNet-R18's.
"""

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable

import torch
from detectron2 import model_zoo
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.utils.logger import setup_logger
from tabulate import tabulate
from torch import nn

import centerx
from centerx.data.datasets import ensure_datasets
from centerx.deploy import DeployModel, ExportError
from centerx.deploy.exporters import export, get_exporter
from centerx.deploy.onnx_export import simplify
from centerx.deploy.quantize import import_quantization
from centerx.deploy.runtimes import OnnxRuntime, TorchRuntime, build_runtime
from centerx.deploy.tensorrt_engine import TensorRTUnavailable, build_engine, import_tensorrt

logger = logging.getLogger("centerx.benchmark")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = {
    "centernet": ("CenterNet-R18", "configs/COCO-Detection/centernet_r18_140e.yaml", []),
    "ttfnet": ("TTFNet-R18", "configs/COCO-Detection/ttfnet_r18_1x.yaml", ["MODEL.TTFNET.DEFORMABLE", "False"]),
}
BACKBONE = "ResNet-18 backbone"
RETINANET = "RetinaNet-R18-FPN"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512, help="square input side in pixels (multiple of 32)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="batch sizes")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs before timing")
    parser.add_argument("--reps", type=int, default=10, help="timed runs per model, runtime and batch")
    parser.add_argument(
        "--models",
        nargs="+",
        default=["centernet", "ttfnet", "retinanet"],
        choices=["centernet", "ttfnet", "retinanet"],
        help="detectors besides the backbone",
    )
    runtimes = ["pytorch", "torchscript", "onnxruntime", "onnxruntime-int8", "openvino", "tensorrt"]
    parser.add_argument(
        "--runtimes",
        nargs="+",
        default=runtimes,
        choices=runtimes,
        help="runtimes to time (unavailable ones are reported and skipped)",
    )
    parser.add_argument(
        "--calibration-dataset",
        default="shapes_val",
        metavar="NAME",
        help="registered dataset whose first 4 images calibrate the INT8 graphs (shapes_val is generated when missing)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count(),
        help="CPU threads of PyTorch and ONNX Runtime (default: all cores)",
    )
    args = parser.parse_args(argv)
    if args.size < 32 or args.size % 32:  # centerX's exports take multiples of 32 only: every row would be n/a
        parser.error(f"--size must be a positive multiple of 32, got {args.size}")
    if args.reps < 1 or args.warmup < 0 or min(args.batches) < 1 or args.threads < 1:
        parser.error("--reps, --batches and --threads must be at least 1, --warmup at least 0")
    return args


class BackboneOnly(nn.Module):
    """Pixels [N, 3, H, W] -> normalised -> ResNet body -> its stride-32 map."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        x = (images - self.model.pixel_mean) / self.model.pixel_std
        return self.model.backbone(x)["res5"]


class RetinaNetOnTensor(nn.Module):
    """detectron2's RetinaNet end to end on a pixel batch [N, 3, H, W]: one
    detectron2 input dict per image (its own normalisation, padding, NMS and
    post-processing); returns the boxes of every image, concatenated."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        results = self.model([{"image": im} for im in images])
        return torch.cat([r["instances"].pred_boxes.tensor for r in results])


def centerx_config(config: str, opts: list[str], size: int, max_batch: int, calibration: str):
    """The config of a centerX row: random weights, CPU, exported at ``size``."""
    cfg = centerx.get_centerx_cfg()
    cfg.merge_from_file(os.path.join(REPO, config))
    cfg.merge_from_list(opts)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = cfg.MODEL.CENTERX.BACKBONE_WEIGHTS = ""
    cfg.EXPORT.INPUT_SIZE = (size, size)
    cfg.EXPORT.TENSORRT_MAX_BATCH = max_batch
    cfg.EXPORT.CALIBRATION_DATASET = calibration
    cfg.freeze()
    return cfg


def retinanet_model() -> nn.Module:
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file("COCO-Detection/retinanet_R_50_FPN_1x.yaml"))
    cfg.merge_from_list(
        [
            "MODEL.RESNETS.DEPTH",
            "18",
            "MODEL.RESNETS.RES2_OUT_CHANNELS",
            "64",
            "MODEL.DEVICE",
            "cpu",
            "MODEL.WEIGHTS",
            "",
        ]
    )
    return RetinaNetOnTensor(build_model(cfg).eval()).eval()


def measure(fn: Callable[[], None], batch: int, warmup: int, reps: int) -> dict[str, float]:
    """Median latency (ms per batch) and throughput (images / s) of ``fn``."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"ms": 1000 * statistics.median(times), "ips": batch * reps / sum(times)}


def eager_runner(module: nn.Module, device: torch.device, x: torch.Tensor) -> Callable[[], None]:
    module = module.to(device)
    x = x.to(device)

    def run():
        with torch.no_grad():
            module(x)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return run


def export_plain_onnx(module: nn.Module, path: str, x: torch.Tensor, dynamic_batch: bool) -> None:
    """Trace a reference module (backbone, RetinaNet) to ONNX with input ``images``."""
    from detectron2.export import TracingAdapter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if isinstance(module, RetinaNetOnTensor):
            adapter = TracingAdapter(module.model, [{"image": im} for im in x])
            torch.onnx.export(
                adapter,
                adapter.flattened_inputs,
                path,
                dynamo=False,
                opset_version=17,
                input_names=[f"image{i}" for i in range(len(x))],
            )
        else:
            torch.onnx.export(
                module,
                (x,),
                path,
                dynamo=False,
                opset_version=17,
                input_names=["images"],
                output_names=["features"],
                dynamic_axes={"images": {0: "batch"}} if dynamic_batch else None,
            )
    import onnx

    onnx.save(simplify(onnx.load(path)), path)


def ort_runner(path: str, x: torch.Tensor, provider: str, threads: int) -> Callable[[], None]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(path, options, providers=[provider])
    names = [i.name for i in session.get_inputs()]
    feeds = {"images": x.numpy()} if names == ["images"] else {n: im.numpy() for n, im in zip(names, x)}
    return lambda: session.run(None, feeds)


def openvino_runner(onnx_path: str, x: torch.Tensor, threads: int) -> Callable[[], None]:
    """The ONNX file converted to OpenVINO (in memory) and compiled for its CPU
    device at FP32 precision (as the other CPU rows) with ``threads`` threads."""
    import openvino as ov

    compiled = ov.Core().compile_model(
        ov.convert_model(onnx_path), "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads}
    )
    names = [port.get_any_name() for port in compiled.inputs]
    feeds = {"images": x.numpy()} if names == ["images"] else {n: im.numpy() for n, im in zip(names, x)}
    request = compiled.create_infer_request()
    return lambda: request.infer(feeds)


def torchscript_runner(module: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """``module`` traced on the CPU with torch.jit.trace, as the torchscript export does."""
    if isinstance(module, RetinaNetOnTensor):
        raise NotImplementedError("the TorchScript rows cover the centerX graphs and the backbone")
    module = module.cpu()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, x, strict=False, check_trace=False)
    return eager_runner(traced, torch.device("cpu"), x)


def tensorrt_runner(engine_path: str, x: torch.Tensor) -> Callable[[], None]:
    from centerx.deploy.tensorrt_engine import execute, load_engine

    engine = load_engine(engine_path)
    context = engine.create_execution_context()
    stream = torch.cuda.Stream()
    images = x.cuda()
    return lambda: execute(engine, context, images, stream)


def available_runtimes(requested: list[str]) -> dict[str, str]:
    """Runtime label -> what runs it, for the requested runtimes present here."""
    found = {}
    if "pytorch" in requested:
        found[f"pytorch-{'cuda' if torch.cuda.is_available() else 'cpu'}"] = "eager"
    if "onnxruntime" in requested:
        try:
            import onnxruntime as ort

            found["onnxruntime-cpu"] = "CPUExecutionProvider"
            if "CUDAExecutionProvider" in ort.get_available_providers():
                found["onnxruntime-cuda"] = "CUDAExecutionProvider"
        except ImportError:
            logger.warning("onnxruntime is not installed: ONNX Runtime rows skipped.")
    if "onnxruntime-int8" in requested:
        try:
            import_quantization()
            found["onnxruntime-int8-cpu"] = "int8"
        except ExportError as e:
            logger.warning(f"ONNX Runtime INT8 rows skipped: {e}")
    if "openvino" in requested:
        try:
            import openvino  # noqa: F401

            found["openvino-cpu"] = "openvino"
        except ImportError:
            logger.warning("openvino is not installed: OpenVINO rows skipped.")
    if "torchscript" in requested:
        found["torchscript-cpu"] = "torchscript"
    if "tensorrt" in requested:
        try:
            import_tensorrt()
            found["tensorrt-fp32"], found["tensorrt-fp16"] = "fp32", "fp16"
        except TensorRTUnavailable as e:
            logger.warning(f"TensorRT rows skipped: {e}")
    return found


# runtime label's "how" -> (export format, its options) of a centerX row
CENTERX_EXPORTS = {
    "torchscript": ("torchscript", {}),
    "CPUExecutionProvider": ("onnx", {}),
    "CUDAExecutionProvider": ("onnx", {}),
    "int8": ("onnx-int8", {"calibration_images": 4}),
    "openvino": ("openvino", {}),
    "fp32": ("tensorrt", {"fp16": False}),
    "fp16": ("tensorrt", {"fp16": True}),
}


class CenterXRunners:
    """The callable that runs a centerX model's graph on a batch through its
    registered runtime; each model is exported once per format into ``folder``."""

    def __init__(self, folder: str, threads: int):
        self.folder, self.threads = folder, threads
        self.files = {}

    def __call__(self, runtime: str, how: str, name: str, cfg, x: torch.Tensor) -> Callable[[], None]:
        if how == "eager":
            device_cfg = cfg.clone()
            device_cfg.defrost()
            device_cfg.MODEL.DEVICE = "cuda" if runtime.endswith("cuda") else "cpu"
            loaded = TorchRuntime(device_cfg, allow_random=True)
        else:
            fmt, options = CENTERX_EXPORTS[how]
            path = self._export(name, cfg, fmt, options)
            if fmt in ("onnx", "onnx-int8"):  # the provider of the row, not the runtime's preference
                provider = "CPUExecutionProvider" if fmt == "onnx-int8" else how
                loaded = OnnxRuntime(cfg, path, providers=[provider], session_options=self._ort_options())
            else:
                loaded = build_runtime(get_exporter(fmt).runtime, cfg, path, threads=self.threads)
        batch = x.numpy()
        return lambda: loaded.run(batch)

    def _export(self, name: str, cfg, fmt: str, options: dict) -> str:
        key = (name, fmt, tuple(sorted(options.items())))
        if key not in self.files:
            folder = os.path.join(self.folder, f"{name}-{fmt}-{len(self.files)}".replace(" ", "_"))
            self.files[key] = export(cfg, fmt, folder, allow_random=True, **options)
        return self.files[key]

    def _ort_options(self):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        return options


class ReferenceRunners:
    """The callable that runs a reference graph (the backbone, RetinaNet) on a
    batch in a runtime's plain session; ONNX files and engines are made once per
    model (per batch where the graph fixes it) into ``folder``."""

    def __init__(self, folder: str, size, max_batch: int, threads: int):
        self.folder, self.size, self.max_batch, self.threads = folder, size, max_batch, threads
        self.files = {}

    def __call__(self, runtime: str, how: str, name: str, module: nn.Module, x: torch.Tensor) -> Callable[[], None]:
        if how == "eager":
            return eager_runner(module, torch.device("cuda" if runtime.endswith("cuda") else "cpu"), x)
        if how == "torchscript":
            return torchscript_runner(module, x)
        if how == "int8":
            raise NotImplementedError("the INT8 rows cover the centerX graphs")
        onnx_path = self._onnx(name, module.cpu(), x)
        if how == "openvino":
            return openvino_runner(onnx_path, x, self.threads)
        if runtime.startswith("onnxruntime"):
            return ort_runner(onnx_path, x, how, self.threads)
        if name == RETINANET:
            raise NotImplementedError("the TensorRT rows cover the centerX graphs and the backbone")
        engine = f"{onnx_path[:-5]}-{how}.engine"
        if engine not in self.files:
            self.files[engine] = build_engine(
                onnx_path, engine, self.size, max_batch=self.max_batch, fp16=how == "fp16"
            )
        return tensorrt_runner(engine, x)

    def _onnx(self, name: str, module: nn.Module, x: torch.Tensor) -> str:
        stem = name.replace(" ", "_") + (f"-batch{len(x)}" if name == RETINANET else "")
        path = os.path.join(self.folder, f"{stem}.onnx")
        if path not in self.files:
            export_plain_onnx(module, path, x, dynamic_batch=name != RETINANET)
            self.files[path] = path
        return path


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logger(name="centerx")
    torch.set_num_threads(args.threads)
    ensure_datasets([args.calibration_dataset])
    configs = {
        CONFIGS[key][0]: centerx_config(*CONFIGS[key][1:], args.size, max(args.batches), args.calibration_dataset)
        for key in ("centernet", "ttfnet")
        if key in args.models
    }
    # the backbone of CenterNet-R18 (the same ResNet-18 for both detectors)
    backbone_cfg = centerx_config(*CONFIGS["centernet"][1:], args.size, 1, args.calibration_dataset)
    backbone = DeployModel(build_model(backbone_cfg)).eval()
    references = {BACKBONE: BackboneOnly(backbone.model).eval()}
    if "retinanet" in args.models:
        references[RETINANET] = retinanet_model()

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        centerx_runners = CenterXRunners(folder, args.threads)
        reference_runners = ReferenceRunners(folder, (args.size, args.size), max(args.batches), args.threads)
        for runtime, how in available_runtimes(args.runtimes).items():
            models = [(name, cfg, centerx_runners) for name, cfg in configs.items()]
            models += [(name, module, reference_runners) for name, module in references.items()]
            for name, model, runners in models:
                for batch in args.batches:
                    x = torch.rand(batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0)) * 255
                    try:
                        result = measure(runners(runtime, how, name, model, x), batch, args.warmup, args.reps)
                        logger.info(f"{name} on {runtime}, batch {batch}: {result['ms']:.1f} ms")
                    except Exception as e:  # a model a runtime cannot take is a row, not a crash
                        logger.warning(f"{name} on {runtime}, batch {batch}: not measured ({type(e).__name__}: {e})")
                        result = None
                    rows.append((name, runtime, batch, result))
    print(_table(rows))
    return 0


def _table(rows) -> str:
    """The results with latency ratios to the backbone and to CenterNet-R18."""
    ms = {(n, r, b): res["ms"] for n, r, b, res in rows if res}
    table = []
    for name, runtime, batch, res in rows:
        if not res:
            table.append([name, runtime, batch, "n/a", "n/a", "", ""])
            continue
        backbone = ms.get((BACKBONE, runtime, batch))
        centernet = ms.get((CONFIGS["centernet"][0], runtime, batch))
        table.append(
            [
                name,
                runtime,
                batch,
                f"{res['ms']:.1f}",
                f"{res['ips']:.1f}",
                f"{res['ms'] / backbone:.2f}" if backbone else "",
                f"{res['ms'] / centernet:.2f}" if centernet else "",
            ]
        )
    return tabulate(
        table,
        headers=["model", "runtime", "batch", "latency ms", "images/s", "/ backbone", "/ CenterNet"],
        tablefmt="pipe",
        disable_numparse=True,
        colalign=("left",) * 2 + ("right",) * 5,
    )


if __name__ == "__main__":
    sys.exit(main())
