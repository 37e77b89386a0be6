"""detectron2 ``DefaultTrainer`` with the mapper, evaluator and optimizer chosen by
config, model EMA, atomic checkpoints, an exactly resumable data stream and
distributed training on CPU (gloo) as well as GPU (NCCL)."""
import contextlib
import logging
import os
import weakref
from typing import Dict

import numpy as np
import torch
from detectron2.data import (
    DatasetMapper,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.engine import DefaultTrainer, TrainerBase, create_ddp_model, hooks
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from fvcore.nn.precise_bn import get_bn_modules

from ..data import CenterNetDatasetMapper
from ..data.mixup import Mixup
from ..data.samplers import PositionedDataset, ResumableTrainingSampler
from ..data.test_mapper import TestDatasetMapper
from ..data.validation import readable_dataset_dicts
from .adversarial import DiscriminatorStep, build_discriminator_optimizer, feature_adversaries
from .amp import build_step_trainer
from .checkpoint import AtomicCheckpointer, remove_stale_temporary_files
from .ema import EMAHook, ModelEMA
from .evaluation import ReadableImagesCOCOEvaluator
from .replicas import ReplicaCheck
from .visualization import PredictionImages

logger = logging.getLogger(__name__)

RESUMABLE_SAMPLER = "ResumableTrainingSampler"

TRAIN_MAPPERS = ("centernet", "default")
EVALUATORS = ("coco", "none")
OPTIMIZERS = ("SGD", "ADAM", "ADAMW")


def _check_choice(key: str, value: str, choices) -> None:
    if value not in choices:
        raise ValueError(f"{key}='{value}' is not one of {choices}.")


def build_train_mapper(cfg):
    """The training mapper named by ``DATALOADER.TRAIN_MAPPER``."""
    _check_choice("DATALOADER.TRAIN_MAPPER", cfg.DATALOADER.TRAIN_MAPPER, TRAIN_MAPPERS)
    if cfg.DATALOADER.TRAIN_MAPPER == "centernet":
        return CenterNetDatasetMapper(cfg)
    return DatasetMapper(cfg, is_train=True)


def stream_augmentations(cfg) -> Dict:
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
        raise ValueError(f"INPUT.TRAIN_SIZES must hold positive multiples of 32 (input pixels), got {bad} "
                         f"in {sizes}.")
    features = [k for k, on in (("INPUT.TRAIN_SIZES", sizes), ("INPUT.MIXUP.ENABLED", cfg.INPUT.MIXUP.ENABLED)) if on]
    if features and cfg.DATALOADER.SAMPLER_TRAIN != RESUMABLE_SAMPLER:
        raise ValueError(f"{' and '.join(features)} need DATALOADER.SAMPLER_TRAIN '{RESUMABLE_SAMPLER}', "
                         f"got '{cfg.DATALOADER.SAMPLER_TRAIN}'.")
    if features and cfg.DATALOADER.TRAIN_MAPPER != "centernet":
        raise ValueError(f"{' and '.join(features)} need DATALOADER.TRAIN_MAPPER 'centernet', "
                         f"got '{cfg.DATALOADER.TRAIN_MAPPER}'.")
    return {
        "batch_size": cfg.SOLVER.IMS_PER_BATCH,
        "train_sizes": sizes,
        "mixup": Mixup.from_config(cfg) if cfg.INPUT.MIXUP.ENABLED else None,
    }


def build_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    """SGD (detectron2's own), Adam or AdamW as ``SOLVER.OPTIMIZER`` says, with
    detectron2's per-parameter weight-decay / lr rules and gradient clipping."""
    name = cfg.SOLVER.OPTIMIZER.upper()
    _check_choice("SOLVER.OPTIMIZER", name, OPTIMIZERS)
    if name == "SGD":
        return DefaultTrainer.build_optimizer(cfg, model)
    params = get_default_optimizer_params(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
        weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
    )
    opt = torch.optim.Adam if name == "ADAM" else torch.optim.AdamW
    kwargs = {"lr": cfg.SOLVER.BASE_LR, "weight_decay": cfg.SOLVER.WEIGHT_DECAY}
    try:
        # one fused kernel per step: the same update, about 5x faster than the
        # per-parameter loop on a CPU (torch >= 2.4 on CPU, CUDA since 2.0)
        optimizer = opt(params, fused=True, **kwargs)
    except (RuntimeError, TypeError):
        optimizer = opt(params, **kwargs)
    return maybe_add_gradient_clipping(cfg, optimizer)


def build_resumable_train_loader(cfg, seed: int):
    """The training loader over a :class:`PositionedDataset`: a stream whose
    samples depend only on their position and ``seed``, with multi-scale
    training and mixup as the config says (:func:`stream_augmentations`).

    Returns:
        (data loader, the dataset, the sampler); set ``dataset.seed`` and
        ``sampler.start`` before the loader starts iterating.
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
    seed, its current iteration and this process's rank. ``trainer_ref`` is a
    weak reference, so the model does not keep its trainer alive."""
    def hook(module, args):
        trainer = trainer_ref()
        if module.training and trainer is not None:
            torch.manual_seed(step_seed(trainer._data_seed, trainer.iter, comm.get_rank()))
    return hook


class Trainer(DefaultTrainer):
    """``DefaultTrainer`` whose train mapper (DATALOADER.TRAIN_MAPPER), evaluator
    (TEST.EVALUATOR) and optimizer (SOLVER.OPTIMIZER) come from the config, and which adds:

    - model EMA (MODEL_EMA), checkpointed and used for evaluation;
    - atomic checkpoint writes (:class:`AtomicCheckpointer`);
    - with DATALOADER.SAMPLER_TRAIN "ResumableTrainingSampler", a data stream
      that ``--resume`` continues exactly (:mod:`centerx.data.samplers`);
      its seed is saved with the checkpoint; multi-scale training
      (INPUT.TRAIN_SIZES) and mixup (INPUT.MIXUP) are drawn within it;
    - DistributedDataParallel for CPU models too (gloo), which detectron2's
      trainer wraps with GPU-only arguments, and a check that all processes
      end with the same weights;
    - with MODEL.DISTILL.ADVERSARIAL, the discriminators' own optimizer and
      step (:class:`DiscriminatorStep`); discriminators, adapters and that
      optimizer are checkpointed ("adversarial", "adversarial_optimizer") and
      restored on ``--resume``, while "model" stays the plain student;
    - images with predicted boxes in TensorBoard at each evaluation (TEST.VIS_IMAGES);
    - torch's global generator reseeded right before each training forward
      from (data seed, iteration, rank) (:func:`step_seed`), after the batch is
      loaded, so that random draws in the forward (DropBlock's masks) replay
      exactly after ``--resume``.
    """

    def __init__(self, cfg):
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())

        model = self.build_model(cfg)
        model.register_forward_pre_hook(reseed_training_forward(weakref.ref(self)))
        optimizer = self.build_optimizer(cfg, model)
        self._data_seed = data_seed(cfg)
        self._stream = None
        if cfg.DATALOADER.SAMPLER_TRAIN == RESUMABLE_SAMPLER:
            data_loader, dataset, sampler = build_resumable_train_loader(cfg, self._data_seed)
            self._stream = (dataset, sampler)
        else:
            data_loader = self.build_train_loader(cfg)
        self.ema = ModelEMA(model, cfg.MODEL_EMA.DECAY, cfg.MODEL_EMA.WARMUP_ITERS) if cfg.MODEL_EMA.ENABLED else None
        self.adversaries = feature_adversaries(model)
        self.discriminator_optimizer = (build_discriminator_optimizer(cfg, self.adversaries)
                                        if self.adversaries is not None else None)

        on_gpu = torch.device(cfg.MODEL.DEVICE).type == "cuda"
        model = create_ddp_model(model, broadcast_buffers=False,
                                 device_ids=[comm.get_local_rank()] if on_gpu else None)
        self._trainer = build_step_trainer(cfg, model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        if comm.is_main_process() and os.path.isdir(cfg.OUTPUT_DIR):
            remove_stale_temporary_files(cfg.OUTPUT_DIR)
        self.checkpointer = AtomicCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        if self.ema is not None:
            self.checkpointer.add_checkpointable("ema", self.ema)
        if self.adversaries is not None:
            self.checkpointer.add_checkpointable("adversarial", self.adversaries)
            self.checkpointer.add_checkpointable("adversarial_optimizer", self.discriminator_optimizer)
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    @property
    def unwrapped_model(self) -> torch.nn.Module:
        """The model without its DistributedDataParallel wrapper."""
        return self.model.module if hasattr(self.model, "module") else self.model

    def resume_or_load(self, resume=True):
        """detectron2's resume / load, then: the EMA restarts from the loaded
        weights unless the checkpoint had one, and the data stream starts at the
        first sample the resumed iteration has not seen."""
        super().resume_or_load(resume=resume)
        if self.ema is not None and not self.ema.restored:
            self.ema.reset(self.unwrapped_model)
        if self._stream is not None:
            dataset, sampler = self._stream
            dataset.seed = self._data_seed
            sampler.start = self.start_iter * self.cfg.SOLVER.IMS_PER_BATCH
        elif resume and self.start_iter > 0:
            logger.warning(f"DATALOADER.SAMPLER_TRAIN={self.cfg.DATALOADER.SAMPLER_TRAIN} restarts its stream on "
                           f"resume; use '{RESUMABLE_SAMPLER}' to continue it exactly.")

    def state_dict(self):
        ret = super().state_dict()
        ret["data_seed"] = self._data_seed
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self._data_seed = state_dict.get("data_seed", self._data_seed)

    @contextlib.contextmanager
    def eval_weights(self):
        """Within the block, the model holds the weights to evaluate: the EMA's
        with MODEL_EMA.ENABLED and USE_FOR_EVAL, else its own."""
        if self.ema is not None and self.cfg.MODEL_EMA.USE_FOR_EVAL:
            with self.ema.apply_to(self.unwrapped_model):
                yield
        else:
            yield

    def build_hooks(self):
        """detectron2's default hooks (timer, LR scheduler, PreciseBN,
        checkpointer, evaluation, writers) plus the discriminators' step and the
        EMA update (in that order, before the checkpointer, so checkpoints hold
        the stepped discriminators and the updated EMA), the replica check of
        distributed runs and prediction images (before the writers); evaluation
        and images use :meth:`eval_weights`."""
        cfg = self.cfg.clone()
        cfg.defrost()
        cfg.DATALOADER.NUM_WORKERS = 0  # as detectron2: the PreciseBN loader
        ret = [hooks.IterationTimer(), hooks.LRScheduler()]
        if self.adversaries is not None:
            ret.append(DiscriminatorStep(self.adversaries, self.discriminator_optimizer))
        if self.ema is not None:
            ret.append(EMAHook(self.ema, self.unwrapped_model))
        if cfg.TEST.PRECISE_BN.ENABLED and get_bn_modules(self.model):
            ret.append(hooks.PreciseBN(cfg.TEST.EVAL_PERIOD, self.model, self.build_train_loader(cfg),
                                       cfg.TEST.PRECISE_BN.NUM_ITER))
        if comm.is_main_process():
            ret.append(hooks.PeriodicCheckpointer(self.checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD))

        def test_and_save_results():
            with self.eval_weights():
                self._last_eval_results = self.test(self.cfg, self.model)
            return self._last_eval_results

        ret.append(hooks.EvalHook(cfg.TEST.EVAL_PERIOD, test_and_save_results))
        ret.append(ReplicaCheck(self.unwrapped_model))
        if comm.is_main_process():
            ret.append(PredictionImages(self.cfg, cfg.TEST.EVAL_PERIOD, os.path.join(cfg.OUTPUT_DIR, "predictions")))
            ret.append(hooks.PeriodicWriter(self.build_writers(), period=20))
        return ret

    @classmethod
    def build_train_loader(cls, cfg):
        """The training loader (for use outside the trainer; the trainer builds a
        resumable one itself when DATALOADER.SAMPLER_TRAIN asks for it)."""
        if cfg.DATALOADER.SAMPLER_TRAIN == RESUMABLE_SAMPLER:
            return build_resumable_train_loader(cfg, data_seed(cfg))[0]
        stream_augmentations(cfg)  # refuses multi-scale / mixup without the resumable stream
        return build_detection_train_loader(cfg, mapper=build_train_mapper(cfg))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        _check_choice("TEST.EVALUATOR", cfg.TEST.EVALUATOR, EVALUATORS)
        if cfg.TEST.EVALUATOR == "none":
            raise NotImplementedError("TEST.EVALUATOR is 'none'")
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
        dicts, skipped = readable_dataset_dicts(dataset_name)
        return ReadableImagesCOCOEvaluator(dataset_name, [d["image_id"] for d in dicts], skipped,
                                           output_dir=output_folder)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        """detectron2's test loader over the dataset's readable images (the ones
        validation found unreadable are skipped, as in training), read as in
        training (:class:`~centerx.data.test_mapper.TestDatasetMapper`)."""
        dicts, _ = readable_dataset_dicts(dataset_name)
        return build_detection_test_loader(dicts, mapper=TestDatasetMapper(cfg))

    @classmethod
    def build_model(cls, cfg):
        """detectron2's model, its weights in channels-last layout when
        MODEL.CENTERX.CHANNELS_LAST (the model puts its input batch in that
        layout itself)."""
        model = super().build_model(cfg)
        if cfg.MODEL.CENTERX.CHANNELS_LAST:
            model = model.to(memory_format=torch.channels_last)
        return model

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)


