#!/usr/bin/env python
"""COCO box AP of a model on a registered dataset, run in a deployment runtime.

    python projects/speedup/evaluate.py --config-file CFG --runtime onnxruntime --model deploy/model_int8.onnx \
        [--dataset shapes_val] [KEY VALUE overrides]
    python projects/speedup/evaluate.py --config-file CFG --runtime pytorch MODEL.WEIGHTS model_final.pth

Each image is read with OpenCV (BGR), letterboxed to EXPORT.INPUT_SIZE, run,
thresholded at the meta-architecture's SCORE_THRESH_TEST and mapped back to its
own pixels, as every runtime of centerx.deploy.runtimes does; detectron2's
COCOEvaluator scores the detections. Set EXPORT.INPUT_SIZE to the test size
the model is evaluated at in PyTorch (e.g. (256, 256) for the shapes demo
configs, whose test resize fits the longer side to 256) to compare the two.
"""
import argparse
import logging
from typing import Dict

from detectron2.utils.logger import setup_logger

import centerx
from centerx.config import merge_config_file
from centerx.deploy.evaluation import evaluate_runtime, resolve_dataset
from centerx.deploy.runtimes import add_runtime_arguments, build_runtime

logger = logging.getLogger("centerx.evaluate")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_runtime_arguments(parser)
    parser.add_argument("--dataset", metavar="NAME", help="registered dataset (default DATASETS.TEST[0])")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE pairs")
    return parser.parse_args(argv)


def evaluate(runtime, dataset: str) -> Dict[str, float]:
    """COCO box metrics (AP, AP50, ..., in percent) of ``runtime`` on every image of ``dataset``."""
    return evaluate_runtime(runtime, dataset)


def main(argv=None) -> Dict[str, float]:
    args = parse_args(argv)
    setup_logger(name="centerx")
    setup_logger(name="detectron2")
    cfg = centerx.get_centerx_cfg()
    try:
        merge_config_file(cfg, args.config_file)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"--config-file {args.config_file}: {e}") from None
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    centerx.register_config_datasets(cfg)
    dataset = resolve_dataset(cfg, args.dataset)
    metrics = evaluate(build_runtime(args.runtime, cfg, args.model), dataset)
    logger.info(f"{args.runtime} {args.model or cfg.MODEL.WEIGHTS} on {dataset}: AP {metrics['AP']:.2f}, "
                f"AP50 {metrics['AP50']:.2f}, AP75 {metrics['AP75']:.2f}")
    return metrics


if __name__ == "__main__":
    main()
