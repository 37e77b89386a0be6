"""Drawing detections: shared by the demo (projects/demo) and the training hook
that puts the predictions on a few test images into TensorBoard."""

import contextlib
import logging
import os
import time
from collections.abc import Sequence

import cv2
import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import convert_image_to_rgb
from detectron2.engine import HookBase
from detectron2.structures import Instances
from detectron2.utils import comm
from detectron2.utils.colormap import colormap
from detectron2.utils.events import get_event_storage
from detectron2.utils.visualizer import Visualizer
from torch.nn.parallel import DataParallel, DistributedDataParallel

from ..config import ConfigValueError
from ..console import on_screen
from ..data.eval_mapper import EvalDatasetMapper

__all__ = ["draw_detections", "PredictionImages"]

logger = logging.getLogger(__name__)

_CLASS_COLOURS = colormap(rgb=True, maximum=1)


def draw_detections(image: np.ndarray, instances: Instances, class_names: Sequence[str] | None = None) -> np.ndarray:
    """
    Draw boxes labelled "class score%" with detectron2's ``Visualizer``.

    Every box of a class has the same colour (detectron2's colormap indexed by the
    class), so colours stay put from one video frame to the next.

    Args:
        image: (H, W, 3) uint8 RGB image.
        instances: detections in ``image``'s pixel coordinates, with fields
            ``pred_boxes`` (XYXY, pixels), ``scores`` and ``pred_classes``; on any device.
        class_names: name of each class index; classes without a name are shown
            by their index.

    Returns:
        (H, W, 3) uint8 RGB image: a copy of ``image`` with the detections drawn,
        equal to ``image`` when ``instances`` is empty.
    """
    instances = instances.to("cpu")
    classes = instances.pred_classes.tolist()
    names = list(class_names or [])
    labels = [
        f"{names[c] if 0 <= c < len(names) else c} {s * 100:.0f}%" for c, s in zip(classes, instances.scores.tolist())
    ]
    colours = [_CLASS_COLOURS[c % len(_CLASS_COLOURS)] for c in classes]
    vis = Visualizer(image)
    vis.overlay_instances(boxes=instances.pred_boxes.tensor.numpy(), labels=labels, assigned_colors=colours)
    return vis.output.get_image()


