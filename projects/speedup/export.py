#!/usr/bin/env python
"""Export a centerX model to ONNX (FP32 or INT8), Caffe or TensorRT (the I/O contract of docs/design.md).

    python projects/speedup/export.py --config-file configs/COCO-Detection/centernet_r18_140e.yaml \
        --format onnx [--opset 17] [--raw] [--output DIR] MODEL.WEIGHTS model_final.pth
    python projects/speedup/export.py --config-file ... --format onnx-int8 [--calibration-images 32] \
        [--calibration-dataset NAME] MODEL.WEIGHTS ...
    python projects/speedup/export.py --config-file ... --format caffe MODEL.WEIGHTS ...
    python projects/speedup/export.py --config-file ... --format tensorrt [--fp16] MODEL.WEIGHTS ...

Trailing ``KEY VALUE`` pairs override the config, as in train_net.py. The graph
is traced on CPU at ``EXPORT.INPUT_SIZE``; then the file is loaded in its
runtime (ONNX Runtime for ONNX and TensorRT, OpenCV for Caffe) on a random
image and its agreement with PyTorch is checked (centerx.deploy.verify):
near-tied cells that swap are reported, a missing detection or peak fails the
export with exit code 3 (the file stays written). ``onnx-int8`` writes the FP32
``model.onnx`` and its static INT8 quantisation ``model_int8.onnx``
(centerx.deploy.quantize), calibrated on images of a registered dataset, logs
both file sizes and checks the INT8 detections against FP32 on one of them.

The weights are loaded strictly: MODEL.WEIGHTS empty, or a checkpoint that
leaves a parameter of the config's model missing or mis-shaped, stops the
export with exit code 2 and the reason; ``--allow-random-weights`` exports a
randomly initialised model on purpose.
"""
import argparse
import logging
import os
import sys
from typing import List

import torch
from detectron2.utils.logger import setup_logger

import centerx
from centerx.checkpoint import MissingWeightsError, UnsafeWeightsError, WeightsMismatchError
from centerx.deploy import ExportError, build_deploy_model, check_input_size
from centerx.deploy.onnx_export import DEFAULT_OPSET
from centerx.deploy.quantize import (
    calibration_files,
    calibration_reader,
    import_quantization,
    quantize_onnx,
)
from centerx.deploy.tensorrt_engine import TensorRTUnavailable
from centerx.deploy.verify import FP32_TOLERANCE, INT8_TOLERANCE, compare_detections, compare_raw

