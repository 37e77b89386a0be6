"""Adversarial feature distillation: per teacher and feature level, a small
discriminator tells the teacher's feature map (real) from the student's (fake),
and the student learns to fool it (``MODEL.DISTILL.ADVERSARIAL``).

Gradient routing. The discriminators' parameters keep ``requires_grad=False``
except inside :meth:`FeatureAdversaries.trainable_discriminators`: the student's
fooling term back-propagates through them into the adapters and the student
only, detectron2's optimizer builders skip them, and DistributedDataParallel
neither reduces nor waits for them. Their own optimizer steps them after each
training step (:class:`centerx.engine.adversarial.DiscriminatorStep`) on the
detached maps the forward cached.
"""

import contextlib
from collections.abc import Sequence

import torch
from detectron2.layers import ShapeSpec
from torch import nn

from ..config import ConfigValueError
from .losses.adversarial import discriminator_accuracy, discriminator_loss, generator_loss

__all__ = ["PatchDiscriminator", "FeatureAdversaries"]


class PatchDiscriminator(nn.Sequential):
    """PatchGAN-style discriminator: one real/fake logit per patch of a feature map.

    3x3 conv stride 2 -> LeakyReLU(0.2) -> 3x3 conv stride 2 -> LeakyReLU(0.2)
    -> 1x1 conv. Input [N, in_channels, H, W] (cells of the feature map's own
    stride); output [N, 1, ceil(H / 4), ceil(W / 4)] logits, each seeing a 7x7
    patch of input cells. No normalisation layers: no running statistics to keep
    in step across processes.
    """

    def __init__(self, in_channels: int, channels: int = 64):
        super().__init__(
            nn.Conv2d(in_channels, channels, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(channels, 1, 1),
        )


class FeatureAdversaries(nn.Module):
    """One adapter and one discriminator per (teacher, level).

    The adapter maps the student's map to the teacher's channels (a 1x1 conv
    when the channel counts differ, the identity otherwise); it belongs to the
    student side and is trained by the main optimizer. The discriminator
    (:class:`PatchDiscriminator` on teacher-channel maps) is trained by its own
    optimizer on the maps :meth:`forward` caches. Neither is part of the
    exported student: the ``Distiller``'s ``state_dict`` leaves this module out,
    the trainer checkpoints its ``state_dict`` separately ("adversarial").

    Module keys are ``<teacher>_<level>``, e.g. ``t0_upsampler``.
    """

    def __init__(
        self,
        levels: Sequence[str],
        teacher_names: Sequence[str],
        student_shapes: dict[str, ShapeSpec],
        teacher_shapes: Sequence[dict[str, ShapeSpec]],
        channels: int = 64,
        weight: float = 1.0,
    ):
        """
        Args:
            levels: names of the distilled maps (MODEL.DISTILL.ADVERSARIAL.FEATURES).
            teacher_names: one name per teacher ("t0", ...), as in the loss names.
            student_shapes, teacher_shapes: channels and stride of every map each
                model names (``PointDetector.feature_shapes``), one dict per teacher.
            channels: hidden channels of each discriminator.
            weight: weight of each student fooling term.
        """
        super().__init__()
        _check_levels(levels, student_shapes, teacher_names, teacher_shapes)
        if channels <= 0:
            raise ConfigValueError(f"MODEL.DISTILL.ADVERSARIAL.CHANNELS must be > 0, got {channels}.")
        if weight < 0:
            raise ConfigValueError(f"MODEL.DISTILL.ADVERSARIAL.WEIGHT must be >= 0, got {weight}.")
        self.weight = weight
        self.pairs: list[tuple[str, int, str]] = []  # (module key, teacher index, level)
        self.adapters = nn.ModuleDict()
        self.discriminators = nn.ModuleDict()
        for i, (name, shapes) in enumerate(zip(teacher_names, teacher_shapes)):
            for level in levels:
                key = f"{name}_{level}"
                s_ch, t_ch = student_shapes[level].channels, shapes[level].channels
                self.adapters[key] = nn.Conv2d(s_ch, t_ch, 1) if s_ch != t_ch else nn.Identity()
                self.discriminators[key] = PatchDiscriminator(t_ch, channels)
                self.pairs.append((key, i, level))
        self.discriminators.requires_grad_(False)
        self._cached: list[tuple[str, torch.Tensor, torch.Tensor]] = []

    def forward(
        self, student_features: dict[str, torch.Tensor], teacher_features: Sequence[dict[str, torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        """The student's fooling terms; caches the detached (teacher, adapted
        student) maps for the discriminators' step.

        Args:
            student_features: level -> [N, C_s, H, W] student map (with its graph).
            teacher_features: per teacher, level -> [N, C_t, H, W] map on the same grid.

        Returns:
            ``loss_adv_<teacher>_<level>``: weight * BCE(D(adapter(s)), 1), FP32 scalars.
        """
        losses, cached = {}, []
        for key, i, level in self.pairs:
            fake = self.adapters[key](student_features[level])
            real = teacher_features[i][level]
            losses[f"loss_adv_{key}"] = generator_loss(self.discriminators[key](fake)) * self.weight
            cached.append((key, real.detach(), fake.detach()))
        self._cached = cached
        return losses

    def discriminator_losses(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per module key: (discriminator loss BCE(D(t), 1) + BCE(D(s), 0), its
        accuracy), computed in FP32 on the maps the last :meth:`forward` cached,
        which are then released. Differentiable in the discriminators' parameters
        inside :meth:`trainable_discriminators`."""
        if not self._cached:
            raise RuntimeError(
                "No feature maps cached for the discriminator step: run a training forward of the "
                "Distiller first (once per discriminator step)."
            )
        out = {}
        for key, real, fake in self._cached:
            d = self.discriminators[key]
            real_logits, fake_logits = d(real.float()), d(fake.float())
            out[key] = (
                discriminator_loss(real_logits, fake_logits),
                discriminator_accuracy(real_logits.detach(), fake_logits.detach()),
            )
        self._cached = []
        return out

    @contextlib.contextmanager
    def trainable_discriminators(self):
        """Within the block the discriminators' parameters require gradients."""
        self.discriminators.requires_grad_(True)
        try:
            with torch.enable_grad():
                yield
        finally:
            self.discriminators.requires_grad_(False)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Load a checkpoint's adversarial state, refusing one saved for other levels or teachers."""
        saved = {k.split(".")[1] for k in state_dict if k.startswith("discriminators.")}
        ours = {key for key, _, _ in self.pairs}
        if strict and saved != ours:
            raise ValueError(
                f"The checkpoint's adversarial state has discriminators {sorted(saved)}, this config "
                f"{sorted(ours)}: MODEL.DISTILL.ADVERSARIAL.FEATURES or MODEL.DISTILL.TEACHERS changed "
                "since it was saved."
            )
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


def _check_levels(
    levels: Sequence[str],
    student_shapes: dict[str, ShapeSpec],
    teacher_names: Sequence[str],
    teacher_shapes: Sequence[dict[str, ShapeSpec]],
) -> None:
    """Every level is a map of the student and of each teacher, at the same stride."""
    key = "MODEL.DISTILL.ADVERSARIAL.FEATURES"
    if not levels:
        raise ConfigValueError(f"{key} is empty: name at least one of the student's maps {sorted(student_shapes)}.")
    if len(set(levels)) != len(levels):
        raise ConfigValueError(f"{key} {list(levels)} names a level twice.")
    unknown = [level for level in levels if level not in student_shapes]
    if unknown:
        raise ConfigValueError(
            f"{key}: unknown levels {unknown}; the student's maps are {sorted(student_shapes)} "
            "(its backbone's output features and 'upsampler')."
        )
    for name, shapes in zip(teacher_names, teacher_shapes):
        for level in levels:
            if level not in shapes:
                raise ConfigValueError(f"{key}: teacher {name} has no map '{level}'; its maps are {sorted(shapes)}.")
            if shapes[level].stride != student_shapes[level].stride:
                raise ConfigValueError(
                    f"{key}: teacher {name}'s '{level}' has stride {shapes[level].stride}, the "
                    f"student's {student_shapes[level].stride}; the maps must share the grid."
                )
