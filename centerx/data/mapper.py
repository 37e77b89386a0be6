"""Training-time dataset mapper for CenterNet-style detectors."""

import copy
import functools
import logging
from collections.abc import Callable

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BoxMode
from detectron2.utils.logger import log_every_n_seconds

from .image_io import read_image
from .validation import invalid_box_reason

logger = logging.getLogger(__name__)


def centernet_train_augmentations(
    size: int, scale_range: tuple[float, float], pad_value: float, hflip_prob: float, color_jitter: float
) -> list[T.Augmentation]:
    """Random scale + fixed-size crop/pad to a ``size`` x ``size`` square (input
    pixels, padded with ``pad_value``), horizontal flip with ``hflip_prob``,
    brightness / contrast / saturation jitter of strength ``color_jitter``
    (all detectron2 transforms)."""
    lo, hi = scale_range
    augs = [
        T.ResizeScale(min_scale=lo, max_scale=hi, target_height=size, target_width=size),
        T.FixedSizeCrop(crop_size=(size, size), pad=True, pad_value=pad_value),
    ]
    if hflip_prob > 0:
        augs.append(T.RandomFlip(prob=hflip_prob, horizontal=True))
    s = color_jitter
    if s > 0:
        augs += [T.RandomBrightness(1 - s, 1 + s), T.RandomContrast(1 - s, 1 + s), T.RandomSaturation(1 - s, 1 + s)]
    return augs


def build_centernet_train_augmentations(cfg, size: int | None = None) -> list[T.Augmentation]:
    """:func:`centernet_train_augmentations` as the config says, to a square of
    ``size`` input pixels (default INPUT.TRAIN_SIZE)."""
    return centernet_train_augmentations(**_augmentation_args(cfg), size=size or cfg.INPUT.TRAIN_SIZE)


def _augmentation_args(cfg) -> dict:
    return {
        "scale_range": tuple(cfg.INPUT.SCALE_RANGE),
        "pad_value": float(np.mean(cfg.MODEL.PIXEL_MEAN)),
        "hflip_prob": cfg.INPUT.HFLIP_PROB,
        "color_jitter": cfg.INPUT.COLOR_JITTER,
    }


class CenterNetDatasetMapper:
    """Dataset dict -> model input dict for training.

    Output: {"image": uint8 tensor [3, S, S] in INPUT.FORMAT, "instances":
    Instances(gt_boxes in input pixels, gt_classes), plus the input's keys};
    S is INPUT.TRAIN_SIZE, or the ``size`` a call asks for (multi-scale
    training: the augmentations for each size are built on first use, by
    ``augmentations_for_size``, and kept).
    Boxes are transformed and clipped with the image; boxes left narrower or
    lower than ``min_box_size`` pixels, and crowd annotations, are dropped and
    counted. Annotations whose box has a negative, zero, infinite or NaN size
    are skipped before any transform (never repaired) and counted under that
    reason. An image whose file is missing or unreadable is skipped (``None``
    makes detectron2's loader draw another image) and counted in the log;
    16-bit images keep their range (:func:`~centerx.data.image_io.read_image`).
    """

    @configurable
    def __init__(
        self,
        *,
        augmentations,
        image_format="BGR",
        min_box_size=2.0,
        augmentations_for_size: Callable[[int], list[T.Augmentation]] | None = None,
    ):
        self.augmentations = T.AugmentationList(augmentations)
        self.augmentations_for_size = augmentations_for_size
        self._sized_augmentations: dict[int, T.AugmentationList] = {}
        self.image_format = image_format
        self.min_box_size = min_box_size
        self.num_dropped_boxes = 0
        self.num_invalid_boxes = {}
        self.num_skipped_images = 0
        logger.info(f"[CenterNetDatasetMapper] augmentations: {augmentations}")

    @classmethod
    def from_config(cls, cfg):
        return {
            "augmentations": build_centernet_train_augmentations(cfg),
            "image_format": cfg.INPUT.FORMAT,
            "min_box_size": cfg.INPUT.MIN_BOX_SIZE,
            "augmentations_for_size": functools.partial(centernet_train_augmentations, **_augmentation_args(cfg)),
        }

    def _augmentations_at(self, size: int | None) -> T.AugmentationList:
        if size is None:
            return self.augmentations
        if size not in self._sized_augmentations:
            if self.augmentations_for_size is None:
                raise ValueError(
                    "This CenterNetDatasetMapper was built without augmentations_for_size, "
                    f"so it cannot map to another size ({size})."
                )
            self._sized_augmentations[size] = T.AugmentationList(self.augmentations_for_size(int(size)))
        return self._sized_augmentations[size]

    def __call__(self, dataset_dict, size: int | None = None):
        """Map one dataset dict; ``size``: square side in input pixels, None = the
        mapper's own (INPUT.TRAIN_SIZE)."""
        dataset_dict = copy.deepcopy(dataset_dict)
        try:
            image = read_image(dataset_dict["file_name"], format=self.image_format)
        except OSError as e:
            self.num_skipped_images += 1
            logger.warning(
                f"Skipping image {dataset_dict['file_name']} ({type(e).__name__}: {e}); "
                f"{self.num_skipped_images} image(s) skipped so far in this worker."
            )
            return None
        utils.check_image_size(dataset_dict, image)
        aug_input = T.AugInput(image)
        transforms = self._augmentations_at(size)(aug_input)
        image = aug_input.image
        shape = image.shape[:2]
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))

        # boxes of invalid size are skipped, not repaired (the transforms would turn a
        # negative width into a positive one); integer boxes would be truncated by
        # detectron2's in-place coordinate transforms
        annos = []
        for obj in dataset_dict.pop("annotations", []):
            if obj.get("iscrowd", 0):
                continue
            reason = invalid_box_reason(obj["bbox"], obj.get("bbox_mode", BoxMode.XYWH_ABS))
            if reason:
                self._count_invalid(reason, dataset_dict["file_name"])
                continue
            annos.append(
                utils.transform_instance_annotations(
                    {**obj, "bbox": [float(v) for v in obj["bbox"]]}, transforms, shape
                )
            )
        instances = utils.annotations_to_instances(annos, shape)
        wh = instances.gt_boxes.tensor[:, 2:] - instances.gt_boxes.tensor[:, :2]
        keep = (wh >= self.min_box_size).all(dim=1)
        dropped = int((~keep).sum())
        if dropped:
            self.num_dropped_boxes += dropped
            log_every_n_seconds(
                logging.INFO,
                f"[CenterNetDatasetMapper] {self.num_dropped_boxes} boxes dropped so far in this worker "
                f"(smaller than INPUT.MIN_BOX_SIZE={self.min_box_size}px after augmentation and clipping).",
                n=60,
            )
        dataset_dict["instances"] = instances[keep]
        return dataset_dict

    def _count_invalid(self, reason: str, file_name: str) -> None:
        self.num_invalid_boxes[reason] = self.num_invalid_boxes.get(reason, 0) + 1
        log_every_n_seconds(
            logging.WARNING,
            f"[CenterNetDatasetMapper] boxes skipped so far in this worker for an invalid size in the annotations "
            f"(e.g. in {file_name}): {self.num_invalid_boxes}.",
            n=60,
        )
