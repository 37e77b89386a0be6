#!/usr/bin/env python
"""COCO box AP of a model on a registered dataset, run in a deployment runtime or in PyTorch.

    python projects/speedup/evaluate.py --model deploy/model_int8.onnx [--dataset shapes_val] [--output DIR]
    python projects/speedup/evaluate.py --config-file CFG MODEL.WEIGHTS model_final.pth     # a checkpoint
    python projects/speedup/evaluate.py --config-file CFG --runtime openvino --model deploy/model.onnx [KEY VALUE ...]

An exported ``--model`` carries its config (centerx.deploy.model_info): no
``--config-file`` is needed, and its runtime is the one that reads the file's
ending unless ``--runtime`` names another; without ``--model`` the checkpoint
MODEL.WEIGHTS of ``--config-file`` runs in PyTorch. ``--dataset`` is any
registered dataset (built-in, or one the config registers, e.g. with
DATASETS.COCO_JSON given as an override); default DATASETS.TEST[0].

Each image is read with OpenCV (BGR), letterboxed to EXPORT.INPUT_SIZE, run,
thresholded at the meta-architecture's SCORE_THRESH_TEST and mapped back to its
own pixels, as every runtime of centerx.deploy.runtimes does; detectron2's
COCOEvaluator scores the detections. With ``--output DIR`` the detections are
written as DIR/coco_instances_results.json with the dataset's own image and
category ids (so pycocotools scores them as they are), beside the per-class
report (per_class.csv, pr_curves.png, confusion_matrix.png). Set
EXPORT.INPUT_SIZE to the test size the model is evaluated at in PyTorch (e.g.
(256, 256) for the shapes demo configs, whose test resize fits the longer side
to 256) to compare the two.
"""

import argparse
import logging

from detectron2.utils.logger import setup_logger

import centerx
from centerx.config import exit_on_config_error
from centerx.deploy.evaluation import evaluate_runtime, resolve_dataset
from centerx.deploy.model_info import load_model_config, saved_config_text
from centerx.deploy.runtimes import build_runtime, runtime_for_file, runtime_names
from centerx.plugins import add_imports_argument, preimport

logger = logging.getLogger("centerx.evaluate")


def parse_args(argv=None):
    preimport(argv, saved_config_text)  # a user's module may register runtimes
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--config-file",
        metavar="FILE",
        help="the model's config (needed for a checkpoint; an exported --model carries its own)",
    )
    parser.add_argument(
        "--runtime",
        choices=runtime_names(),
        help="where the model runs (default: the runtime of --model's file ending, else pytorch)",
    )
    parser.add_argument("--model", default="", metavar="FILE", help="an exported file (every runtime but pytorch)")
    parser.add_argument("--dataset", metavar="NAME", help="registered dataset (default DATASETS.TEST[0])")
    parser.add_argument(
        "--output",
        metavar="DIR",
        help="write the detections (COCO results json, the dataset's ids) and the per-class report",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE pairs")
    add_imports_argument(parser)
    return parser, parser.parse_args(argv)


def evaluate(runtime, dataset: str, output_dir: str = "") -> dict[str, float]:
    """COCO box metrics (AP, AP50, ..., in percent) of ``runtime`` on every image of ``dataset``."""
    return evaluate_runtime(runtime, dataset, output_dir=output_dir or None)


@exit_on_config_error
def main(argv=None) -> dict[str, float]:
    parser, args = parse_args(argv)
    setup_logger(name="centerx")
    setup_logger(name="detectron2", abbrev_name="d2")
    if args.runtime is None:
        try:
            args.runtime = runtime_for_file(args.model) if args.model else "pytorch"
        except ValueError as e:
            parser.error(f"--model: {e}")
    try:
        cfg = load_model_config(args.config_file, args.model, args.opts, args.imports)
    except ValueError as e:
        parser.error(str(e))
    cfg.freeze()
    centerx.register_config_datasets(cfg)
    dataset = resolve_dataset(cfg, args.dataset)
    try:
        runtime = build_runtime(args.runtime, cfg, args.model)
    except ValueError as e:
        parser.error(str(e))
    metrics = evaluate(runtime, dataset, args.output or "")
    logger.info(
        f"{args.runtime} {args.model or cfg.MODEL.WEIGHTS} on {dataset}: AP {metrics['AP']:.2f}, "
        f"AP50 {metrics['AP50']:.2f}, AP75 {metrics['AP75']:.2f}"
    )
    return metrics


if __name__ == "__main__":
    main()
