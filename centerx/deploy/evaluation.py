"""COCO box AP of a deployment runtime on a registered dataset, with the runtime's own
pre- and post-processing (projects/speedup/evaluate.py, ./run.sh benchmark)."""

import atexit
import os
import shutil
import tempfile

import cv2
import torch
from detectron2.data import DatasetCatalog
from detectron2.evaluation import COCOEvaluator
from detectron2.structures import Boxes, Instances
from tqdm import tqdm

from ..data.datasets import ensure_datasets
from ..engine.evaluation import ReadableImagesCOCOEvaluator
from .runtimes import Runtime

__all__ = ["evaluate_runtime", "resolve_dataset"]


def resolve_dataset(cfg, name: str | None = None) -> str:
    """``name``, or DATASETS.TEST[0], checked to be registered (built-in ones are
    generated or located first); ``SystemExit`` saying what to pass otherwise."""

    dataset = name or (cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "")
    if dataset:
        ensure_datasets([dataset])
    if dataset not in DatasetCatalog.list():
        raise SystemExit(f"Dataset {dataset!r} is not registered: pass --dataset NAME or set DATASETS.TEST.")
    return dataset


def evaluate_runtime(
    runtime: Runtime,
    dataset: str,
    max_images: int | None = None,
    output_dir: str | None = None,
    report_score: float = 0.3,
) -> dict[str, float]:
    """COCO box metrics (AP, AP50, ..., in percent) of ``runtime`` on the images of
    ``dataset`` (the first ``max_images`` when given: AP over those images and their
    objects), each read with OpenCV (BGR) and run alone. With ``output_dir``, the
    detections (coco_instances_results.json, the dataset's image and category ids)
    and the per-class report at ``report_score`` are written there."""
    records = DatasetCatalog.get(dataset)[:max_images]
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        evaluator = ReadableImagesCOCOEvaluator(
            dataset, [r["image_id"] for r in records], [], output_dir=output_dir, report_score=report_score
        )
    else:
        # a dataset without a COCO json is converted to one first, into a folder of this process's own (the
        # dataset's metadata keeps pointing at it, so it lives as long as the process)
        scratch = tempfile.mkdtemp(prefix="centerx_coco_")
        atexit.register(shutil.rmtree, scratch, ignore_errors=True)
        evaluator = COCOEvaluator(dataset, tasks=("bbox",), distributed=False, output_dir=scratch)
    evaluator.reset()
    for record in tqdm(records, desc=f"AP on {dataset}", unit="img", disable=len(records) < 100):
        image = cv2.imread(record["file_name"], cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError(f"Cannot read {record['file_name']} of dataset {dataset!r}.")
        (det,) = runtime([image])
        instances = Instances(
            image.shape[:2],
            pred_boxes=Boxes(torch.from_numpy(det["boxes"])),
            scores=torch.from_numpy(det["scores"]),
            pred_classes=torch.from_numpy(det["classes"]),
        )
        evaluator.process([record], [{"instances": instances}])
    # scored on the images run only (COCOEvaluator would otherwise count every image's objects)
    return evaluator.evaluate(img_ids=[r["image_id"] for r in records])["bbox"]
