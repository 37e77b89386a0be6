"""The discriminators' side of adversarial feature distillation
(``MODEL.DISTILL.ADVERSARIAL``, :mod:`centerx.modeling.adversarial`): their own
Adam optimizer and the hook that steps it after every training step."""

from typing import Optional

import torch
import torch.distributed as dist
from detectron2.engine import HookBase
from detectron2.utils import comm
from torch import nn

from ..config import ConfigValueError
from ..modeling.adversarial import FeatureAdversaries

__all__ = ["DiscriminatorStep", "build_discriminator_optimizer", "discriminator_step", "feature_adversaries"]


def feature_adversaries(model: nn.Module) -> FeatureAdversaries | None:
    """The adapters and discriminators of a ``Distiller`` with
    MODEL.DISTILL.ADVERSARIAL enabled (``model.adversarial``), else None."""
    adversaries = getattr(model, "adversarial", None)
    return adversaries if isinstance(adversaries, FeatureAdversaries) else None


def build_discriminator_optimizer(cfg, adversaries: FeatureAdversaries) -> torch.optim.Adam:
    """Adam over the discriminators' parameters only, with the constant learning
    rate MODEL.DISTILL.ADVERSARIAL.BASE_LR and betas BETAS (no schedule, no
    weight decay, no gradient clipping)."""
    a = cfg.MODEL.DISTILL.ADVERSARIAL
    if not a.BASE_LR > 0:
        raise ConfigValueError(f"MODEL.DISTILL.ADVERSARIAL.BASE_LR must be > 0, got {a.BASE_LR}.")
    betas = tuple(a.BETAS)
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise ConfigValueError(f"MODEL.DISTILL.ADVERSARIAL.BETAS must be two values in [0, 1), got {a.BETAS}.")
    return torch.optim.Adam(adversaries.discriminators.parameters(), lr=a.BASE_LR, betas=betas)


def discriminator_step(adversaries: FeatureAdversaries, optimizer: torch.optim.Optimizer) -> tuple[float, float]:
    """One optimizer step of every discriminator on the maps the last training
    forward cached: loss = sum over (teacher, level) of BCE(D(t), 1) + BCE(D(s), 0),
    in FP32, back-propagated into the discriminators only. With several
    processes the gradients (and the logged values) are averaged across them
    first, in one all-reduce, so the discriminators stay identical everywhere.
    Gradients are released afterwards (``None`` until the next step).

    Returns:
        (discriminator loss, accuracy averaged over discriminators), the means
        over processes; reading them back is this step's one host sync.
    """
    with adversaries.trainable_discriminators():
        terms = adversaries.discriminator_losses()
        loss = torch.stack([value for value, _ in terms.values()]).sum()
        accuracy = torch.stack([acc for _, acc in terms.values()]).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        stats = torch.stack([loss.detach(), accuracy])
        world_size = comm.get_world_size()
        if world_size > 1:
            params = list(adversaries.discriminators.parameters())
            flat = torch.cat([p.grad.reshape(-1) for p in params] + [stats])
            dist.all_reduce(flat)
            flat /= world_size
            for p, grad in zip(params, flat[:-2].split([p.numel() for p in params])):
                p.grad.copy_(grad.view_as(p))
            stats = flat[-2:]
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    loss_value, accuracy_value = stats.tolist()
    return loss_value, accuracy_value


class DiscriminatorStep(HookBase):
    """Runs :func:`discriminator_step` after every training step, on every
    process, and writes ``loss_discriminator`` and ``discriminator_accuracy`` to
    the event storage (not part of ``total_loss``, which is the student's).

    Register it after the LR scheduler and before the EMA update and the
    checkpointer, so a checkpoint of iteration k holds the discriminators after
    their step k.
    """

    def __init__(self, adversaries: FeatureAdversaries, optimizer: torch.optim.Optimizer):
        self.adversaries = adversaries
        self.optimizer = optimizer

    @classmethod
    def from_config(cls, cfg, model: nn.Module) -> Optional["DiscriminatorStep"]:
        """The step of ``model``'s discriminators (:func:`feature_adversaries`)
        with their own optimizer (:func:`build_discriminator_optimizer`), or
        None when the model has none."""
        adversaries = feature_adversaries(model)
        if adversaries is None:
            return None
        return cls(adversaries, build_discriminator_optimizer(cfg, adversaries))

    def checkpointables(self) -> dict:
        """Discriminators with adapters, and their optimizer: restored on
        ``--resume``, while the checkpoint's "model" stays the plain student."""
        return {"adversarial": self.adversaries, "adversarial_optimizer": self.optimizer}

    def after_step(self):
        loss, accuracy = discriminator_step(self.adversaries, self.optimizer)
        self.trainer.storage.put_scalars(loss_discriminator=loss, discriminator_accuracy=accuracy)
