#!/usr/bin/env python
"""Detect objects in image files with any deployment runtime and draw them.

    python projects/speedup/demo.py --config-file CFG --runtime onnxruntime --model out/deploy/model.onnx \
        --input a.jpg b.jpg --output vis/ [KEY VALUE overrides]
    python projects/speedup/demo.py --config-file CFG --runtime caffe --model out/deploy/model.prototxt ...
    python projects/speedup/demo.py --config-file CFG --runtime tensorrt --model out/deploy/model_fp16.engine ...
    python projects/speedup/demo.py --config-file CFG --runtime pytorch --input a.jpg MODEL.WEIGHTS model.pth

Every runtime letterboxes to EXPORT.INPUT_SIZE, keeps scores above the
meta-architecture's SCORE_THRESH_TEST and maps boxes back to the image. Class
names come from the metadata of DATASETS.TEST[0] where it has thing_classes.
"""
import argparse
import logging
import os
import sys

import cv2
import numpy as np
from detectron2.data import MetadataCatalog
from detectron2.utils.logger import setup_logger

import centerx
from centerx.deploy.runtimes import add_runtime_arguments, build_runtime

logger = logging.getLogger("centerx.demo")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_runtime_arguments(parser)
    parser.add_argument("--input", required=True, nargs="+", metavar="IMAGE", help="image files")
    parser.add_argument("--output", required=True, metavar="DIR", help="folder for the drawn images")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE pairs")
    return parser.parse_args(argv)


def class_names(cfg):
    """Names of the classes from the test dataset's metadata, or None."""
    if not cfg.DATASETS.TEST:
        return None
    return MetadataCatalog.get(cfg.DATASETS.TEST[0]).get("thing_classes")


def draw(image: np.ndarray, det, names) -> np.ndarray:
    """Boxes with "class score" labels on a copy of a BGR image; one colour per class."""
    out = image.copy()
    for box, score, cls in zip(det["boxes"], det["scores"], det["classes"]):
        colour = tuple(int(c) for c in np.random.RandomState(int(cls)).randint(64, 256, 3))
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, 2)
        label = f"{names[cls] if names and cls < len(names) else int(cls)} {score:.2f}"
        cv2.putText(out, label, (x1, max(y1 - 4, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logger(name="centerx")
    cfg = centerx.get_centerx_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    centerx.register_config_datasets(cfg)
    runtime = build_runtime(args.runtime, cfg, args.model)
    names = class_names(cfg)
    os.makedirs(args.output, exist_ok=True)
    for path in args.input:
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            logger.error(f"Cannot read {path} as an image; skipped.")
            continue
        (det,) = runtime([image])
        out = os.path.join(args.output, os.path.basename(path))
        cv2.imwrite(out, draw(image, det, names))
        logger.info(f"{path}: {len(det['scores'])} detections ({runtime.name}) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
