"""Adversarial feature distillation (MODEL.DISTILL.ADVERSARIAL): GAN losses
against closed forms, the two players on a toy problem, gradient routing and
checkpoints through centerX's Trainer, exact resume, config errors and the
plain student loading an adversarial run's checkpoint."""

import os
import shutil

import numpy as np
import pytest
import torch
import torch.distributed as dist
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.utils import comm
from torch import nn

import centerx
from centerx.engine import Trainer, build_discriminator_optimizer
from centerx.engine.adversarial import discriminator_step
from centerx.modeling.adversarial import FeatureAdversaries, PatchDiscriminator
from centerx.modeling.losses.adversarial import discriminator_accuracy, discriminator_loss, generator_loss

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMOS = {
    "CenterNet": os.path.join(REPO, "configs", "shapes", "centernet_r18_demo.yaml"),
    "TTFNet": os.path.join(REPO, "configs", "shapes", "ttfnet_r18_demo.yaml"),
}
KEY = {"CenterNet": "MODEL.CENTERNET", "TTFNet": "MODEL.TTFNET"}
HEADS = {
    "CenterNet": ["MODEL.CENTERNET.HEAD_CHANNELS", "16"],
    "TTFNet": ["MODEL.TTFNET.HEATMAP_HEAD_CHANNELS", "16", "MODEL.TTFNET.BOX_HEAD_CHANNELS", "16"],
}

pytestmark = pytest.mark.usefixtures("one_thread")


def softplus(x):
    return np.log1p(np.exp(x))


def toy_adversaries(**kwargs):
    """One discriminator on 4-channel teacher maps, a 3 -> 4 channel adapter."""
    return FeatureAdversaries(
        ("upsampler",),
        ("t0",),
        {"upsampler": ShapeSpec(channels=3, stride=4)},
        [{"upsampler": ShapeSpec(channels=4, stride=4)}],
        **kwargs,
    )


def adversarial_cfg(base_lr=1e-2, betas=(0.5, 0.999)):
    cfg = centerx.add_centerx_config(get_cfg())
    cfg.MODEL.DISTILL.ADVERSARIAL.BASE_LR = base_lr
    cfg.MODEL.DISTILL.ADVERSARIAL.BETAS = betas
    return cfg


def clone(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_close(a, b, tol=0.0):
    assert a.keys() == b.keys()
    worst = max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].numel())
    assert worst <= tol, worst


# --------------------------------------------------------------------------- #
# losses and discriminator
# --------------------------------------------------------------------------- #
def test_losses_follow_the_closed_forms():
    """L_D = mean softplus(-real) + mean softplus(fake), L_G = mean softplus(-fake)
    (binary cross-entropy with logits), recomputed in float64 numpy; the accuracy
    of a hand-built case: 3 of 4 real cells > 0, 1 of 2 fake cells < 0 -> (0.75 + 0.5) / 2."""
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(2, 1, 3, 4, generator=g) * 3, torch.randn(2, 1, 3, 4, generator=g) * 3
    r, f = real.numpy().astype(np.float64), fake.numpy().astype(np.float64)
    assert discriminator_loss(real, fake).item() == pytest.approx(softplus(-r).mean() + softplus(f).mean(), rel=1e-5)
    assert generator_loss(fake).item() == pytest.approx(softplus(-f).mean(), rel=1e-5)
    assert discriminator_loss(real.half(), fake.half()).dtype == torch.float32
    acc = discriminator_accuracy(torch.tensor([1.0, -1.0, 2.0, 3.0]), torch.tensor([-1.0, 1.0]))
    assert acc.item() == pytest.approx(0.625)


def test_patch_discriminator_output_grid():
    """Two stride-2 convs (padding 1): one logit per 4x4 cells, rounding up."""
    d = PatchDiscriminator(5, channels=8)
    assert d(torch.zeros(2, 5, 16, 16)).shape == (2, 1, 4, 4)
    assert d(torch.zeros(1, 5, 7, 9)).shape == (1, 1, 2, 3)


