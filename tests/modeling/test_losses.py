"""CenterNet losses: penalty-reduced focal loss and the masked L1 regression loss.

The focal loss is compared with a direct float64 numpy implementation of the
formula of the CenterNet paper (un-clamped logs); the L1 loss with hand-computed values.
"""

import numpy as np
import pytest
import torch

from centerx.modeling.losses import gather_at, masked_l1_loss, penalty_reduced_focal_loss


def focal_np(logits, target, alpha=2.0, beta=4.0, normalise=True):
    """-1/N sum[(1-p)^a log p at y == 1; (1-y)^b p^a log(1-p) elsewhere], N = max(#(y == 1), 1)
    (N = 1 when ``normalise`` is False)."""
    x = np.asarray(logits, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    p = 1.0 / (1.0 + np.exp(-x))
    pos = y == 1
    pos_loss = ((1 - p) ** alpha * np.log(p))[pos].sum()
    neg_loss = ((1 - y) ** beta * p**alpha * np.log(1 - p))[~pos].sum()
    return -(pos_loss + neg_loss) / (max(pos.sum(), 1) if normalise else 1)


def gaussian_target(shape=(2, 3, 12, 14), centres=((0, 1, 3, 4), (0, 1, 8, 9), (1, 0, 6, 6), (1, 2, 2, 11)), sigma=1.2):
    """A target with exactly 1 at the centres and max-combined Gaussians around them."""
    y = np.zeros(shape, dtype=np.float32)
    yy, xx = np.mgrid[: shape[2], : shape[3]]
    for b, c, cy, cx in centres:
        g = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2)).astype(np.float32)
        g[cy, cx] = 1.0
        y[b, c] = np.maximum(y[b, c], g)
    return torch.from_numpy(y)


# --------------------------------------------------------------------------- #
# penalty_reduced_focal_loss
# --------------------------------------------------------------------------- #
def test_focal_matches_numpy_formula():
    """Random logits against a Gaussian target equal the numpy formula, for the
    default exponents and for other alpha / beta."""
    g = torch.Generator().manual_seed(0)
    y = gaussian_target()
    x = torch.randn(y.shape, generator=g) * 3
    for a, b in [(2.0, 4.0), (1.0, 2.0), (3.0, 1.0)]:
        got = penalty_reduced_focal_loss(x, y, alpha=a, beta=b)
        assert got.item() == pytest.approx(focal_np(x.numpy(), y.numpy(), a, b), rel=1e-5)


def test_focal_near_perfect_prediction_is_zero():
    """Logits +20 at the centres and -20 everywhere else (p ~ 0 is the perfect
    prediction even on the Gaussian's non-peak cells) give a loss < 1e-3."""
    y = gaussian_target()
    x = torch.where(y == 1, torch.tensor(20.0), torch.tensor(-20.0))
    got = penalty_reduced_focal_loss(x, y)
    assert 0 <= got.item() < 1e-3
    assert got.item() == pytest.approx(focal_np(x.numpy(), y.numpy()), rel=1e-4, abs=1e-12)


def test_focal_grows_as_predictions_worsen():
    """Moving every logit from the right sign towards the wrong one strictly
    increases the loss."""
    y = gaussian_target()
    sign = torch.where(y == 1, torch.tensor(1.0), torch.tensor(-1.0))
    losses = [penalty_reduced_focal_loss(sign * m, y).item() for m in (12, 6, 3, 1, 0, -1, -3, -6)]
    assert all(a < b for a, b in zip(losses, losses[1:]))
    assert losses[4] == pytest.approx(focal_np(np.zeros(y.shape), y.numpy()), rel=1e-5)


def test_focal_penalty_reduction_near_centres():
    """The same wrong score costs less on a cell close to a centre (y near 1) than
    far from it: the (1 - y)^beta factor, computed by hand here."""
    y = torch.zeros(1, 1, 1, 3)
    y[0, 0, 0, 0] = 1.0
    y[0, 0, 0, 1] = 0.5
    x = torch.tensor([[[[5.0, 1.0, 1.0]]]])
    p = 1 / (1 + np.exp(-1.0))
    p0 = 1 / (1 + np.exp(-5.0))
    expected = -((1 - p0) ** 2 * np.log(p0) + 0.5**4 * p**2 * np.log(1 - p) + p**2 * np.log(1 - p))
    assert penalty_reduced_focal_loss(x, y).item() == pytest.approx(expected, rel=1e-6)


def test_focal_normalised_by_number_of_positives():
    """The loss is divided by the number of centres (3 here): the summed formula / 3,
    and a batch holding the same image twice has the same loss as the image alone."""
    g = torch.Generator().manual_seed(1)
    y = gaussian_target(shape=(1, 2, 10, 10), centres=((0, 0, 2, 2), (0, 1, 7, 5), (0, 1, 3, 8)))
    x = torch.randn(y.shape, generator=g) * 2
    single = penalty_reduced_focal_loss(x, y)
    double = penalty_reduced_focal_loss(torch.cat([x, x]), torch.cat([y, y]))
    assert double.item() == pytest.approx(single.item(), rel=1e-6)
    assert (y == 1).sum().item() == 3
    assert single.item() == pytest.approx(focal_np(x.numpy(), y.numpy(), normalise=False) / 3, rel=1e-5)


