"""Constant-magnitude loss weighting (docs/distillation.md; the original centerX's "communism loss").

Each chosen loss term L is replaced by ``c * L / stopgrad(D)``, where D is the
term's current value (or a running average of it) and ``c`` its target
magnitude. With D = L the term's value is exactly ``c`` and its gradient is
``c * grad(L) / L``: every term pulls with a fixed strength whatever its scale,
which makes training insensitive to too-large learning rates and makes loss
weights (distillation ones included) need no hand tuning.
"""

import logging
import math
from collections.abc import Mapping

import torch
from detectron2.utils.events import get_event_storage
from detectron2.utils.logger import log_every_n_seconds

from ..config import ConfigValueError

logger = logging.getLogger(__name__)

NORMALIZERS = ("current", "running_mean")


class LossBalancer:
    """Rescale named loss terms to constant magnitudes.

    Args:
        magnitudes: loss name (exactly as in the model's loss dict) -> target
            magnitude c > 0. Terms not listed pass through unchanged; listed names
            the model does not produce are ignored (one list can serve several
            meta-architectures).
        normalizer: "current": divide by the term's value at this step (its
            value becomes exactly c); "running_mean": divide by an exponential
            moving average of its absolute value (value about c, less noisy scale).
        momentum: weight of the old average in "running_mean" (0 <= m < 1).
        min_normalizer: the divisor is max(normalizer, min_normalizer), so the
            gradient gain c / normalizer never exceeds c / min_normalizer and an
            exactly-zero term gives 0, not 0 / 0.

    Calling it on a loss dict returns a new dict with the listed terms rescaled.
    A term whose value is NaN or infinite is replaced by a constant 0 for that
    step (no gradient flows through it) and counted in the log; if every term of
    the dict is non-finite, ``FloatingPointError`` is raised as detectron2's
    trainer does for a NaN loss. Inside a detectron2 training loop each listed
    term's unscaled value is recorded in the ``EventStorage`` as
    ``<name>_unscaled``.

    The running averages are plain Python state, not module buffers: they are
    not written into checkpoints (a distilled or balanced model's checkpoint
    holds only the detector) and restart from the first step after a resume.
    Under DDP each process balances its own (local) losses.
    """

    def __init__(
        self,
        magnitudes: Mapping[str, float],
        normalizer: str = "current",
        momentum: float = 0.99,
        min_normalizer: float = 1e-6,
    ):
        if normalizer not in NORMALIZERS:
            raise ConfigValueError(f"MODEL.LOSS_BALANCE.NORMALIZER='{normalizer}' is not one of {NORMALIZERS}.")
        if not 0.0 <= momentum < 1.0:
            raise ConfigValueError(f"MODEL.LOSS_BALANCE.MOMENTUM must be in [0, 1), got {momentum}.")
        if not min_normalizer > 0.0:
            raise ConfigValueError(f"MODEL.LOSS_BALANCE.MIN_NORMALIZER must be > 0, got {min_normalizer}.")
        for name, c in magnitudes.items():
            if not (isinstance(c, (int, float)) and math.isfinite(c) and c > 0):
                raise ConfigValueError(
                    f"MODEL.LOSS_BALANCE.MAGNITUDES: magnitude of '{name}' must be a finite number > 0, got {c!r}."
                )
        self.magnitudes = {name: float(c) for name, c in magnitudes.items()}
        self.normalizer = normalizer
        self.momentum = momentum
        self.min_normalizer = min_normalizer
        self.running_means: dict[str, float] = {}
        self.num_skipped = 0
        self._reported = False

    def __call__(self, losses: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Loss dict (scalar tensors) -> loss dict with the listed terms rescaled."""
        if not self._reported:
            self._report(losses)
        out = dict(losses)
        raw = {name: float(losses[name].detach()) for name in self.magnitudes if name in losses}
        storage = _event_storage()
        if storage is not None:
            storage.put_scalars(**{f"{name}_unscaled": v for name, v in raw.items()})
        skipped = [name for name, v in raw.items() if not math.isfinite(v)]
        for name, value in raw.items():
            if name in skipped:
                out[name] = losses[name].detach().new_zeros(())
            else:
                divisor = max(self._normalizer(name, abs(value)), self.min_normalizer)
                out[name] = losses[name] * (self.magnitudes[name] / divisor)
        if skipped:
            self._skip(skipped, out)
        return out

    def _normalizer(self, name: str, value: float) -> float:
        """The current |L|, or its running mean updated with it."""
        if self.normalizer == "current":
            return value
        previous = self.running_means.get(name)
        mean = value if previous is None else self.momentum * previous + (1.0 - self.momentum) * value
        self.running_means[name] = mean
        return mean

    def _skip(self, skipped, out: dict[str, torch.Tensor]) -> None:
        others = [v for name, v in out.items() if name not in skipped]
        if not any(v.requires_grad and torch.isfinite(v).all() for v in others):
            raise FloatingPointError(
                f"Loss balancing: every loss term is non-finite ({sorted(out)}); the model has diverged."
            )
        self.num_skipped += len(skipped)
        log_every_n_seconds(
            logging.WARNING,
            f"Loss balancing: non-finite loss term(s) {skipped} left out of this step; "
            f"{self.num_skipped} term(s) left out so far.",
            n=60,
        )

    def _report(self, losses: dict[str, torch.Tensor]) -> None:
        """Say once which terms are rescaled, which are left as they are, and
        which listed names this model does not produce."""
        self._reported = True
        scaled = {n: c for n, c in self.magnitudes.items() if n in losses}
        logger.info(
            f"Loss balancing ({self.normalizer}): rescaled to constant magnitudes {scaled}; "
            f"left as they are: {sorted(set(losses) - set(scaled))}; "
            f"listed but not produced by this model: {sorted(set(self.magnitudes) - set(losses))}."
        )


def _event_storage():
    try:
        return get_event_storage()
    except AssertionError:  # called outside a detectron2 training loop
        return None


def build_loss_balancer(cfg) -> LossBalancer | None:
    """The ``LossBalancer`` configured by ``MODEL.LOSS_BALANCE``, or None when disabled."""
    c = cfg.MODEL.LOSS_BALANCE
    if not c.ENABLED:
        return None
    magnitudes = {}
    for index, entry in enumerate(c.MAGNITUDES):
        if isinstance(entry, (str, bytes)) or len(entry) != 2 or not isinstance(entry[0], str):
            raise ConfigValueError(
                f"MODEL.LOSS_BALANCE.MAGNITUDES[{index}] must be a (loss name, magnitude) pair, got {entry!r}."
            )
        if entry[0] in magnitudes:
            raise ConfigValueError(f"MODEL.LOSS_BALANCE.MAGNITUDES lists '{entry[0]}' twice.")
        magnitudes[entry[0]] = entry[1]
    return LossBalancer(magnitudes, c.NORMALIZER, c.MOMENTUM, c.MIN_NORMALIZER)
