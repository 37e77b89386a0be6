"""COCO evaluation of the images that can be read, the unreadable ones counted,
with a per-class report (precision-recall curves, confusion matrix)."""

import contextlib
import io
import logging
import os

from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOEvaluator
from detectron2.utils.file_io import PathManager

from ..console import on_screen
from .class_report import write_class_report

logger = logging.getLogger(__name__)


def forget_missing_converted_json(dataset_name: str) -> None:
    """detectron2's ``COCOEvaluator`` converts a dataset without a COCO json into
    ``<output_dir>/<name>_coco_format.json`` once per process and records that
    path in the metadata (``json_file``). When that file has gone since (the
    earlier run's output folder was deleted), drop the record so that this
    evaluation converts again, instead of failing on the missing file. A
    dataset's own ``json_file`` (any other name) is left as it is."""
    metadata = MetadataCatalog.get(dataset_name)
    json_file = metadata.get("json_file")
    if (
        json_file is not None
        and os.path.basename(json_file) == f"{dataset_name}_coco_format.json"
        and not PathManager.exists(json_file)
    ):
        logger.info(f"The COCO json converted earlier for '{dataset_name}' ({json_file}) is gone; converting again.")
        delattr(metadata, "json_file")


class ReadableImagesCOCOEvaluator(COCOEvaluator):
    """detectron2's ``COCOEvaluator`` on the images of the dataset that could be
    read: the ``skipped`` unreadable images (found by
    :func:`~centerx.data.validation.validate_datasets`, left out of the test
    loader) are left out of the ground truth too, so they neither crash the
    evaluation nor count as misses; their number is reported beside the AP
    (``skipped images`` in the bbox results) and logged.

    With ``report_score`` (a score threshold), each evaluation also writes
    :func:`~centerx.engine.class_report.write_class_report`'s per-class table,
    precision-recall curves and confusion matrix into the output folder.
    pycocotools' printed summary goes to the log file, not the screen (the
    same figures are logged as detectron2's results table)."""

    def __init__(
        self, dataset_name: str, image_ids: list, skipped: list[str], output_dir=None, report_score: float | None = None
    ):
        forget_missing_converted_json(dataset_name)
        super().__init__(dataset_name, output_dir=output_dir)
        self._image_ids = list(image_ids)
        self._skipped = list(skipped)
        self._report_score = report_score

    def evaluate(self, img_ids=None):
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            results = super().evaluate(img_ids if img_ids is not None or not self._skipped else self._image_ids)
        if printed.getvalue().strip():
            logger.info("pycocotools:\n" + printed.getvalue().rstrip())
        if self._skipped and results and "bbox" in results:
            results["bbox"]["skipped images"] = float(len(self._skipped))
            on_screen(
                logger,
                f"Evaluated on {len(self._image_ids)} images; {len(self._skipped)} unreadable images "
                f"skipped: {', '.join(self._skipped[:5])}{' ...' if len(self._skipped) > 5 else ''}",
            )
        return results

    def _derive_coco_results(self, coco_eval, iou_type, class_names=None):
        results = super()._derive_coco_results(coco_eval, iou_type, class_names=class_names)
        if (
            coco_eval is not None
            and iou_type == "bbox"
            and self._report_score is not None
            and self._output_dir
            and class_names
        ):
            files = write_class_report(coco_eval, class_names, self._output_dir, self._report_score)
            on_screen(logger, "Per-class report: " + ", ".join(files))
        return results