logger = logging.getLogger("centerx.export")
# The INT8 check covers detections scoring above INT8_SCORE (the visualisation
# threshold of the training hook)
INT8_SCORE = 0.3


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE", help="path to the model's config")
    parser.add_argument("--format", required=True, choices=("onnx", "onnx-int8", "caffe", "tensorrt"),
                        help="what to export (onnx-int8: model.onnx and its INT8 quantisation model_int8.onnx)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                        help=f"ONNX opset (default {DEFAULT_OPSET}; deformable convs need 19)")
    parser.add_argument("--raw", action="store_true",
                        help="ONNX: output the peak-masked heatmap and regression maps instead of decoded boxes")
    parser.add_argument("--fp16", action="store_true", help="TensorRT: build an FP16 engine (FP32 otherwise)")
    parser.add_argument("--calibration-images", type=int, metavar="N",
                        help="onnx-int8: number of calibration images, evenly spread over the dataset "
                             "(default EXPORT.CALIBRATION_IMAGES)")
    parser.add_argument("--calibration-dataset", metavar="NAME",
                        help="onnx-int8: registered dataset to calibrate on (default EXPORT.CALIBRATION_DATASET, else "
                             "DATASETS.TEST[0], else DATASETS.TRAIN[0])")
    parser.add_argument("--output", metavar="DIR", help="output folder (default OUTPUT_DIR/deploy)")
    parser.add_argument("--allow-random-weights", action="store_true",
                        help="export a randomly initialised model when MODEL.WEIGHTS is empty (refused otherwise)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE pairs")
    return parser.parse_args(argv)


def setup(args):
    cfg = centerx.get_centerx_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.MODEL.DEVICE = "cpu"  # tracing on CPU; the exported graph runs on any device
    cfg.freeze()
    return cfg


class DisagreementError(RuntimeError):
    """The exported file does not compute what the PyTorch model computes."""


def check_agreement(runtime: str, outputs: dict, reference: dict, trained: bool) -> None:
    """Log how the exported file agrees with PyTorch on one image
    (:mod:`centerx.deploy.verify`) and raise :class:`DisagreementError` when a
    detection or peak is missing, or, for a ``trained`` model, when more than
    MAX_TIE_FRACTION of them are near-ties (a random model's flat heatmap may
    tie everywhere)."""
    if "boxes" in reference:
        agreement = compare_detections(outputs, reference, **FP32_TOLERANCE)
    else:
        agreement = compare_raw(outputs, reference, FP32_TOLERANCE["score"])
    logger.info(f"{runtime} against PyTorch on a random image: {agreement}.")
    if not (agreement.ok_for_trained_model() if trained else agreement.ok):
        raise DisagreementError(f"{runtime} disagrees with PyTorch beyond the tolerance ({agreement}); the file "
                                "was written but does not compute the model. Please report it with the config.")


def export_onnx(cfg, out_dir: str, raw: bool, opset: int, allow_random: bool = False) -> str:
    """model.onnx (model_raw.onnx) in out_dir, run once in ONNX Runtime."""
    from centerx.deploy.onnx_export import export_onnx as export

    model = build_deploy_model(cfg, raw=raw, allow_random=allow_random)
    path = os.path.join(out_dir, "model_raw.onnx" if raw else "model.onnx")
    export(model, path, check_input_size(cfg.EXPORT.INPUT_SIZE), opset=opset)
    try:
        import onnxruntime as ort
    except ImportError:
        logger.warning("onnxruntime is not installed: the exported file was not run.")
        return path
    images = torch.rand(1, 3, *check_input_size(cfg.EXPORT.INPUT_SIZE)) * 255
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(names, {"images": images.numpy()})))
    with torch.no_grad():
        reference = {k: v.numpy() for k, v in model(images).items()}
    check_agreement("ONNX Runtime", outputs, reference, trained=bool(cfg.MODEL.WEIGHTS))
    return path


def export_onnx_int8(cfg, out_dir: str, opset: int, calibration: List[str], allow_random: bool = False) -> str:
    """model.onnx and its INT8 quantisation model_int8.onnx in out_dir,
    calibrated on the image files ``calibration``; logs both sizes and the
    agreement of their detections on the first calibration image."""
    fp32 = export_onnx(cfg, out_dir, raw=False, opset=opset, allow_random=allow_random)
    int8 = quantize_onnx(fp32, os.path.join(out_dir, "model_int8.onnx"), calibration_reader(cfg, calibration))
    mib = [os.path.getsize(p) / 2 ** 20 for p in (fp32, int8)]
    logger.info(f"Sizes: {os.path.basename(fp32)} {mib[0]:.1f} MiB, {os.path.basename(int8)} {mib[1]:.1f} MiB "
                f"({mib[1] / mib[0]:.2f} of FP32).")
    _check_int8_agreement(cfg, fp32, int8, calibration[0])
    return int8


def _check_int8_agreement(cfg, fp32: str, int8: str, image_file: str) -> None:
    """Log how the INT8 graph's confident detections (score above INT8_SCORE)
    match FP32's on one image (same class, IoU > 0.9, score within 0.03; near-ties
    reported) and raise :class:`DisagreementError` when one is missing."""
    import cv2

    from centerx.deploy.runtimes import OnnxRuntime

    image = cv2.imread(image_file, cv2.IMREAD_COLOR)
    ref, out = (OnnxRuntime(cfg, path, providers=["CPUExecutionProvider"])([image])[0] for path in (fp32, int8))
    agreement = compare_detections(out, ref, score_floor=INT8_SCORE, **INT8_TOLERANCE)
    logger.info(f"ONNX Runtime INT8 against FP32 on {image_file}, detections above {INT8_SCORE}: {agreement}.")
    if not (agreement.ok_for_trained_model() if cfg.MODEL.WEIGHTS else agreement.ok):
        raise DisagreementError(f"The INT8 graph disagrees with FP32 beyond the tolerance ({agreement}); try more "
                                "calibration images (--calibration-images) from the data the model will see.")


