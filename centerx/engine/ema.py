"""Exponential moving average (EMA) of a model's weights, as a detectron2 hook."""

import contextlib
import logging
import math
from typing import Optional

import torch
from detectron2.engine import HookBase
from torch import nn

from ..checkpoint import MissingWeightsError, StrictCheckpointer
from ..config import ConfigValueError

logger = logging.getLogger(__name__)


class ModelEMA:
    """EMA of every floating-point parameter and buffer of a model.

    After update k (1, 2, ...): ema = d_k * ema + (1 - d_k) * w with
    d_k = decay * (1 - exp(-k / warmup_iters)) (d_k = decay when warmup_iters
    is 0), so early updates follow the fast-changing weights closely. Integer
    buffers (BatchNorm's counters) are copied. The EMA lives on the model's
    device; ``state_dict`` / ``load_state_dict`` make it a checkpointable of
    detectron2's checkpointer.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9998, warmup_iters: int = 2000):
        if not 0.0 <= decay < 1.0:
            raise ConfigValueError(f"MODEL_EMA.DECAY must be in [0, 1), got {decay}.")
        if warmup_iters < 0:
            raise ConfigValueError(f"MODEL_EMA.WARMUP_ITERS must be >= 0, got {warmup_iters}.")
        self.decay = decay
        self.warmup_iters = warmup_iters
        self.updates = 0
        self.restored = False
        self.state: dict[str, torch.Tensor] = {}
        self.reset(model)

    def reset(self, model: nn.Module) -> None:
        """Start over from the model's current weights."""
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self._float_keys = [k for k, v in self.state.items() if v.is_floating_point()]
        self._other_keys = [k for k, v in self.state.items() if not v.is_floating_point()]
        self.updates = 0

    def decay_at(self, updates: int) -> float:
        if self.warmup_iters == 0:
            return self.decay
        return self.decay * (1.0 - math.exp(-updates / self.warmup_iters))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One EMA step towards ``model``'s current weights (no host sync)."""
        self.updates += 1
        weight = 1.0 - self.decay_at(self.updates)
        current = model.state_dict()
        torch._foreach_lerp_(
            [self.state[k] for k in self._float_keys], [current[k].detach() for k in self._float_keys], weight
        )
        for k in self._other_keys:
            self.state[k].copy_(current[k])

    @contextlib.contextmanager
    def apply_to(self, model: nn.Module):
        """Within the block, ``model`` holds the EMA weights; its own are put back afterwards."""
        backup = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.state)
        try:
            yield model
        finally:
            model.load_state_dict(backup)

    def state_dict(self) -> dict:
        return {"state": self.state, "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        missing = set(self.state) - set(state["state"])
        if missing:
            raise KeyError(
                f"The checkpoint's EMA misses {len(missing)} weights of the model, e.g. "
                f"{sorted(missing)[:3]}; it was saved from another architecture."
            )
        for k, v in self.state.items():
            v.copy_(state["state"][k])
        self.updates = int(state["updates"])
        self.restored = True


class EMAHook(HookBase):
    """Model EMA in training: before training, the EMA restarts from the model's
    weights (the loaded MODEL.WEIGHTS when fine-tuning) unless ``--resume``
    restored it from a checkpoint; after every training step, it is updated.
    Its checkpointable is ``{"ema": ema}``.

    Register it before the checkpointer, so a checkpoint of iteration k holds
    the EMA after its update k.
    """

    def __init__(self, ema: ModelEMA, model: nn.Module):
        self.ema = ema
        self.model = model

    @classmethod
    def from_config(cls, cfg, model: nn.Module) -> Optional["EMAHook"]:
        """The hook of a new :class:`ModelEMA` of ``model`` (MODEL_EMA.DECAY,
        WARMUP_ITERS) when MODEL_EMA.ENABLED, else None."""
        if not cfg.MODEL_EMA.ENABLED:
            return None
        return cls(ModelEMA(model, cfg.MODEL_EMA.DECAY, cfg.MODEL_EMA.WARMUP_ITERS), model)

    def checkpointables(self) -> dict:
        return {"ema": self.ema}

    def before_train(self):
        if not self.ema.restored:
            self.ema.reset(self.model)

    def after_step(self):
        self.ema.update(self.model)


def load_weights_for_eval(
    cfg, model, weights: str, resume: bool = False, allow_random: bool = False, run_dir: str | None = None
) -> None:
    """Load ``weights`` (or, with ``resume``, the last checkpoint of ``run_dir``,
    default OUTPUT_DIR) for
    evaluation, export or inference, strictly: every parameter and buffer of
    ``model`` must come from the file
    (:class:`~centerx.checkpoint.StrictCheckpointer`); with MODEL_EMA.ENABLED and
    USE_FOR_EVAL, the checkpoint's EMA weights when it has them.

    No file at all is refused (:class:`~centerx.checkpoint.MissingWeightsError`)
    unless ``allow_random``: then the model keeps its random initialisation, with
    a warning."""
    run_dir = cfg.OUTPUT_DIR if run_dir is None else run_dir
    checkpointer = StrictCheckpointer(model, save_dir=run_dir)
    path = checkpointer.get_checkpoint_file() if resume and checkpointer.has_checkpoint() else weights
    if not path:
        if not allow_random:
            raise MissingWeightsError(
                "MODEL.WEIGHTS is empty"
                + (f" and {run_dir} has no checkpoint to resume" if resume else "")
                + ": the model would keep its random initialisation. Set MODEL.WEIGHTS to a trained checkpoint "
                "(e.g. output/ttfnet_r18_demo/model_final.pth), or pass --allow-random-weights to use a random "
                "model on purpose."
            )
        logger.warning("No weights: the model keeps its random initialisation (--allow-random-weights).")
        return
    extra = checkpointer.load(path)
    if cfg.MODEL_EMA.ENABLED and cfg.MODEL_EMA.USE_FOR_EVAL:
        if load_ema_weights(model, extra):
            logger.info("Using the checkpoint's EMA weights (MODEL_EMA.USE_FOR_EVAL).")
        else:
            logger.warning(
                "MODEL_EMA.USE_FOR_EVAL is set but the checkpoint has no EMA weights; using its trained weights."
            )


def load_ema_weights(model: nn.Module, checkpoint: dict) -> bool:
    """Copy a checkpoint's EMA weights (key "ema") into ``model``.

    Returns:
        True when the checkpoint had them, False otherwise (``model`` unchanged).
    """
    if "ema" not in checkpoint:
        return False
    model.load_state_dict(checkpoint["ema"]["state"])
    return True
