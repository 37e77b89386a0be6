"""COCO evaluation of the images that can be read, the unreadable ones counted."""
import logging
import os
from typing import List

from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOEvaluator
from detectron2.utils.file_io import PathManager

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
    if json_file is not None and os.path.basename(json_file) == f"{dataset_name}_coco_format.json" \
            and not PathManager.exists(json_file):
        logger.info(f"The COCO json converted earlier for '{dataset_name}' ({json_file}) is gone; converting again.")
        delattr(metadata, "json_file")


class ReadableImagesCOCOEvaluator(COCOEvaluator):
    """detectron2's ``COCOEvaluator`` on the images of the dataset that could be
    read: the ``skipped`` unreadable images (found by
    :func:`~centerx.data.validation.validate_datasets`, left out of the test
    loader) are left out of the ground truth too, so they neither crash the
    evaluation nor count as misses; their number is reported beside the AP
    (``skipped images`` in the bbox results) and logged."""

    def __init__(self, dataset_name: str, image_ids: List, skipped: List[str], output_dir=None):
        forget_missing_converted_json(dataset_name)
        super().__init__(dataset_name, output_dir=output_dir)
        self._image_ids = list(image_ids)
        self._skipped = list(skipped)

    def evaluate(self, img_ids=None):
        if not self._skipped:
            return super().evaluate(img_ids)
        results = super().evaluate(self._image_ids if img_ids is None else img_ids)
        if results and "bbox" in results:
            results["bbox"]["skipped images"] = float(len(self._skipped))
            logger.info(f"Evaluated on {len(self._image_ids)} images; {len(self._skipped)} unreadable images "
                        f"skipped: {', '.join(self._skipped[:5])}{' ...' if len(self._skipped) > 5 else ''}")
        return results
