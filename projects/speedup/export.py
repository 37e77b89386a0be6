#!/usr/bin/env python
"""Export a centerX model in any registered format (centerx.deploy.exporters: ONNX FP32
or INT8, Caffe, TensorRT, and any format a user registers; the I/O contract of docs/design.md).

    python projects/speedup/export.py --config-file configs/COCO-Detection/centernet_r18_140e.yaml \
        --format onnx [--opset 17] [--raw] [--output DIR] MODEL.WEIGHTS model_final.pth
    python projects/speedup/export.py --config-file ... --format onnx-int8 [--calibration-images 32] \
        [--calibration-dataset NAME] MODEL.WEIGHTS ...
    python projects/speedup/export.py --config-file ... --format caffe MODEL.WEIGHTS ...
    python projects/speedup/export.py --config-file ... --format tensorrt [--fp16] MODEL.WEIGHTS ...
    python projects/speedup/export.py --config-file ... --format onnx openvino onnx-int8 torchscript MODEL.WEIGHTS ...

Several formats in one command are exported one after the other into the same
folder, each to its own file names (model.onnx, model.xml/.bin, model_int8.onnx,
model.ts, model.prototxt, model_fp32.engine): none overwrites another's. Every
file carries the model's class names, input size, normalisation, score
threshold, architecture, centerX version and deployment config
(centerx.deploy.model_info), so ``./run.sh predict --model FILE`` and
``./run.sh evaluate --model FILE`` run it with nothing else.

Trailing ``KEY VALUE`` pairs override the config, as in train_net.py. The graph
is traced on CPU at ``EXPORT.INPUT_SIZE``; then the file is loaded in its
runtime (ONNX Runtime for ONNX and TensorRT, OpenCV for Caffe) on a random
image and its agreement with PyTorch is checked (centerx.deploy.verify):
near-tied cells that swap are reported, a missing detection or peak fails the
export with exit code 3 (the file stays written). ``onnx-int8`` writes the static
INT8 quantisation ``model_int8.onnx`` of an FP32 graph (add ``onnx`` to the formats
to keep that one as ``model.onnx``; centerx.deploy.quantize), calibrated on images
of a registered dataset (``EXPORT.INT8_FROM_STRIDE`` keeps the layers on finer maps
FP32), logs both file sizes and checks the INT8 detections against FP32 on one of
them (for a model with random weights a difference is only a warning).

The weights are loaded strictly: MODEL.WEIGHTS empty, or a checkpoint that
leaves a parameter of the config's model missing or mis-shaped, stops the
export with exit code 2 and the reason; ``--allow-random-weights`` exports a
randomly initialised model on purpose.
"""

import argparse
import logging
import os
import re
import sys

from detectron2.utils.logger import setup_logger

from centerx.checkpoint import WEIGHTS_ERRORS
from centerx.config import exit_on_config_error, load_config
from centerx.deploy import ExportError
from centerx.deploy.exporters import EXPORTER_REGISTRY, exporter_formats, get_exporter
from centerx.deploy.onnx_export import DEFAULT_OPSET
from centerx.deploy.tensorrt_engine import TensorRTUnavailable
from centerx.deploy.verify import DisagreementError
from centerx.plugins import PluginImportError, add_imports_argument, preimport

logger = logging.getLogger("centerx.export")

# a KEY of a KEY VALUE override (where the --format names end)
CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")
# export.py flag -> the exporter option it sets (an exporter lists the options it reads)
FLAGS = {
    "--raw": "raw",
    "--opset": "opset",
    "--fp16": "fp16",
    "--calibration-images": "calibration_images",
    "--calibration-dataset": "calibration_dataset",
}


