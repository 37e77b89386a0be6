"""Mixup for detection ("Bag of Freebies for Training Object Detection Neural
Networks", Zhang et al. 2019): two training images blended with a weight
lambda ~ Beta(alpha, alpha), both box sets kept, each object's loss weighted by
its image's share of the blend.

The draws (whether a sample is mixed, with which image, lambda) are made by
:class:`~centerx.data.samplers.PositionedDataset` from the sample's stream
position, so a mixed stream resumes exactly as a plain one does.
"""

from dataclasses import dataclass

import torch
from detectron2.structures import Instances

from ..config import ConfigValueError


@dataclass(frozen=True)
class Mixup:
    """When and how strongly training samples are mixed.

    Attributes:
        prob: probability that a training sample is mixed with a second one.
        alpha: lambda ~ Beta(alpha, alpha), the first image's share.
        stop_iter: no sample of this iteration or later is mixed
            (SOLVER.MAX_ITER - INPUT.MIXUP.OFF_LAST_ITERS); None = no end.
    """

    prob: float = 0.5
    alpha: float = 1.5
    stop_iter: int | None = None

    def __post_init__(self):
        if not 0.0 <= self.prob <= 1.0:
            raise ConfigValueError(f"INPUT.MIXUP.PROB must be in [0, 1], got {self.prob}.")
        if not self.alpha > 0:
            raise ConfigValueError(f"INPUT.MIXUP.ALPHA must be > 0 (lambda ~ Beta(ALPHA, ALPHA)), got {self.alpha}.")

    def active_at(self, iteration: int) -> bool:
        """Whether samples of this iteration may be mixed at all."""
        return self.stop_iter is None or iteration < self.stop_iter

    @classmethod
    def from_config(cls, cfg) -> "Mixup":
        """From INPUT.MIXUP (PROB, ALPHA, OFF_LAST_ITERS) and SOLVER.MAX_ITER."""
        m = cfg.INPUT.MIXUP
        if m.OFF_LAST_ITERS < 0:
            raise ConfigValueError(f"INPUT.MIXUP.OFF_LAST_ITERS must be >= 0, got {m.OFF_LAST_ITERS}.")
        return cls(prob=float(m.PROB), alpha=float(m.ALPHA), stop_iter=cfg.SOLVER.MAX_ITER - m.OFF_LAST_ITERS)


def mix_samples(first: dict, second: dict, lam: float) -> dict:
    """Blend two mapped training samples.

    Args:
        first, second: mapper outputs with "image" (tensor [3, S, S], both the
            same size, usually uint8) and "instances" (gt_boxes in input pixels,
            gt_classes).
        lam: the first sample's share, in [0, 1].

    Returns:
        ``first``'s dict (a shallow copy) with "image" = round(lam * first +
        (1 - lam) * second) in the first image's dtype, "instances" = the first
        sample's objects followed by the second's, with ``gt_weights`` (float32
        [N]) lam and 1 - lam respectively, and "unlabeled" True when either
        sample was unlabeled (its objects are not in the boxes).
    """
    a, b = first["image"], second["image"]
    if a.shape != b.shape:
        raise ValueError(
            f"Mixup needs images of one size, got {tuple(a.shape)} and {tuple(b.shape)}: "
            "use DATALOADER.TRAIN_MAPPER 'centernet', whose outputs are all square."
        )
    image = (lam * a.double() + (1.0 - lam) * b.double()).round().to(a.dtype)
    parts = []
    for sample, weight in ((first, lam), (second, 1.0 - lam)):
        inst = sample["instances"]
        parts.append(
            Instances(
                inst.image_size, **inst.get_fields(), gt_weights=torch.full((len(inst),), weight, dtype=torch.float32)
            )
        )
    out = dict(first, image=image, instances=Instances.cat(parts))
    if first.get("unlabeled", False) or second.get("unlabeled", False):
        out["unlabeled"] = True
    return out