def test_discriminator_and_student_losses_move_in_opposite_directions():
    """A fixed "teacher" feature distribution vs a learnable "student" map.
    Discriminator steps alone: L_D falls, L_G rises. Student steps alone (through
    the adapter, the discriminator frozen and getting no gradient): L_G falls,
    L_D rises."""
    torch.manual_seed(0)
    adv = toy_adversaries(channels=16)
    g = torch.Generator().manual_seed(1)
    real = torch.randn(4, 4, 8, 8, generator=g) * 0.5 + 1.0
    student = nn.Parameter(torch.randn(4, 3, 8, 8, generator=g) * 0.5 - 1.0)

    def losses():
        with torch.no_grad():
            l_g = adv({"upsampler": student}, [{"upsampler": real}])["loss_adv_t0_upsampler"]
            l_d = adv.discriminator_losses()["t0_upsampler"][0]
        return l_d.item(), l_g.item()

    d_optimizer = build_discriminator_optimizer(adversarial_cfg(1e-2), adv)
    start = losses()
    for _ in range(15):
        adv({"upsampler": student}, [{"upsampler": real}])
        discriminator_step(adv, d_optimizer)
    after_d = losses()
    assert after_d[0] < start[0] - 0.1 and after_d[1] > start[1] + 0.1, (start, after_d)

    s_optimizer = torch.optim.Adam([student, *adv.adapters.parameters()], lr=0.05)
    frozen = {k: v.clone() for k, v in adv.discriminators.state_dict().items()}
    for _ in range(15):
        s_optimizer.zero_grad()
        adv({"upsampler": student}, [{"upsampler": real}])["loss_adv_t0_upsampler"].backward()
        assert all(p.grad is None for p in adv.discriminators.parameters())
        s_optimizer.step()
    after_s = losses()
    assert after_s[1] < after_d[1] - 0.1 and after_s[0] > after_d[0] + 0.1, (after_d, after_s)
    assert all(torch.equal(v, adv.discriminators.state_dict()[k]) for k, v in frozen.items())


def test_each_teacher_is_real_for_its_own_discriminators():
    """Two teachers (4 and 6 channels) and two levels: one adapter and one
    discriminator per (teacher, level); every term equals the loss formula
    applied by hand to that pair's modules and that teacher's map."""
    shapes = {"res5": ShapeSpec(channels=8, stride=32), "upsampler": ShapeSpec(channels=3, stride=4)}
    teachers = [dict(shapes, upsampler=ShapeSpec(channels=c, stride=4)) for c in (4, 6)]
    adv = FeatureAdversaries(("res5", "upsampler"), ("t0", "t1"), shapes, teachers, channels=8, weight=2.0)
    assert isinstance(adv.adapters["t1_res5"], nn.Identity) and adv.adapters["t1_upsampler"].out_channels == 6
    g = torch.Generator().manual_seed(2)
    student = {"res5": torch.randn(2, 8, 2, 2, generator=g), "upsampler": torch.randn(2, 3, 16, 16, generator=g)}
    t_maps = [
        {"res5": torch.randn(2, 8, 2, 2, generator=g), "upsampler": torch.randn(2, c, 16, 16, generator=g)}
        for c in (4, 6)
    ]
    with torch.no_grad():
        g_losses = adv(student, t_maps)
        d_losses = adv.discriminator_losses()
        assert sorted(g_losses) == [
            "loss_adv_t0_res5",
            "loss_adv_t0_upsampler",
            "loss_adv_t1_res5",
            "loss_adv_t1_upsampler",
        ]
        for i, name in enumerate(("t0", "t1")):
            for level in ("res5", "upsampler"):
                d, a = adv.discriminators[f"{name}_{level}"], adv.adapters[f"{name}_{level}"]
                real = d(t_maps[i][level]).numpy().astype(np.float64)
                fake = d(a(student[level])).numpy().astype(np.float64)
                assert g_losses[f"loss_adv_{name}_{level}"].item() == pytest.approx(
                    2.0 * softplus(-fake).mean(), rel=1e-5
                )
                assert d_losses[f"{name}_{level}"][0].item() == pytest.approx(
                    softplus(-real).mean() + softplus(fake).mean(), rel=1e-5
                )


