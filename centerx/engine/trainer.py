"""detectron2's ``DefaultTrainer`` with the mapper, evaluator and optimizer chosen by
config, assembled from parts that live beside their features: model EMA
(:mod:`.ema`), the discriminators' step (:mod:`.adversarial`), the exactly
resumable data stream (:mod:`.train_loader`), atomic checkpoints
(:mod:`.checkpoint`), the replica check (:mod:`.replicas`) and prediction images
(:mod:`.visualization`)."""

import contextlib
import logging
import os
import weakref

import torch
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer, HookBase, TrainerBase, create_ddp_model, hooks
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..config import ConfigValueError
from ..console import ProgressPrinter
from ..data.eval_mapper import EvalDatasetMapper
from ..data.validation import readable_dataset_dicts
from .adversarial import DiscriminatorStep
from .amp import build_step_trainer
from .checkpoint import AtomicCheckpointer, remove_stale_temporary_files
from .ema import EMAHook
from .evaluation import ReadableImagesCOCOEvaluator
from .replicas import ReplicaCheck
from .run_report import RunReport
from .train_loader import (
    RESUMABLE_SAMPLER,
    StreamStart,
    build_resumable_train_loader,
    build_train_mapper,
    data_seed,
    reseed_training_forward,
    stream_augmentations,
)
from .visualization import PredictionImages

logger = logging.getLogger(__name__)

EVALUATORS = ("coco", "none")
OPTIMIZERS = ("SGD", "ADAM", "ADAMW")
FULL_MODEL_CLIP = "full_model"
CLIP_TYPES = ("value", "norm", FULL_MODEL_CLIP)
# iterations between metric lines: detectron2's PeriodicWriter period in DefaultTrainer.build_hooks
LOG_PERIOD = 20


def _check_choice(key: str, value: str, choices) -> None:
    if value not in choices:
        raise ConfigValueError(f"{key}='{value}' is not one of {choices}.")


def build_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    """SGD (detectron2's own), Adam or AdamW as ``SOLVER.OPTIMIZER`` says, with
    detectron2's per-parameter weight-decay / lr rules and gradient clipping.

    ``SOLVER.CLIP_GRADIENTS.CLIP_TYPE`` takes detectron2's "value" and "norm" (each
    parameter clipped on its own) and "full_model": the norm of all gradients
    together clipped to CLIP_VALUE, as the TTFNet authors train (norm 35) and as
    detectron2's DETR / Mask2Former projects spell it."""
    name = cfg.SOLVER.OPTIMIZER.upper()
    _check_choice("SOLVER.OPTIMIZER", name, OPTIMIZERS)
    clip = cfg.SOLVER.CLIP_GRADIENTS
    _check_choice("SOLVER.CLIP_GRADIENTS.CLIP_TYPE", clip.CLIP_TYPE, CLIP_TYPES)
    if clip.ENABLED and clip.CLIP_TYPE == FULL_MODEL_CLIP:
        per_parameter = cfg.clone()
        per_parameter.defrost()
        per_parameter.SOLVER.CLIP_GRADIENTS.ENABLED = False
        optimizer = build_optimizer(per_parameter, model)
        return clip_full_model_gradients(optimizer, clip.CLIP_VALUE, clip.NORM_TYPE)
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


def clip_full_model_gradients(
    optimizer: torch.optim.Optimizer, max_norm: float, norm_type: float = 2.0
) -> torch.optim.Optimizer:
    """Make ``optimizer.step`` first scale all its parameters' gradients together so
    that their joint ``norm_type`` norm is at most ``max_norm`` (one factor for the
    whole model, so the step keeps its direction). Under AMP, ``GradScaler.step``
    unscales the gradients before calling ``step`` (also for a fused Adam, which
    would otherwise take them scaled), so the clip sees true gradients. Returns the
    same optimizer object, its class extended."""
    if max_norm <= 0:
        raise ConfigValueError(
            f"SOLVER.CLIP_GRADIENTS.CLIP_VALUE must be positive to clip the full model's gradient "
            f"norm, got {max_norm}; e.g. 35.0 (the TTFNet authors' value)."
        )
    base = type(optimizer)

    class FullModelGradientClipping(base):
        def step(self, closure=None):
            params = [p for group in self.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)
            return super().step(closure)

    FullModelGradientClipping.__name__ = f"{base.__name__}WithFullModelGradientClipping"
    optimizer.__class__ = FullModelGradientClipping
    # a fused Adam tells GradScaler to hand it scaled gradients (it unscales in its
    # kernel); the clip must see true ones, so let GradScaler unscale them first
    optimizer._step_supports_amp_scaling = False
    return optimizer