def add_solver_config(cfg):
    """Optimizer key (SOLVER.OPTIMIZER).

    Part of :func:`centerx.add_centerx_config`; the comment above each key is its
    documentation (docs/config.md is generated from it)."""
    _C = cfg

    # ------------------------------------------------------------------ solver
    # Optimizer: "SGD" (detectron2's), "ADAM" or "ADAMW" (the CenterNet papers
    # train with Adam). Adam uses SOLVER.BASE_LR and SOLVER.WEIGHT_DECAY.
    _C.SOLVER.OPTIMIZER = "SGD"
    return cfg


def add_evaluation_config(cfg):
    """Evaluation keys (TEST.*).

    Part of :func:`centerx.add_centerx_config`; the comment above each key is its
    documentation (docs/config.md is generated from it)."""
    _C = cfg

    # -------------------------------------------------------------------- test
    # Flip test-time augmentation (CenterNet's --flip_test) in evaluation and
    # DefaultPredictor: each image and its mirror image go through the network
    # in one batch; heatmap probabilities and box sizes (CenterNet) or
    # distances (TTFNet) are averaged before peak masking (CenterNet's offsets
    # come from the unflipped image). About 2x the network's inference cost.
    # EXPORT.FLIP_TEST puts it in exported graphs.
    _C.TEST.FLIP_TEST = False
    # Evaluator for TEST datasets: "coco" (detectron2's COCOEvaluator) or
    # "none" (no evaluation).
    _C.TEST.EVALUATOR = "coco"
    # At each evaluation during training, draw the predictions of the model on
    # the first VIS_IMAGES images of DATASETS.TEST[0] and write them to
    # TensorBoard (detectron2's event writer); 0 = off.
    _C.TEST.VIS_IMAGES = 4
    # Only detections scoring above this are drawn in those images.
    _C.TEST.VIS_SCORE_THRESH = 0.3
    return cfg
