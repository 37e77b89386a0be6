"""Constant-magnitude loss weighting (docs/distillation.md): values, gradients, guards, logging, config.

Expected numbers are derived here independently: target magnitudes from the
config, gradients from autograd on each unscaled term, running means from a
plain-Python moving average.
"""

import math
import os

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

import centerx
from centerx.modeling.loss_balance import LossBalancer, build_loss_balancer

from project_scripts import load_experiments

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(REPO, "configs", "shapes", "centernet_r18_demo.yaml")
TTFNET_DEMO = os.path.join(REPO, "configs", "shapes", "ttfnet_r18_demo.yaml")
SMALL = [
    "MODEL.CENTERNET.UPSAMPLE_CHANNELS",
    "[32, 16, 16]",
    "MODEL.CENTERNET.HEAD_CHANNELS",
    "16",
    "MODEL.TTFNET.UPSAMPLE_CHANNELS",
    "[32, 16, 16]",
]


pytestmark = pytest.mark.usefixtures("one_thread")


def two_terms(module, x):
    """Two differently scaled losses of a small module's output."""
    y = module(x)
    return {"loss_a": (y**2).mean() * 100.0, "loss_b": (y - 1.0).abs().mean() * 0.01}


def grads(module, loss):
    return torch.autograd.grad(loss, list(module.parameters()), retain_graph=True, allow_unused=True)


def test_weighted_values_equal_target_magnitudes_and_unlisted_terms_pass():
    torch.manual_seed(0)
    m = torch.nn.Linear(3, 2)
    losses = two_terms(m, torch.randn(5, 3))
    out = LossBalancer({"loss_a": 1.5, "loss_missing": 7.0})(losses)
    assert set(out) == {"loss_a", "loss_b"}
    assert out["loss_a"].item() == pytest.approx(1.5, rel=1e-6)
    assert out["loss_b"] is losses["loss_b"]


def test_gradient_is_magnitude_times_gradient_over_value():
    """d(balanced total) = c_a grad(L_a) / L_a + c_b grad(L_b) / L_b, each grad(L) from autograd."""
    torch.manual_seed(0)
    m = torch.nn.Linear(3, 2)
    losses = two_terms(m, torch.randn(5, 3))
    ga, gb = grads(m, losses["loss_a"]), grads(m, losses["loss_b"])
    la, lb = losses["loss_a"].item(), losses["loss_b"].item()
    out = LossBalancer({"loss_a": 1.5, "loss_b": 0.3})(losses)
    got = grads(m, out["loss_a"] + out["loss_b"])
    for g, a, b in zip(got, ga, gb):
        torch.testing.assert_close(g, 1.5 * a / la + 0.3 * b / lb, rtol=1e-5, atol=1e-8)


def test_zero_and_tiny_terms_use_the_divisor_floor():
    """A zero term stays 0 with a finite (zero) gradient; a term below the floor
    is divided by the floor, c * L / min_normalizer."""
    w = torch.nn.Parameter(torch.tensor([2.0]))
    balancer = LossBalancer({"loss_zero": 1.0, "loss_tiny": 2.0}, min_normalizer=1e-6)
    out = balancer({"loss_zero": (w * 0.0).sum(), "loss_tiny": (w * 5e-10).sum()})
    assert out["loss_zero"].item() == 0.0
    assert out["loss_tiny"].item() == pytest.approx(2.0 * 1e-9 / 1e-6, rel=1e-5)
    (g,) = torch.autograd.grad(out["loss_zero"] + out["loss_tiny"], [w])
    assert torch.isfinite(g).all()
    assert g.item() == pytest.approx(2.0 * 5e-10 / 1e-6, rel=1e-5)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_term_is_left_out_and_the_step_stays_finite(bad):
    """The bad term becomes a constant 0; the gradient is exactly the good term's
    balanced gradient and an SGD step leaves the parameters finite."""
    torch.manual_seed(0)
    m = torch.nn.Linear(3, 2)
    x = torch.randn(5, 3)
    losses = two_terms(m, x)
    losses["loss_b"] = losses["loss_b"] * bad
    ga = grads(m, losses["loss_a"])
    la = losses["loss_a"].item()
    balancer = LossBalancer({"loss_a": 1.5, "loss_b": 0.3})
    out = balancer(losses)
    assert out["loss_b"].item() == 0.0 and not out["loss_b"].requires_grad
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    opt.zero_grad()
    sum(out.values()).backward()
    for p, a in zip(m.parameters(), ga):
        torch.testing.assert_close(p.grad, 1.5 * a / la)
    opt.step()
    assert all(torch.isfinite(p).all() for p in m.parameters())
    assert balancer.num_skipped == 1


def test_every_term_non_finite_raises():
    w = torch.nn.Parameter(torch.tensor([1.0]))
    with pytest.raises(FloatingPointError, match="diverged"):
        LossBalancer({"loss_a": 1.0})({"loss_a": (w * float("nan")).sum()})


def test_running_mean_normalizer_follows_a_moving_average():
    """value_t = c * L_t / m_t with m_1 = L_1, m_t = 0.9 m_{t-1} + 0.1 L_t."""
    balancer = LossBalancer({"loss_a": 2.0}, normalizer="running_mean", momentum=0.9)
    mean = None
    for value in (4.0, 1.0, 9.0, 0.5):
        mean = value if mean is None else 0.9 * mean + 0.1 * value
        out = balancer({"loss_a": torch.tensor(value, requires_grad=True)})
        assert out["loss_a"].item() == pytest.approx(2.0 * value / mean, rel=1e-6)