class PredictionImages(HookBase):
    """
    Put the model's predictions on the first ``cfg.TEST.VIS_IMAGES`` images of
    ``cfg.DATASETS.TEST[0]`` into the event storage, for TensorBoard.

    Runs at the iterations of detectron2's ``EvalHook``: every ``period``
    iterations when ``period > 0``, and after the last iteration. Each image is
    resized as at test time (:class:`~centerx.data.eval_mapper.EvalDatasetMapper`), passed
    through ``trainer.model`` in eval mode, and stored with
    ``storage.put_image("predictions/{i}_{file name}", CHW uint8 RGB)`` with the
    detections scoring above ``cfg.TEST.VIS_SCORE_THRESH`` drawn on it, so its
    size is the test-time input size. Only the main process draws; the others,
    and a config with ``VIS_IMAGES`` 0 or no test dataset, do nothing. Images
    that cannot be read are skipped and counted in the log.

    After the last iteration the same drawings are also written as PNG files to
    ``save_dir`` (``OUTPUT_DIR/predictions`` in the trainer), whose path is
    logged, so that a user can look at what the detector finds without
    TensorBoard.

    Register it before detectron2's ``PeriodicWriter`` so that the writer flushes
    the images after the last iteration.
    """

    def __init__(self, cfg, period: int, save_dir: str | None = None):
        """
        Args:
            cfg: the training config.
            period: iterations between two drawings; 0 = only after the last one.
            save_dir: folder for the PNG files written after the last
                iteration; None = none written.
        """
        self._save_dir = save_dir
        num_images = cfg.TEST.VIS_IMAGES
        if num_images < 0:
            raise ConfigValueError(f"TEST.VIS_IMAGES must be >= 0 (0 = off), got {num_images}.")
        self._period = period
        self._num_images = num_images
        self._score_thresh = cfg.TEST.VIS_SCORE_THRESH
        self._dataset = cfg.DATASETS.TEST[0] if len(cfg.DATASETS.TEST) else None
        self._input_format = cfg.INPUT.FORMAT
        self._mapper = EvalDatasetMapper(cfg)
        self._dataset_dicts: list[dict] | None = None

    @property
    def enabled(self) -> bool:
        """Whether this process draws anything."""
        return self._num_images > 0 and self._dataset is not None and comm.is_main_process()

    def after_step(self):
        next_iter = self.trainer.iter + 1
        if self._period > 0 and next_iter % self._period == 0 and next_iter != self.trainer.max_iter:
            self.put_images()

    def after_train(self):
        # as EvalHook: not after a training that stopped early
        if self.trainer.iter + 1 >= self.trainer.max_iter:
            written = self.put_images(self._save_dir)
            if written and self._save_dir:
                on_screen(
                    logger,
                    f"Predictions (score > {self._score_thresh}) drawn on {written} images of "
                    f"'{self._dataset}': {os.path.abspath(self._save_dir)}",
                )

    def _first_images(self) -> list[dict]:
        if self._dataset_dicts is None:
            self._dataset_dicts = list(DatasetCatalog.get(self._dataset)[: self._num_images])
        return self._dataset_dicts

    def put_images(self, save_dir: str | None = None) -> int:
        """
        Draw the predictions now and put them into the current event storage.

        Args:
            save_dir: also write each drawing there as ``{i}_{file name}.png``.

        Returns:
            int: number of images put (0 when disabled).
        """
        if not self.enabled:
            return 0
        start = time.perf_counter()
        model = self.trainer.model
        if isinstance(model, (DistributedDataParallel, DataParallel)):
            model = model.module
        records = self._first_images()
        # after loading: a user COCO json sets thing_classes when it is read
        class_names = MetadataCatalog.get(self._dataset).get("thing_classes")
        storage = get_event_storage()
        put, skipped = 0, 0
        was_training = model.training
        model.eval()
        # the weights the evaluation uses (the EMA's, with MODEL_EMA.USE_FOR_EVAL)
        eval_weights = getattr(self.trainer, "eval_weights", contextlib.nullcontext)
        try:
            with eval_weights():
                for i, record in enumerate(records):
                    try:
                        image = self._mapper(record)["image"]
                    except (OSError, ValueError) as e:
                        skipped += 1
                        logger.warning(f"Cannot draw predictions on {record.get('file_name')}: {e}")
                        continue
                    with torch.no_grad():
                        # no "height"/"width": boxes stay in the resized image's pixels
                        instances = model([{"image": image}])[0]["instances"].to("cpu")
                    instances = instances[instances.scores > self._score_thresh]
                    rgb = np.ascontiguousarray(convert_image_to_rgb(image.permute(1, 2, 0), self._input_format))
                    drawn = draw_detections(rgb.astype(np.uint8), instances, class_names)
                    name = os.path.basename(record.get("file_name", f"image{i}"))
                    storage.put_image(f"predictions/{i}_{name}", drawn.transpose(2, 0, 1))
                    if save_dir:
                        os.makedirs(save_dir, exist_ok=True)
                        stem = os.path.splitext(name)[0]
                        cv2.imwrite(os.path.join(save_dir, f"{i}_{stem}.png"), drawn[:, :, ::-1])
                    put += 1
        finally:
            model.train(was_training)
        logger.info(
            f"Put predictions (score > {self._score_thresh}) on {put} images of "
            f"'{self._dataset}' into the event storage at iteration {storage.iter} "
            f"in {time.perf_counter() - start:.2f} s" + (f"; {skipped} unreadable images skipped." if skipped else ".")
        )
        return put