def test_discriminator_step_runs_in_fp32_after_an_autocast_forward():
    """Under FP16 autocast (AMPTrainer's forward) the student term is an FP32
    scalar while the discriminator runs in FP16; the step afterwards feeds the
    discriminator FP32 copies of the cached maps."""
    adv = toy_adversaries(channels=8)
    seen = []
    adv.discriminators["t0_upsampler"].register_forward_hook(lambda m, i, o: seen.append((i[0].dtype, o.dtype)))
    student = torch.randn(2, 3, 8, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.float16):
        loss = adv({"upsampler": student}, [{"upsampler": torch.randn(2, 4, 8, 8)}])["loss_adv_t0_upsampler"]
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert seen == [(torch.float16, torch.float16)]
    loss.backward()
    assert student.grad is not None and torch.isfinite(student.grad).all()
    d_loss, accuracy = discriminator_step(adv, build_discriminator_optimizer(adversarial_cfg(), adv))
    assert seen[1:] == [(torch.float32, torch.float32)] * 2
    assert np.isfinite(d_loss) and 0.0 <= accuracy <= 1.0
    with pytest.raises(RuntimeError, match="No feature maps cached"):
        discriminator_step(adv, build_discriminator_optimizer(adversarial_cfg(), adv))


def test_bad_settings_and_foreign_checkpoints_fail_clearly():
    with pytest.raises(ValueError, match="BETAS"):
        build_discriminator_optimizer(adversarial_cfg(betas=(0.5,)), toy_adversaries())
    with pytest.raises(ValueError, match="BASE_LR"):
        build_discriminator_optimizer(adversarial_cfg(base_lr=0.0), toy_adversaries())
    with pytest.raises(ValueError, match="CHANNELS"):
        toy_adversaries(channels=0)
    shapes = {"res5": ShapeSpec(channels=8, stride=32), "upsampler": ShapeSpec(channels=4, stride=4)}
    with pytest.raises(ValueError, match="stride 16, the student's 32"):
        FeatureAdversaries(("res5",), ("t0",), shapes, [dict(shapes, res5=ShapeSpec(channels=8, stride=16))])
    with pytest.raises(ValueError, match="FEATURES is empty"):
        FeatureAdversaries((), ("t0",), shapes, [shapes])
    two_levels = FeatureAdversaries(("res5", "upsampler"), ("t0",), shapes, [shapes])
    with pytest.raises(ValueError, match="FEATURES or MODEL.DISTILL.TEACHERS changed"):
        FeatureAdversaries(("upsampler",), ("t0",), shapes, [shapes]).load_state_dict(two_levels.state_dict())


def toy_batch(rank):
    g = torch.Generator().manual_seed(10 + rank)
    return torch.randn(2, 3, 8, 8, generator=g) - rank, torch.randn(2, 4, 8, 8, generator=g) + 1.0


def test_discriminator_gradients_and_logs_are_averaged_over_processes(monkeypatch):
    """A world of two processes, simulated in this one: the all-reduce adds the
    other process's contribution (the gradients, loss and accuracy of its own
    batch, computed here with autograd). The step must equal one Adam step on the
    mean of the two batches' gradients, and log the mean loss and accuracy."""

    def reference(rank):
        torch.manual_seed(0)
        adv = toy_adversaries(channels=8)
        student, real = toy_batch(rank)
        adv({"upsampler": student}, [{"upsampler": real}])
        with adv.trainable_discriminators():
            loss, accuracy = adv.discriminator_losses()["t0_upsampler"]
            grads = torch.autograd.grad(loss, list(adv.discriminators.parameters()))
        return adv, grads, loss.detach(), accuracy

    adv, grads0, loss0, acc0 = reference(0)
    _, grads1, loss1, acc1 = reference(1)
    other = torch.cat([g.reshape(-1) for g in grads1] + [loss1.view(1), acc1.view(1)])
    calls = []

    def all_reduce(tensor):
        calls.append(tensor.numel())
        tensor += other

    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    expected = toy_adversaries(channels=8)
    expected.load_state_dict(adv.state_dict())
    for p, g0, g1 in zip(expected.discriminators.parameters(), grads0, grads1):
        p.grad = (g0 + g1) / 2
    build_discriminator_optimizer(adversarial_cfg(), expected).step()

    student, real = toy_batch(0)
    adv({"upsampler": student}, [{"upsampler": real}])
    logged = discriminator_step(adv, build_discriminator_optimizer(adversarial_cfg(), adv))
    assert calls == [other.numel()]
    assert_close(adv.discriminators.state_dict(), expected.discriminators.state_dict(), tol=1e-7)
    assert logged == pytest.approx([(loss0 + loss1).item() / 2, (acc0 + acc1).item() / 2], rel=1e-6)