def export_caffe(cfg, out_dir: str, allow_random: bool = False) -> str:
    """model.prototxt + model.caffemodel in out_dir, run once in OpenCV."""
    import cv2

    from centerx.deploy.caffe_export import export_caffe as export

    model = build_deploy_model(cfg, raw=True, allow_random=allow_random)
    size = check_input_size(cfg.EXPORT.INPUT_SIZE)
    prototxt, caffemodel = export(model, os.path.join(out_dir, "model"), size)
    net = cv2.dnn.readNetFromCaffe(prototxt, caffemodel)
    images = torch.rand(1, 3, *size) * 255
    net.setInput(images.numpy(), "images")
    names = list(net.getUnconnectedOutLayersNames())
    outputs = dict(zip(names, net.forward(names)))
    with torch.no_grad():
        reference = {k: v.numpy() for k, v in model(images).items()}
    check_agreement("OpenCV (Caffe)", outputs, reference, trained=bool(cfg.MODEL.WEIGHTS))
    return prototxt


def export_tensorrt(cfg, out_dir: str, opset: int, fp16: bool, allow_random: bool = False) -> str:
    """model.onnx and model_fp32.engine (model_fp16.engine) in out_dir."""
    from centerx.deploy.tensorrt_engine import build_engine, import_tensorrt

    import_tensorrt()  # fail early, before the ONNX export, without TensorRT or a GPU
    onnx_path = export_onnx(cfg, out_dir, raw=False, opset=opset, allow_random=allow_random)
    engine = os.path.join(out_dir, f"model_{'fp16' if fp16 else 'fp32'}.engine")
    return build_engine(onnx_path, engine, check_input_size(cfg.EXPORT.INPUT_SIZE),
                        cfg.EXPORT.TENSORRT_MAX_BATCH, fp16, cfg.EXPORT.TENSORRT_WORKSPACE_MB)


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logger(name="centerx")
    cfg = setup(args)
    if args.raw and args.format != "onnx":
        raise SystemExit("--raw applies to --format onnx (Caffe exports are raw; TensorRT engines and the INT8 "
                         "graph of onnx-int8 are decoded).")
    if (args.calibration_images is not None or args.calibration_dataset) and args.format != "onnx-int8":
        raise SystemExit("--calibration-images and --calibration-dataset apply to --format onnx-int8.")
    if args.fp16 and args.format != "tensorrt":
        raise SystemExit("--fp16 applies to --format tensorrt.")
    out_dir = args.output or os.path.join(cfg.OUTPUT_DIR, "deploy")
    try:
        random = args.allow_random_weights
        if args.format == "onnx":
            path = export_onnx(cfg, out_dir, args.raw, args.opset, random)
        elif args.format == "onnx-int8":
            import_quantization()  # fail early, before the FP32 export
            try:
                calibration = calibration_files(cfg, args.calibration_dataset, args.calibration_images)
            except (ValueError, FileNotFoundError) as e:
                raise SystemExit(str(e)) from e
            path = export_onnx_int8(cfg, out_dir, args.opset, calibration, random)
        elif args.format == "caffe":
            path = export_caffe(cfg, out_dir, random)
        else:
            path = export_tensorrt(cfg, out_dir, args.opset, args.fp16, random)
    except (ExportError, TensorRTUnavailable, MissingWeightsError, WeightsMismatchError, UnsafeWeightsError) as e:
        logger.error(str(e))
        return 2
    except DisagreementError as e:
        logger.error(str(e))
        return 3
    logger.info(f"Done: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