def test_focal_without_positives_is_finite():
    """No centre anywhere (y < 1): finite, equal to the negative term alone (N = 1)."""
    g = torch.Generator().manual_seed(2)
    y = gaussian_target() * 0.9
    assert (y == 1).sum() == 0
    x = torch.randn(y.shape, generator=g) * 3
    got = penalty_reduced_focal_loss(x, y)
    assert torch.isfinite(got)
    assert got.item() == pytest.approx(focal_np(x.numpy(), y.numpy()), rel=1e-5)
    assert penalty_reduced_focal_loss(x, torch.zeros_like(y)).item() == pytest.approx(
        focal_np(x.numpy(), np.zeros(y.shape)), rel=1e-5
    )


def test_focal_fp16_logits_give_finite_fp32_loss():
    """FP16 logits large enough that sigmoid saturates to exactly 1 in FP16
    (|x| >= 12, where 1 - 1e-4 rounds to 1 in FP16) still give a finite FP32 loss equal to the formula."""
    y = gaussian_target()
    g = torch.Generator().manual_seed(3)
    x = (torch.rand(y.shape, generator=g) * 8 + 12) * torch.where(torch.rand(y.shape, generator=g) < 0.5, 1.0, -1.0)
    x16 = x.half()
    assert (torch.sigmoid(x16) == 1).any()  # the FP16 clamp problem is really present
    got = penalty_reduced_focal_loss(x16, y)
    assert got.dtype == torch.float32
    assert torch.isfinite(got)
    assert got.item() == pytest.approx(focal_np(x16.float().numpy(), y.numpy()), rel=1e-4)
    # computed in FP32 internally: same value as for the same logits given in FP32
    assert got.item() == pytest.approx(penalty_reduced_focal_loss(x16.float(), y).item(), rel=1e-6)


# --------------------------------------------------------------------------- #
# gather_at / masked_l1_loss
# --------------------------------------------------------------------------- #
def test_gather_at_hand_case():
    """Values of channel d at flat index y*W+x, returned as [B, K, D]."""
    fmap = torch.arange(2 * 2 * 3 * 4, dtype=torch.float32).view(2, 2, 3, 4)
    index = torch.tensor([[0, 7], [11, 5]])
    got = gather_at(fmap, index)
    # fmap[b, d, y, x] = b*24 + d*12 + y*4 + x
    assert got.tolist() == [[[0, 12], [7, 19]], [[24 + 11, 36 + 11], [24 + 5, 36 + 5]]]


def test_masked_l1_hand_case():
    """Two objects, one padding slot: (|1.5-1| + |-2-0| + |4-6| + |0.25-0.25|) / (2 * 2)."""
    pred = torch.zeros(1, 2, 3, 4)
    pred[0, :, 1, 2] = torch.tensor([1.5, -2.0])  # index 6
    pred[0, :, 2, 3] = torch.tensor([4.0, 0.25])  # index 11
    index = torch.tensor([[6, 11, 0]])
    target = torch.tensor([[[1.0, 0.0], [6.0, 0.25], [100.0, -100.0]]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    got = masked_l1_loss(pred, index, target, mask)
    assert got.item() == pytest.approx((0.5 + 2.0 + 2.0 + 0.0) / 4, rel=1e-7)
    assert masked_l1_loss(pred.half(), index, target, mask).dtype == torch.float32


def test_masked_l1_zero_when_prediction_matches():
    """Targets written into the map at their index cells give exactly 0."""
    g = torch.Generator().manual_seed(4)
    B, D, H, W, K = 2, 2, 5, 6, 4
    index = torch.tensor([[3, 17, 29, 0], [8, 9, 0, 0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    target = torch.rand(B, K, D, generator=g) * 10
    pred = torch.rand(B, D, H, W, generator=g)
    for b in range(B):
        for k in range(K):
            if mask[b, k]:
                y, x = divmod(int(index[b, k]), W)
                pred[b, :, y, x] = target[b, k]
    assert masked_l1_loss(pred, index, target, mask).item() == 0.0


def test_masked_l1_ignores_padding_and_normalises_per_object():
    """Padding slots (mask 0) do not change the loss whatever their index / target;
    the mean is over real objects * D across the whole batch."""
    g = torch.Generator().manual_seed(5)
    B, D, H, W, K = 2, 2, 4, 4, 3
    pred = torch.randn(B, D, H, W, generator=g)
    index = torch.tensor([[1, 5, 0], [10, 0, 0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    target = torch.randn(B, K, D, generator=g)
    p = pred.numpy().reshape(B, D, H * W)
    t = target.numpy()
    expected = sum(abs(p[b, d, index[b, k]] - t[b, k, d]) for b, k in [(0, 0), (0, 1), (1, 0)] for d in range(D))
    expected /= 3 * D
    got = masked_l1_loss(pred, index, target, mask)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    target2, index2 = target.clone(), index.clone()
    target2[0, 2] = 1e6
    target2[1, 1:] = -1e6
    index2[0, 2], index2[1, 2] = 15, 7
    assert masked_l1_loss(pred, index2, target2, mask).item() == got.item()


def test_masked_l1_no_objects_is_zero():
    """An all-padding batch gives exactly 0 (no division by zero)."""
    pred = torch.randn(2, 2, 4, 4)
    got = masked_l1_loss(pred, torch.zeros(2, 3, dtype=torch.long), torch.randn(2, 3, 2), torch.zeros(2, 3))
    assert torch.isfinite(got) and got.item() == 0.0