# --------------------------------------------------------------------------- #
# through the Distiller and the Trainer
# --------------------------------------------------------------------------- #
def plain_cfg(arch, *opts):
    """The tiny 64 px student / teacher config of ``arch`` (16-channel stride-4 map)."""
    cfg = centerx.add_centerx_config(get_cfg())
    cfg.merge_from_file(DEMOS[arch])
    cfg.merge_from_list(
        [
            f"{KEY[arch]}.UPSAMPLE_CHANNELS",
            "[32, 16, 16]",
            *HEADS[arch],
            "INPUT.TRAIN_SIZE",
            "64",
            "INPUT.MIN_SIZE_TEST",
            "64",
            "INPUT.MAX_SIZE_TEST",
            "64",
            *opts,
        ]
    )
    return cfg


def save_teacher(tmp_path, arch):
    """A random teacher whose stride-4 map has 24 channels (so the student's 16
    need an adapter); returns its (config file, weights file, classes) entry."""
    cfg = plain_cfg(arch, f"{KEY[arch]}.UPSAMPLE_CHANNELS", "[32, 16, 24]")
    torch.manual_seed(7)
    DetectionCheckpointer(build_model(cfg), save_dir=str(tmp_path)).save(f"teacher_{arch}")
    (tmp_path / f"teacher_{arch}.yaml").write_text(cfg.dump())
    return str(tmp_path / f"teacher_{arch}.yaml"), str(tmp_path / f"teacher_{arch}.pth"), (0, 1, 2, 3)


def run_cfg(arch, dataset, output_dir, teacher, *opts):
    cfg = plain_cfg(
        arch,
        "MODEL.META_ARCHITECTURE",
        "Distiller",
        "MODEL.DISTILL.STUDENT_META_ARCHITECTURE",
        arch,
        "MODEL.DISTILL.ADVERSARIAL.ENABLED",
        "True",
        "MODEL.DISTILL.ADVERSARIAL.BASE_LR",
        "0.001",
        "DATASETS.TRAIN",
        f"('{dataset}',)",
        "DATASETS.TEST",
        "()",
        "SOLVER.IMS_PER_BATCH",
        "2",
        "SOLVER.MAX_ITER",
        "1",
        "SOLVER.WARMUP_ITERS",
        "0",
        "SOLVER.CHECKPOINT_PERIOD",
        "1000",
        "DATALOADER.NUM_WORKERS",
        "0",
        "TEST.VIS_IMAGES",
        "0",
        "OUTPUT_DIR",
        str(output_dir),
        "SEED",
        "3",
        *opts,
    )
    cfg.MODEL.DISTILL.TEACHERS = [teacher]
    return cfg


def assert_loads_into_plain_student(arch, checkpoint_file, student):
    """The checkpoint's "model" is exactly the plain student's keys, loads with
    strict matching and computes what the trained student does (to float
    rounding: the trainer keeps the student's weights channels-last)."""
    checkpoint = torch.load(checkpoint_file, map_location="cpu", weights_only=False)
    plain = build_model(plain_cfg(arch)).eval()
    assert set(checkpoint["model"]) == set(plain.state_dict())
    plain.load_state_dict(checkpoint["model"], strict=True)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got, expected = plain.predict(x), student.eval().predict(x)
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-4, atol=1e-5)
    return checkpoint