def _insert_after(hook_list: list[HookBase], hook_type: type, new: list[HookBase]) -> None:
    """Insert ``new`` right after the first hook of ``hook_type`` in ``hook_list``."""
    at = next(i for i, h in enumerate(hook_list) if isinstance(h, hook_type)) + 1
    hook_list[at:at] = new


# checkpoint key of the state of a Distiller's extra terms
DISTILLATION_TERMS_KEY = "distillation_terms"


def distillation_term_state(model: torch.nn.Module) -> torch.nn.Module | None:
    """The extra distillation terms of a Distiller (``model.extra_terms``, the
    ``nn.Module`` ones) when they hold any state (parameters or buffers), else None."""
    model = model.module if hasattr(model, "module") else model
    terms = getattr(model, "extra_terms", None)
    return terms if isinstance(terms, torch.nn.Module) and len(terms.state_dict()) else None


class Trainer(DefaultTrainer):
    """``DefaultTrainer`` whose train mapper (DATALOADER.TRAIN_MAPPER), evaluator
    (TEST.EVALUATOR) and optimizer (SOLVER.OPTIMIZER) come from the config, and
    which registers these parts, each a hook and, where it has state, a
    checkpointable:

    - model EMA (:class:`EMAHook`, MODEL_EMA; checkpoint key "ema"), whose
      weights evaluation uses (:meth:`eval_weights`);
    - with MODEL.DISTILL.ADVERSARIAL, the discriminators' own optimizer and step
      (:class:`DiscriminatorStep`; keys "adversarial", "adversarial_optimizer"),
      while "model" stays the plain student;
    - a Distiller's extra terms with state (MODEL.DISTILL.TERMS: parameters,
      buffers; key "distillation_terms"), which ``--resume`` restores;
    - with DATALOADER.SAMPLER_TRAIN "ResumableTrainingSampler", a data stream
      that ``--resume`` continues exactly (:class:`StreamStart`; its seed is the
      trainer's ``data_seed``, saved with the checkpoint); multi-scale training
      (INPUT.TRAIN_SIZES) and mixup (INPUT.MIXUP) are drawn within it; torch's
      global generator is reseeded right before each training forward
      (:func:`reseed_training_forward`), so random draws in the forward
      (DropBlock's masks) replay exactly after ``--resume``;
    - atomic checkpoint writes (:class:`AtomicCheckpointer`);
    - a check that all processes end with the same weights (:class:`ReplicaCheck`);
    - images with predicted boxes in TensorBoard at each evaluation (TEST.VIS_IMAGES);
    - the run's report (:class:`~centerx.engine.run_report.RunReport`:
      results.csv, plots, model_best.pth, model_final_weights.pth) and a
      console progress line (:class:`~centerx.console.ProgressPrinter`).

    Hooks come from ``DefaultTrainer.build_hooks`` with these added. The
    constructor does not call ``DefaultTrainer.__init__``, which wraps the model
    with GPU-only DistributedDataParallel arguments (a CPU run with several
    processes, gloo, needs ``device_ids=None``), picks float16 AMP only (CPUs
    train under bfloat16 autocast, :func:`build_step_trainer`) and writes
    checkpoints in place; it builds the same attributes (``_trainer``,
    ``scheduler``, ``checkpointer``, ``start_iter``, ``max_iter``, ``cfg``) that
    ``DefaultTrainer``'s other methods use.
    """

    def __init__(self, cfg):
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        self.cfg = cfg
        self.data_seed = data_seed(cfg)

        model = self.build_model(cfg)
        model.register_forward_pre_hook(reseed_training_forward(weakref.ref(self)))
        optimizer = self.build_optimizer(cfg, model)
        if cfg.DATALOADER.SAMPLER_TRAIN == RESUMABLE_SAMPLER:
            data_loader, dataset, sampler = build_resumable_train_loader(cfg, self.data_seed)
            self.stream_start = StreamStart(dataset, sampler)
        else:
            data_loader = self.build_train_loader(cfg)
            self.stream_start = StreamStart()
        self.ema_hook = EMAHook.from_config(cfg, model)
        self.discriminator_step = DiscriminatorStep.from_config(cfg, model)

        on_gpu = torch.device(cfg.MODEL.DEVICE).type == "cuda"
        model = create_ddp_model(model, broadcast_buffers=False, device_ids=[comm.get_local_rank()] if on_gpu else None)
        self._trainer = build_step_trainer(cfg, model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        if comm.is_main_process() and os.path.isdir(cfg.OUTPUT_DIR):
            remove_stale_temporary_files(cfg.OUTPUT_DIR)
        self.checkpointer = AtomicCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        for part in self.step_hooks():
            for name, checkpointable in part.checkpointables().items():
                self.checkpointer.add_checkpointable(name, checkpointable)
        terms = distillation_term_state(model)
        if terms is not None:
            self.checkpointer.add_checkpointable(DISTILLATION_TERMS_KEY, terms)
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.register_hooks(self.build_hooks())

    @property
    def unwrapped_model(self) -> torch.nn.Module:
        """The model without its DistributedDataParallel wrapper."""
        return self.model.module if hasattr(self.model, "module") else self.model

    @property
    def ema(self):
        """The :class:`ModelEMA` (MODEL_EMA.ENABLED), else None."""
        return self.ema_hook.ema if self.ema_hook is not None else None

    def step_hooks(self) -> list[HookBase]:
        """The hooks that change state after each training step, in order: the
        discriminators' step, then the EMA update (so a checkpoint of iteration k
        holds both after their step k)."""
        return [h for h in (self.discriminator_step, self.ema_hook) if h is not None]

    def state_dict(self):
        ret = super().state_dict()
        ret["data_seed"] = self.data_seed
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self.data_seed = state_dict.get("data_seed", self.data_seed)

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
        """``DefaultTrainer.build_hooks`` (timer, LR scheduler, PreciseBN,
        checkpointer, evaluation, writers) with: the stream's start first; the
        :meth:`step_hooks` right after the LR scheduler (before the checkpointer);
        evaluation of :meth:`eval_weights`; after it, the replica check and the
        prediction images (before the writers)."""
        ret = [self.stream_start] + [h for h in super().build_hooks() if h is not None]
        _insert_after(ret, hooks.LRScheduler, self.step_hooks())

        def test_and_save_results():
            with self.eval_weights():
                self._last_eval_results = self.test(self.cfg, self.model)
            return self._last_eval_results

        ret = [
            hooks.EvalHook(self.cfg.TEST.EVAL_PERIOD, test_and_save_results) if isinstance(h, hooks.EvalHook) else h
            for h in ret
        ]
        after_eval = [ReplicaCheck(self.unwrapped_model)]
        if comm.is_main_process():
            after_eval.append(
                PredictionImages(self.cfg, self.cfg.TEST.EVAL_PERIOD, os.path.join(self.cfg.OUTPUT_DIR, "predictions"))
            )
            after_eval.append(
                RunReport(
                    self.cfg.OUTPUT_DIR, LOG_PERIOD, self.cfg.SOLVER.IMS_PER_BATCH, metric=self.cfg.TEST.BEST_METRIC
                )
            )
        _insert_after(ret, hooks.EvalHook, after_eval)
        return ret

    def build_writers(self):
        """detectron2's writers (metrics line, metrics.json, TensorBoard) and a
        :class:`~centerx.console.ProgressPrinter` line for the console."""
        return super().build_writers() + [
            ProgressPrinter(self.max_iter, self.cfg.SOLVER.IMS_PER_BATCH, window=LOG_PERIOD)
        ]

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
        return ReadableImagesCOCOEvaluator(
            dataset_name,
            [d["image_id"] for d in dicts],
            skipped,
            output_dir=output_folder,
            report_score=cfg.TEST.REPORT_SCORE_THRESH if cfg.TEST.CLASS_REPORT else None,
        )

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        """detectron2's test loader over the dataset's readable images (the ones
        validation found unreadable are skipped, as in training), read as in
        training (:class:`~centerx.data.eval_mapper.EvalDatasetMapper`)."""
        dicts, _ = readable_dataset_dicts(dataset_name)
        return build_detection_test_loader(dicts, mapper=EvalDatasetMapper(cfg))

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
