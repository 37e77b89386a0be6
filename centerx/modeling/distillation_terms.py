"""Distillation terms by name, so a config (and so ``train_net.py``) can train any
of them: the Distiller's own output-map and adversarial terms are switched by
MODEL.DISTILL.LOGIT_KD and ADVERSARIAL; every name in MODEL.DISTILL.TERMS adds
a term from :data:`DISTILLATION_TERM_REGISTRY`, and MODEL.DISTILL.HEATMAP_LOSS
names the output-map term's heatmap loss in :data:`HEATMAP_DISTILLATION_LOSS_REGISTRY`.
A user's module registers its own (``--import``, docs/extending.md)."""

from collections.abc import Callable, Sequence

import torch
from fvcore.common.registry import Registry

from ..config import ConfigValueError
from .losses.distillation import quality_focal_distillation_loss

__all__ = [
    "DISTILLATION_TERM_REGISTRY",
    "HEATMAP_DISTILLATION_LOSS_REGISTRY",
    "build_distillation_terms",
    "heatmap_distillation_loss",
]

DISTILLATION_TERM_REGISTRY = Registry("DISTILLATION_TERM")
DISTILLATION_TERM_REGISTRY.__doc__ = """Distillation terms, by the name MODEL.DISTILL.TERMS gives.

Each entry is called as ``entry(cfg, student, teachers, links)`` (the Distiller's
config, its student, its frozen teachers and their :class:`TeacherLink` s) and
returns the term: a callable ``(distiller, outputs, features, teacher_outputs,
teacher_features) -> {loss name: loss}`` run on every training batch. A term that
is an ``nn.Module`` trains its parameters with the student's, and its state
(parameters and buffers) is saved in the checkpoint under "distillation_terms"
and restored by ``--resume``; the student's checkpoints stay the plain student."""

HEATMAP_DISTILLATION_LOSS_REGISTRY = Registry("HEATMAP_DISTILLATION_LOSS")
HEATMAP_DISTILLATION_LOSS_REGISTRY.__doc__ = """Heatmap terms of the output-map distillation, by the
name MODEL.DISTILL.HEATMAP_LOSS gives: ``(student logits, teacher logits) -> scalar``
over the taught classes, [N, K, H, W] each, replacing the student's own "heatmap" term."""


@HEATMAP_DISTILLATION_LOSS_REGISTRY.register()
def quality_focal(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """:func:`~centerx.modeling.losses.distillation.quality_focal_distillation_loss` (beta 2)."""
    return quality_focal_distillation_loss(student_logits, teacher_logits)


def heatmap_distillation_loss(name: str) -> Callable | None:
    """The registered heatmap loss called ``name``; None for "" (the student's own term)."""
    if not name:
        return None
    if name not in HEATMAP_DISTILLATION_LOSS_REGISTRY:
        raise ConfigValueError(
            f"MODEL.DISTILL.HEATMAP_LOSS='{name}' is not '' (the student's own term) or one of the "
            f"registered heatmap losses {sorted(n for n, _ in HEATMAP_DISTILLATION_LOSS_REGISTRY)}."
        )
    return HEATMAP_DISTILLATION_LOSS_REGISTRY.get(name)


def build_distillation_terms(cfg, student, teachers: Sequence, links: Sequence) -> list[Callable]:
    """The terms MODEL.DISTILL.TERMS names, in order (each built once)."""
    names = list(cfg.MODEL.DISTILL.TERMS)
    unknown = [n for n in names if n not in DISTILLATION_TERM_REGISTRY]
    if unknown:
        registered = sorted(n for n, _ in DISTILLATION_TERM_REGISTRY)
        raise ConfigValueError(
            f"MODEL.DISTILL.TERMS: {unknown} are not registered distillation terms (registered: "
            f"{registered or 'none'}). Register yours with @DISTILLATION_TERM_REGISTRY.register() in a "
            "module given to --import (or the config's IMPORTS)."
        )
    if len(set(names)) != len(names):
        raise ConfigValueError(f"MODEL.DISTILL.TERMS names a term twice: {names}.")
    return [DISTILLATION_TERM_REGISTRY.get(n)(cfg, student, teachers, links) for n in names]