def test_only_the_intended_parameters_receive_gradients(tiny_shapes, tmp_path, monkeypatch):
    """One training step of a CenterNet-R18 student with adversarial terms at
    res4 (same channels: identity adapter) and upsampler (16 -> 24: 1x1 adapter).
    Main optimizer: student + adapters, no discriminator. Main backward: the
    teacher and the discriminators get no gradient, the adapter and the student
    do. Main optimizer step: discriminators unchanged; the discriminator step
    changes them. Teacher bit-identical. The checkpoint's "model" loads into
    the plain student config; "adversarial" holds adapters and discriminators."""
    name, _ = tiny_shapes
    teacher = save_teacher(tmp_path, "CenterNet")
    cfg = run_cfg(
        "CenterNet", name, tmp_path / "out", teacher, "MODEL.DISTILL.ADVERSARIAL.FEATURES", "('res4', 'upsampler')"
    )
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    model = trainer.unwrapped_model
    adv = model.adversarial
    assert isinstance(adv.adapters["t0_upsampler"], nn.Conv2d) and isinstance(adv.adapters["t0_res4"], nn.Identity)
    assert adv.adapters["t0_upsampler"].weight.shape == (24, 16, 1, 1)

    ids = lambda params: {id(p) for p in params}  # noqa: E731
    main = ids(p for group in trainer.optimizer.param_groups for p in group["params"])
    assert main == ids(model.student.parameters()) | ids(adv.adapters.parameters())
    assert ids(p for group in trainer.discriminator_step.optimizer.param_groups for p in group["params"]) == ids(
        adv.discriminators.parameters()
    )

    seen = {}
    main_step = trainer.optimizer.step

    def step_and_snapshot(*args, **kwargs):
        """The main optimizer's step, with the gradients of the main backward
        before it and the discriminators after it."""
        seen["teacher"] = [p.grad for p in model.teachers.parameters()]
        seen["discriminator"] = [p.grad for p in adv.discriminators.parameters()]
        seen["adapter"] = [p.grad.clone() for p in adv.adapters.parameters()]
        seen["student"] = {
            k: p.grad is not None and bool(p.grad.abs().sum() > 0) for k, p in model.student.named_parameters()
        }
        out = main_step(*args, **kwargs)
        seen["after_main_step"] = clone(adv.discriminators)
        return out

    monkeypatch.setattr(trainer.optimizer, "step", step_and_snapshot)
    d_before, t_before, s_before = clone(adv.discriminators), clone(model.teachers), clone(model.student)
    trainer.train()

    assert all(g is None for g in seen["teacher"]) and all(g is None for g in seen["discriminator"])
    assert seen["adapter"] and all(g.abs().sum() > 0 for g in seen["adapter"])
    assert all(seen["student"].values()), [k for k, v in seen["student"].items() if not v]
    assert_close(seen["after_main_step"], d_before)
    d_after = clone(adv.discriminators)
    assert all(not torch.equal(v, d_after[k]) for k, v in d_before.items())
    assert all(p.grad is None for p in adv.discriminators.parameters())
    assert_close(clone(model.teachers), t_before)
    assert any(not torch.equal(v, model.student.state_dict()[k]) for k, v in s_before.items())

    history = trainer.storage.histories()
    assert {
        "loss_adv_t0_res4",
        "loss_adv_t0_upsampler",
        "loss_kd_t0_heatmap",
        "loss_discriminator",
        "discriminator_accuracy",
    } <= set(history)
    checkpoint = assert_loads_into_plain_student("CenterNet", tmp_path / "out" / "model_final.pth", model.student)
    assert_close(checkpoint["adversarial"], clone(adv))
    assert {k.split(".")[0] for k in checkpoint["adversarial"]} == {"adapters", "discriminators"}
    assert "adversarial_optimizer" in checkpoint


