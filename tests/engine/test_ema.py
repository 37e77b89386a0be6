"""Model EMA: the update rule, evaluation with the EMA weights, and the EMA in checkpoints."""

import math
import os

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from torch import nn

from centerx.engine import ModelEMA, Trainer, load_weights_for_eval

from tiny_models import tiny_train_cfg

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(REPO, "configs", "shapes", "centernet_r18_demo.yaml")


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(2))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))


def test_update_follows_the_closed_form():
    """ema_k = d_k ema_{k-1} + (1 - d_k) w_k with d_k = decay (1 - exp(-k / warmup)),
    replayed in plain Python; integer buffers are copied."""
    model = Tiny()
    ema = ModelEMA(model, decay=0.9, warmup_iters=4)
    expected = [0.0, 0.0]
    for k, value in enumerate([1.0, -2.0, 3.5, 0.25, 10.0], start=1):
        with torch.no_grad():
            model.w.copy_(torch.tensor([value, 2 * value]))
            model.count.fill_(k)
        ema.update(model)
        d = 0.9 * (1 - math.exp(-k / 4))
        expected = [d * e + (1 - d) * w for e, w in zip(expected, [value, 2 * value])]
        assert ema.state["w"].tolist() == pytest.approx(expected, rel=1e-6)
        assert int(ema.state["count"]) == k
    no_warmup = ModelEMA(model, decay=0.5, warmup_iters=0)
    assert no_warmup.decay_at(1) == 0.5


def test_apply_to_swaps_and_restores():
    model = Tiny()
    ema = ModelEMA(model, decay=0.5, warmup_iters=0)
    with torch.no_grad():
        model.w.fill_(4.0)
    ema.update(model)  # ema = 2
    with ema.apply_to(model):
        assert model.w.tolist() == [2.0, 2.0]
    assert model.w.tolist() == [4.0, 4.0]


def test_bad_settings_and_foreign_checkpoints_fail_clearly():
    with pytest.raises(ValueError, match="MODEL_EMA.DECAY"):
        ModelEMA(Tiny(), decay=1.0)
    with pytest.raises(ValueError, match="MODEL_EMA.WARMUP_ITERS"):
        ModelEMA(Tiny(), warmup_iters=-1)
    ema = ModelEMA(Tiny())
    with pytest.raises(KeyError, match="another architecture"):
        ema.load_state_dict({"state": {"other": torch.zeros(1)}, "updates": 3})


def tiny_cfg(dataset, output_dir, *opts):
    """The shared tiny training run (tiny_models.tiny_train_cfg) with a fast-moving EMA."""
    return tiny_train_cfg(
        output_dir,
        dataset,
        "SOLVER.CHECKPOINT_PERIOD",
        "1000",
        "MODEL_EMA.ENABLED",
        "True",
        "MODEL_EMA.DECAY",
        "0.5",
        "MODEL_EMA.WARMUP_ITERS",
        "0",
        *opts,
        seed=2,
    )


def test_training_evaluates_and_saves_the_ema(tiny_shapes, tmp_path, monkeypatch, one_thread):
    """The evaluation at the end of training sees the EMA weights, the model
    gets its trained weights back, and model_final.pth holds both; --eval-only
    loads the EMA ones (MODEL_EMA.USE_FOR_EVAL), or warns when there are none."""
    name, _ = tiny_shapes
    seen = {}

    def fake_test(cfg, model):
        seen.update({k: v.clone() for k, v in model.state_dict().items()})
        return {}

    monkeypatch.setattr(Trainer, "test", staticmethod(fake_test))
    cfg = tiny_cfg(name, tmp_path)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    key = "heads.heatmap.layers.0.weight"
    assert torch.equal(seen[key], trainer.ema.state[key])
    assert not torch.equal(seen[key], trainer.unwrapped_model.state_dict()[key])

    checkpoint = torch.load(tmp_path / "model_final.pth", weights_only=False)
    assert torch.equal(checkpoint["ema"]["state"][key], trainer.ema.state[key])
    assert torch.equal(checkpoint["model"][key], trainer.unwrapped_model.state_dict()[key])

    model = Trainer.build_model(cfg)
    load_weights_for_eval(cfg, model, str(tmp_path / "model_final.pth"))
    assert torch.equal(model.state_dict()[key], trainer.ema.state[key])

    plain = tmp_path / "plain"
    plain.mkdir()
    DetectionCheckpointer(trainer.unwrapped_model, save_dir=str(plain)).save("model_plain")
    model = Trainer.build_model(cfg)
    load_weights_for_eval(cfg, model, str(plain / "model_plain.pth"))
    assert torch.equal(model.state_dict()[key], trainer.unwrapped_model.state_dict()[key])


def test_ema_starts_from_loaded_weights(tiny_shapes, tmp_path, one_thread):
    """Fine-tuning from MODEL.WEIGHTS (not a resume): when training starts, the
    EMA holds those weights, not the random initialisation."""
    name, _ = tiny_shapes
    cfg = tiny_cfg(name, tmp_path / "a")
    source = Trainer.build_model(cfg)
    with torch.no_grad():  # weights no random initialisation gives
        for value in source.state_dict().values():
            if value.is_floating_point():
                value.add_(1.0)
    DetectionCheckpointer(source, save_dir=str(tmp_path)).save("init")
    trainer = Trainer(tiny_cfg(name, tmp_path / "b", "MODEL.WEIGHTS", str(tmp_path / "init.pth")))
    trainer.resume_or_load(resume=False)
    trainer.before_train()
    expected = source.state_dict()
    assert sorted(trainer.ema.state) == sorted(expected)
    for key, value in expected.items():
        assert torch.equal(trainer.ema.state[key].to(value.dtype), value), key