def parse_args(argv=None):
    preimport(argv)  # a user's module may register formats
    formats = "\n".join(
        f"  {cls.format:<10} {cls.description}" for _, cls in sorted(EXPORTER_REGISTRY, key=lambda item: item[1].format)
    )
    parser = argparse.ArgumentParser(
        description=__doc__ + "\nformats:\n" + formats, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True, metavar="FILE", help="path to the model's config")
    parser.add_argument(
        "--format", required=True, nargs="+", metavar="FORMAT", help="what to export, one or several (see formats)"
    )
    parser.add_argument("--opset", type=int, help=f"ONNX opset (default {DEFAULT_OPSET}; deformable convs need 19)")
    parser.add_argument(
        "--raw",
        action="store_true",
        default=None,
        help="ONNX: output the peak-masked heatmap and regression maps instead of decoded boxes",
    )
    parser.add_argument(
        "--fp16", action="store_true", default=None, help="TensorRT: build an FP16 engine (FP32 otherwise)"
    )
    parser.add_argument(
        "--calibration-images",
        type=int,
        metavar="N",
        help="onnx-int8: number of calibration images, evenly spread over the dataset "
        "(default EXPORT.CALIBRATION_IMAGES)",
    )
    parser.add_argument(
        "--calibration-dataset",
        metavar="NAME",
        help="onnx-int8: registered dataset to calibrate on (default EXPORT.CALIBRATION_DATASET, else "
        "DATASETS.TEST[0], else DATASETS.TRAIN[0])",
    )
    parser.add_argument("--output", metavar="DIR", help="output folder (default OUTPUT_DIR/deploy)")
    parser.add_argument(
        "--allow-random-weights",
        action="store_true",
        help="export a randomly initialised model when MODEL.WEIGHTS is empty (refused otherwise)",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE pairs")
    add_imports_argument(parser)
    args = parser.parse_args(argv)
    # --format takes one or more names; the KEY VALUE pairs right after them are overrides
    known = exporter_formats()
    count = next((i for i, name in enumerate(args.format) if CONFIG_KEY.match(name)), len(args.format))
    args.format, args.opts = args.format[:count], args.format[count:] + args.opts
    unknown = [name for name in args.format if name not in known]
    if unknown or not args.format:
        parser.error(
            f"--format: {'unknown ' + ', '.join(unknown) + '; ' if unknown else ''}registered formats: "
            f"{', '.join(known)}"
        )
    return args


def setup(args):
    try:
        cfg = load_config(args.config_file, args.opts, args.imports)
    except PluginImportError as e:
        raise SystemExit(str(e)) from None
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"--config-file {args.config_file}: {e}") from None
    cfg.MODEL.DEVICE = "cpu"  # tracing on CPU; the exported graph runs on any device
    cfg.freeze()
    return cfg


def exporter_options(args, exporter_classes) -> list:
    """The flags given, as each exporter's options (a flag goes to the formats that
    read it); a flag none of the formats reads stops the script, naming those that do."""
    chosen = [{} for _ in exporter_classes]
    for flag, option in FLAGS.items():
        value = getattr(args, option)
        if value is None:
            continue
        if not any(option in cls.options for cls in exporter_classes):
            takers = [
                cls.format
                for _, cls in sorted(EXPORTER_REGISTRY, key=lambda item: item[1].format)
                if option in cls.options
            ]
            asked = " / ".join(cls.format for cls in exporter_classes)
            raise SystemExit(f"{flag} applies to --format {' / '.join(takers)}, not {asked}.")
        for options, cls in zip(chosen, exporter_classes):
            if option in cls.options:
                options[option] = value
    return chosen


@exit_on_config_error
def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logger(name="centerx")
    cfg = setup(args)
    formats = list(dict.fromkeys(args.format))
    classes = [get_exporter(fmt) for fmt in formats]
    out_dir = args.output or os.path.join(cfg.OUTPUT_DIR, "deploy")
    try:  # an exporter checks the config's export keys as it is made (EXPORT.INPUT_SIZE, ...)
        exporters = [
            cls(cfg, out_dir, args.allow_random_weights, **options)
            for cls, options in zip(classes, exporter_options(args, classes))
        ]
    except ValueError as e:
        raise SystemExit(str(e)) from None
    written = []
    try:
        for exporter in exporters:  # every format's requirements before the first file is written
            try:
                exporter.prepare()
            except (ValueError, FileNotFoundError) as e:
                raise SystemExit(str(e)) from e
        for exporter in exporters:
            written.append(exporter.export())
    except (ExportError, TensorRTUnavailable, *WEIGHTS_ERRORS) as e:
        logger.error(str(e))
        return 2
    except DisagreementError as e:
        logger.error(str(e))
        return 3
    logger.info("Done: " + ", ".join(written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