def test_unscaled_values_are_logged_in_the_event_storage():
    torch.manual_seed(0)
    m = torch.nn.Linear(3, 2)
    losses = two_terms(m, torch.randn(5, 3))
    with EventStorage(0) as storage:
        LossBalancer({"loss_a": 1.5, "loss_b": 0.3})(losses)
        logged = {k: v.latest() for k, v in storage.histories().items()}
    assert logged == pytest.approx(
        {"loss_a_unscaled": losses["loss_a"].item(), "loss_b_unscaled": losses["loss_b"].item()}
    )


def test_config_builds_the_balancer_and_rejects_bad_entries(tmp_path):
    cfg = centerx.get_centerx_cfg()
    assert build_loss_balancer(cfg) is None
    yaml = tmp_path / "lb.yaml"
    yaml.write_text(
        "MODEL:\n  LOSS_BALANCE:\n    ENABLED: True\n    NORMALIZER: running_mean\n"
        "    MAGNITUDES: [[loss_heatmap, 2.0], [loss_kd_t0_heatmap, 0.5]]\n"
    )
    cfg.merge_from_file(str(yaml))
    b = build_loss_balancer(cfg)
    assert b.magnitudes == {"loss_heatmap": 2.0, "loss_kd_t0_heatmap": 0.5}
    assert b.normalizer == "running_mean"
    for key, value, match in [
        ("MODEL.LOSS_BALANCE.MAGNITUDES", "[('loss_a', 1.0), ('loss_a', 2.0)]", "twice"),
        ("MODEL.LOSS_BALANCE.MAGNITUDES", "[('loss_a', -1.0)]", "> 0"),
        ("MODEL.LOSS_BALANCE.MAGNITUDES", "[('loss_a',)]", "pair"),
        ("MODEL.LOSS_BALANCE.NORMALIZER", "'median'", "not one of"),
        ("MODEL.LOSS_BALANCE.MIN_NORMALIZER", "0.0", "> 0"),
    ]:
        bad = cfg.clone()
        bad.merge_from_list([key, value])
        with pytest.raises(ValueError, match=match):
            build_loss_balancer(bad)


@pytest.mark.parametrize(
    "config,expected_magnitudes",
    [
        (DEMO, {"loss_heatmap": 1.5, "loss_wh": 0.3, "loss_offset": 0.1}),
        (TTFNET_DEMO, {"loss_heatmap": 1.5, "loss_box": 1.5}),
    ],
)
def test_meta_arch_losses_are_rescaled_to_the_configured_magnitudes(config, expected_magnitudes):
    """With the default magnitudes each term of CenterNet (the original's 1.5 / 0.3 / 0.1)
    and TTFNet takes its configured value, and the logged unscaled values are the plain
    model's losses for the same weights."""
    cfg = centerx.add_centerx_config(get_cfg())
    cfg.merge_from_file(config)
    cfg.merge_from_list(SMALL)
    plain = build_model(cfg).train()
    cfg.merge_from_list(["MODEL.LOSS_BALANCE.ENABLED", "True"])
    balanced = build_model(cfg).train()
    balanced.load_state_dict(plain.state_dict())
    g = torch.Generator().manual_seed(0)
    batch = [
        {
            "image": torch.randint(0, 256, (3, 64, 64), generator=g).float(),
            "instances": Instances(
                (64, 64), gt_boxes=Boxes(torch.tensor([[4.0, 6.0, 40.0, 30.0]])), gt_classes=torch.tensor([2])
            ),
        }
        for _ in range(2)
    ]
    expected = {k: v.item() for k, v in plain(batch).items()}
    with EventStorage(0) as storage:
        out = balanced(batch)
        logged = {k: v.latest() for k, v in storage.histories().items()}
    assert {k: v.item() for k, v in out.items()} == pytest.approx(expected_magnitudes, rel=1e-5)
    assert logged == pytest.approx({f"{k}_unscaled": v for k, v in expected.items()}, rel=1e-5)
    assert all(math.isfinite(v) for v in expected.values())


def test_balanced_distillation_overrides_give_each_teacher_term_its_label_terms_magnitude():
    """The experiments' balanced Distiller recipe: teacher t<i>'s heatmap / box terms at
    1.5 (as loss_heatmap / loss_box), its size and offset at 0.3 / 0.1, for each teacher."""
    balanced_distill_overrides = load_experiments().balanced_distill_overrides

    cfg = centerx.get_centerx_cfg()
    cfg.merge_from_list(balanced_distill_overrides(2))
    b = build_loss_balancer(cfg)
    expected = {"loss_heatmap": 1.5, "loss_wh": 0.3, "loss_offset": 0.1, "loss_box": 1.5}
    for t in ("t0", "t1"):
        expected.update(
            {f"loss_kd_{t}_heatmap": 1.5, f"loss_kd_{t}_wh": 0.3, f"loss_kd_{t}_offset": 0.1, f"loss_kd_{t}_box": 1.5}
        )
    assert b.magnitudes == expected
    out = b(
        {
            "loss_kd_t1_box": torch.tensor(5.7, requires_grad=True),
            "loss_kd_t0_heatmap": torch.tensor(0.002, requires_grad=True),
        }
    )
    assert {k: v.item() for k, v in out.items()} == pytest.approx({"loss_kd_t1_box": 1.5, "loss_kd_t0_heatmap": 1.5})