def test_resume_restores_discriminators_adapters_and_their_optimizer(tiny_shapes, tmp_path):
    """3 iterations straight (checkpoint after 2) vs a fresh trainer resumed from
    that checkpoint: right after loading, discriminators, adapters and the
    discriminators' Adam state equal the saved ones; after the third iteration
    student, adapters and discriminators equal the straight run's."""
    name, _ = tiny_shapes
    teacher = save_teacher(tmp_path, "CenterNet")
    opts = ["SOLVER.MAX_ITER", "3", "SOLVER.CHECKPOINT_PERIOD", "2"]
    straight = Trainer(run_cfg("CenterNet", name, tmp_path / "straight", teacher, *opts))
    straight.resume_or_load(resume=False)
    straight.train()

    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    shutil.copy(tmp_path / "straight" / "model_0000001.pth", resumed_dir)
    (resumed_dir / "last_checkpoint").write_text("model_0000001.pth")
    saved = torch.load(resumed_dir / "model_0000001.pth", map_location="cpu", weights_only=False)
    torch.manual_seed(99)
    resumed = Trainer(run_cfg("CenterNet", name, resumed_dir, teacher, *opts))
    fresh = clone(resumed.discriminator_step.adversaries)
    assert any(not torch.equal(v, saved["adversarial"][k]) for k, v in fresh.items())
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 2
    assert_close(clone(resumed.discriminator_step.adversaries), saved["adversarial"])
    state, saved_state = resumed.discriminator_step.optimizer.state_dict(), saved["adversarial_optimizer"]
    assert state["param_groups"] == saved_state["param_groups"]
    assert state["state"].keys() == saved_state["state"].keys() and len(state["state"]) == 6
    for i, s in state["state"].items():
        assert_close(s, saved_state["state"][i])
    resumed.train()
    assert_close(clone(resumed.unwrapped_model), clone(straight.unwrapped_model), tol=1e-6)
    assert_close(
        clone(resumed.discriminator_step.adversaries), clone(straight.discriminator_step.adversaries), tol=1e-6
    )


def test_ttfnet_adversarial_only_run_and_its_checkpoint(tiny_shapes, tmp_path):
    """TTFNet student, LOGIT_KD False (adversarial terms and labels only), two
    steps: the loss dict has no loss_kd term, the student learns, and the plain
    TTFNet config loads model_final.pth with strict keys."""
    name, _ = tiny_shapes
    teacher = save_teacher(tmp_path, "TTFNet")
    cfg = run_cfg("TTFNet", name, tmp_path / "out", teacher, "MODEL.DISTILL.LOGIT_KD", "False", "SOLVER.MAX_ITER", "2")
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    before = clone(trainer.unwrapped_model.student)
    trainer.train()
    losses = {k for k in trainer.storage.histories() if k.startswith("loss")}
    assert losses == {"loss_heatmap", "loss_box", "loss_adv_t0_upsampler", "loss_discriminator"}
    student = trainer.unwrapped_model.student
    assert any(not torch.equal(v, student.state_dict()[k]) for k, v in before.items())
    assert_loads_into_plain_student("TTFNet", tmp_path / "out" / "model_final.pth", student)


def test_config_errors_name_the_key(tmp_path):
    cfg = plain_cfg("CenterNet", "MODEL.META_ARCHITECTURE", "Distiller", "MODEL.DISTILL.LOGIT_KD", "False")
    with pytest.raises(ValueError, match="LOGIT_KD and MODEL.DISTILL.ADVERSARIAL.ENABLED are both False"):
        build_model(cfg)
    teacher = save_teacher(tmp_path, "CenterNet")
    cfg = plain_cfg(
        "CenterNet",
        "MODEL.META_ARCHITECTURE",
        "Distiller",
        "MODEL.DISTILL.ADVERSARIAL.ENABLED",
        "True",
        "MODEL.DISTILL.ADVERSARIAL.FEATURES",
        "('upsampler', 'res9')",
    )
    cfg.MODEL.DISTILL.TEACHERS = [teacher]
    with pytest.raises(
        ValueError,
        match=r"FEATURES: unknown levels \['res9'\]; the student's maps are "
        r"\['res2', 'res3', 'res4', 'res5', 'upsampler'\]",
    ):
        build_model(cfg)
