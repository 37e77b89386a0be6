"""Evaluation dataset mapper: detectron2's DatasetMapper(is_train=False) reading
images as the training mapper does (:func:`~centerx.data.image_io.read_image`)."""

import copy

import numpy as np
import torch
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from .image_io import read_image


class EvalDatasetMapper(DatasetMapper):
    """Dataset dict -> {"image": uint8 [3, H, W] resized for testing, plus the
    dict's keys without annotations}, with detectron2's test augmentations
    (ResizeShortestEdge of INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST). Images are read
    with centerX's ``read_image``: 16-bit images keep their range, as in training."""

    def __init__(self, cfg):
        super().__init__(cfg, is_train=False)

    def __call__(self, dataset_dict):
        dataset_dict = copy.deepcopy(dataset_dict)
        image = read_image(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)
        aug_input = T.AugInput(image)
        self.augmentations(aug_input)
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(aug_input.image.transpose(2, 0, 1)))
        dataset_dict.pop("annotations", None)
        dataset_dict.pop("sem_seg_file_name", None)
        return dataset_dict
