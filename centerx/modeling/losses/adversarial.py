"""Non-saturating GAN losses of adversarial feature distillation.

A discriminator D outputs one real/fake logit per cell of its logit map; the
teacher's feature maps are real, the student's fake. Both losses are binary
cross-entropies with logits, averaged over every cell of the batch, in FP32.
"""

import torch
import torch.nn.functional as F


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """BCE(D(teacher), 1) + BCE(D(student), 0): low when D tells them apart.

    Args:
        real_logits: [N, 1, h, w] D's logits on the teacher's maps.
        fake_logits: [N, 1, h, w] D's logits on the (adapted, detached) student's maps.

    Returns:
        scalar: mean over cells of softplus(-real) plus mean over cells of softplus(fake).
    """
    real, fake = real_logits.float(), fake_logits.float()
    return F.binary_cross_entropy_with_logits(real, torch.ones_like(real)) + F.binary_cross_entropy_with_logits(
        fake, torch.zeros_like(fake)
    )


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """BCE(D(student), 1), the non-saturating student term: low when D takes the
    student's maps for the teacher's.

    Args:
        fake_logits: [N, 1, h, w] D's logits on the adapted student's maps.

    Returns:
        scalar: mean over cells of softplus(-fake).
    """
    fake = fake_logits.float()
    return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))


def discriminator_accuracy(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Fraction of cells D classifies right (real logit > 0, fake logit < 0),
    averaged over the real and the fake maps; 0.5 = chance. Scalar tensor, no host read."""
    return 0.5 * ((real_logits > 0).float().mean() + (fake_logits < 0).float().mean())
