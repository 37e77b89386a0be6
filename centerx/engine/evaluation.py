"""COCO evaluation of the images that can be read, the unreadable ones counted."""
import logging
from typing import List

from detectron2.evaluation import COCOEvaluator

logger = logging.getLogger(__name__)


class ReadableImagesCOCOEvaluator(COCOEvaluator):
    """detectron2's ``COCOEvaluator`` on the images of the dataset that could be
    read: the ``skipped`` unreadable images (found by
    :func:`~centerx.data.validation.validate_datasets`, left out of the test
    loader) are left out of the ground truth too, so they neither crash the
    evaluation nor count as misses; their number is reported beside the AP
    (``skipped images`` in the bbox results) and logged."""

    def __init__(self, dataset_name: str, image_ids: List, skipped: List[str], output_dir=None):
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
