"""Distillation terms by name (MODEL.DISTILL.TERMS, centerx.modeling.distillation_terms):
a term registered outside centerX is built from the config alone, trains, and its
state (parameters and buffers) is in the checkpoint and comes back on --resume,
so a resumed run equals the uninterrupted one."""

import shutil

import pytest
import torch
from test_adversarial import assert_close, clone, run_cfg, save_teacher
from torch import nn

from centerx.engine import Trainer
from centerx.modeling.distillation_terms import (
    DISTILLATION_TERM_REGISTRY,
    HEATMAP_DISTILLATION_LOSS_REGISTRY,
    heatmap_distillation_loss,
)
from centerx.modeling.losses.distillation import quality_focal_distillation_loss


@DISTILLATION_TERM_REGISTRY.register()
class CountingMimic(nn.Module):
    """A FitNet-style term with state of both kinds: an adapter (parameters) and a
    step counter (a buffer) that scales the loss by 1 + steps / 2, so a resumed run
    that lost either would train the student differently."""

    def __init__(self, cfg, student, teachers, links):
        super().__init__()
        channels = student.upsampler.out_channels
        self.adapter = nn.Conv2d(channels, teachers[0].upsampler.out_channels, 1)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.names = [link.name for link in links]

    def forward(self, distiller, outputs, features, teacher_outputs, teacher_features):
        self.steps += 1
        scale = 1.0 + self.steps.float() / 2
        return {
            f"loss_mimic_{name}": scale * ((self.adapter(features["upsampler"]) - t["upsampler"]) ** 2).mean()
            for name, t in zip(self.names, teacher_features)
        }


def term_cfg(dataset, output_dir, teacher, *opts):
    return run_cfg(
        "CenterNet",
        dataset,
        output_dir,
        teacher,
        "MODEL.DISTILL.ADVERSARIAL.ENABLED",
        "False",
        "MODEL.DISTILL.TERMS",
        "('CountingMimic',)",
        *opts,
    )


def test_a_term_named_in_the_config_trains_and_is_checkpointed(tiny_shapes, tmp_path):
    name, _ = tiny_shapes
    teacher = save_teacher(tmp_path, "CenterNet")
    trainer = Trainer(term_cfg(name, tmp_path / "out", teacher, "SOLVER.MAX_ITER", "2"))
    trainer.resume_or_load(resume=False)
    term = trainer.unwrapped_model.extra_terms[0]
    before = term.adapter.weight.detach().clone()
    trainer.train()
    assert "loss_mimic_t0" in trainer.storage.histories() and "loss_kd_t0_heatmap" in trainer.storage.histories()
    assert int(term.steps) == 2 and not torch.equal(term.adapter.weight, before)
    saved = torch.load(tmp_path / "out" / "model_final.pth", map_location="cpu", weights_only=False)
    assert_close(saved["distillation_terms"], clone(trainer.unwrapped_model.extra_terms))
    assert int(saved["distillation_terms"]["0.steps"]) == 2
    assert not any(k.startswith("extra_terms") for k in saved["model"])  # the student's checkpoint stays plain


def test_resume_restores_a_terms_parameters_and_buffers(tiny_shapes, tmp_path):
    """3 iterations straight (checkpoint after 2) vs a fresh trainer resumed from it:
    the term's adapter and counter, and the student, end equal."""
    name, _ = tiny_shapes
    teacher = save_teacher(tmp_path, "CenterNet")
    opts = ["SOLVER.MAX_ITER", "3", "SOLVER.CHECKPOINT_PERIOD", "2"]
    straight = Trainer(term_cfg(name, tmp_path / "straight", teacher, *opts))
    straight.resume_or_load(resume=False)
    straight.train()

    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    shutil.copy(tmp_path / "straight" / "model_0000001.pth", resumed_dir)
    (resumed_dir / "last_checkpoint").write_text("model_0000001.pth")
    torch.manual_seed(99)  # the fresh term's adapter differs from the saved one until loaded
    resumed = Trainer(term_cfg(name, resumed_dir, teacher, *opts))
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 2 and int(resumed.unwrapped_model.extra_terms[0].steps) == 2
    resumed.train()
    assert int(resumed.unwrapped_model.extra_terms[0].steps) == 3
    assert_close(clone(resumed.unwrapped_model.extra_terms), clone(straight.unwrapped_model.extra_terms), tol=1e-6)
    assert_close(clone(resumed.unwrapped_model), clone(straight.unwrapped_model), tol=1e-6)


def test_unknown_terms_and_heatmap_losses_are_named(tiny_shapes, tmp_path):
    name, _ = tiny_shapes
    teacher = save_teacher(tmp_path, "CenterNet")
    with pytest.raises(ValueError, match=r"\['NoSuchTerm'\] are not registered distillation terms.*CountingMimic"):
        Trainer(term_cfg(name, tmp_path / "out", teacher, "MODEL.DISTILL.TERMS", "('NoSuchTerm',)"))
    with pytest.raises(ValueError, match="HEATMAP_LOSS='mse' is not .* registered heatmap losses .*quality_focal"):
        heatmap_distillation_loss("mse")


def test_the_built_in_heatmap_loss_is_registered_under_its_config_name():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    assert heatmap_distillation_loss("") is None
    assert "quality_focal" in HEATMAP_DISTILLATION_LOSS_REGISTRY
    assert heatmap_distillation_loss("quality_focal")(s, t).item() == pytest.approx(
        quality_focal_distillation_loss(s, t).item()
    )
