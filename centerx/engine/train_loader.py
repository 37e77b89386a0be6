"""The training data: which mapper reads the images, and the exactly resumable
stream (:mod:`centerx.data.samplers`) with its per-step reseeding, as pieces the
trainer registers: a loader, a hook that places the stream on ``--resume``, and a
forward pre-hook that seeds each training forward."""

import logging

import numpy as np
import torch
from detectron2.data import DatasetMapper, build_detection_train_loader, get_detection_dataset_dicts
from detectron2.engine import HookBase
from detectron2.utils import comm

from ..config import ConfigValueError
from ..data import CenterNetDatasetMapper
from ..data.mixup import Mixup
from ..data.samplers import PositionedDataset, ResumableTrainingSampler

__all__ = [
    "RESUMABLE_SAMPLER",
    "StreamStart",
    "build_resumable_train_loader",
    "build_train_mapper",
    "data_seed",
    "reseed_training_forward",
    "step_seed",
    "stream_augmentations",
]

logger = logging.getLogger(__name__)

RESUMABLE_SAMPLER = "ResumableTrainingSampler"
TRAIN_MAPPERS = ("centernet", "default")


def build_train_mapper(cfg):
    """The training mapper named by ``DATALOADER.TRAIN_MAPPER``."""
    if cfg.DATALOADER.TRAIN_MAPPER not in TRAIN_MAPPERS:
        raise ConfigValueError(
            f"DATALOADER.TRAIN_MAPPER='{cfg.DATALOADER.TRAIN_MAPPER}' is not one of {TRAIN_MAPPERS}."
        )
    if cfg.DATALOADER.TRAIN_MAPPER == "centernet":
        return CenterNetDatasetMapper(cfg)
    return DatasetMapper(cfg, is_train=True)


def stream_augmentations(cfg) -> dict:
    """Multi-scale training (INPUT.TRAIN_SIZES) and mixup (INPUT.MIXUP) as the
    :class:`PositionedDataset` arguments ``batch_size`` (SOLVER.IMS_PER_BATCH,
    all processes), ``train_sizes`` and ``mixup`` (None when off), checked.

    Both need DATALOADER.SAMPLER_TRAIN "ResumableTrainingSampler" (its stream
    positions define the iterations) and TRAIN_MAPPER "centernet" (square
    outputs of a requested size); ``cfg`` must be final (auto-scaled).
    """
    sizes = tuple(cfg.INPUT.TRAIN_SIZES)
    bad = [s for s in sizes if isinstance(s, bool) or not isinstance(s, int) or s <= 0 or s % 32]
    if bad:
        raise ConfigValueError(
            f"INPUT.TRAIN_SIZES must hold positive multiples of 32 (input pixels), got {bad} in {sizes}."
        )
    features = [k for k, on in (("INPUT.TRAIN_SIZES", sizes), ("INPUT.MIXUP.ENABLED", cfg.INPUT.MIXUP.ENABLED)) if on]
    if features and cfg.DATALOADER.SAMPLER_TRAIN != RESUMABLE_SAMPLER:
        raise ConfigValueError(
            f"{' and '.join(features)} need DATALOADER.SAMPLER_TRAIN '{RESUMABLE_SAMPLER}', "
            f"got '{cfg.DATALOADER.SAMPLER_TRAIN}'."
        )
    if features and cfg.DATALOADER.TRAIN_MAPPER != "centernet":
        raise ConfigValueError(
            f"{' and '.join(features)} need DATALOADER.TRAIN_MAPPER 'centernet', got '{cfg.DATALOADER.TRAIN_MAPPER}'."
        )
    return {
        "batch_size": cfg.SOLVER.IMS_PER_BATCH,
        "train_sizes": sizes,
        "mixup": Mixup.from_config(cfg) if cfg.INPUT.MIXUP.ENABLED else None,
    }


def build_resumable_train_loader(cfg, seed: int):
    """The training loader over a :class:`PositionedDataset`: a stream whose
    samples depend only on their position and ``seed``, with multi-scale
    training and mixup as the config says (:func:`stream_augmentations`).

    Returns:
        (data loader, the dataset, the sampler); set ``dataset.seed`` and
        ``sampler.start`` before the loader starts iterating (:class:`StreamStart`).
    """
    dicts = get_detection_dataset_dicts(
        cfg.DATASETS.TRAIN,
        filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
        min_keypoints=0,
        proposal_files=None,
    )
    dataset = PositionedDataset(dicts, build_train_mapper(cfg), seed, **stream_augmentations(cfg))
    sampler = ResumableTrainingSampler()
    loader = build_detection_train_loader(
        dataset,
        mapper=None,
        sampler=sampler,
        total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
        # the centernet mapper makes every image INPUT.TRAIN_SIZE square: grouping by
        # the original images' orientation would only reorder the stream
        aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING and cfg.DATALOADER.TRAIN_MAPPER != "centernet",
        num_workers=cfg.DATALOADER.NUM_WORKERS,
    )
    return loader, dataset, sampler


def data_seed(cfg) -> int:
    """SEED when set (>= 0), else one random seed shared by all processes."""
    return cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()


def step_seed(seed: int, iteration: int, rank: int) -> int:
    """32-bit seed of torch's global generator for one training step of one
    process: a hash of (data seed, iteration, rank), so that each step and each
    process draws differently and a resumed run draws the same."""
    return int(np.random.SeedSequence([seed, iteration, rank]).generate_state(1)[0])


def reseed_training_forward(trainer_ref):
    """Forward pre-hook for the trainer's model: in training mode, seed torch's
    global generator (CPU and CUDA) with :func:`step_seed` of the trainer's data
    seed (``trainer.data_seed``), its current iteration and this process's rank.
    ``trainer_ref`` is a weak reference, so the model does not keep its trainer alive."""

    def hook(module, args):
        trainer = trainer_ref()
        if module.training and trainer is not None:
            torch.manual_seed(step_seed(trainer.data_seed, trainer.iter, comm.get_rank()))

    return hook


class StreamStart(HookBase):
    """Before training: the resumable stream (``dataset``, ``sampler`` of
    :func:`build_resumable_train_loader`, or None for another sampler) starts at
    the first sample the trainer's ``start_iter`` has not seen, with the
    trainer's ``data_seed`` (restored from the checkpoint on ``--resume``).
    Another sampler restarts its stream: a resumed run is warned so."""

    def __init__(self, dataset=None, sampler=None):
        self.dataset = dataset
        self.sampler = sampler

    def before_train(self):
        trainer = self.trainer
        if self.sampler is not None:
            self.dataset.seed = trainer.data_seed
            self.sampler.start = trainer.start_iter * trainer.cfg.SOLVER.IMS_PER_BATCH
        elif trainer.start_iter > 0:
            logger.warning(
                f"DATALOADER.SAMPLER_TRAIN={trainer.cfg.DATALOADER.SAMPLER_TRAIN} restarts its stream on "
                f"resume; use '{RESUMABLE_SAMPLER}' to continue it exactly."
            )
