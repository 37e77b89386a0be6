"""The device-side training path: targets and losses are shape-static tensor code
that reads nothing back from the device, and mixed precision runs through
detectron2's AMPTrainer (CUDA) or bfloat16 autocast (CPU) with FP32 losses.

"Reads nothing back" is checked on PyTorch's meta device: meta tensors have
shapes but no values, so every host read (``.item()``, ``int()``, ``bool()``)
and every data-dependent shape (``nonzero``, boolean-mask indexing) raises
there, exactly the operations that block a CUDA stream.
"""

import os
import sys

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.engine import AMPTrainer, SimpleTrainer
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

import centerx
import centerx.engine.amp as amp_module
import centerx.engine.trainer as trainer_module
from centerx.engine import Trainer
from centerx.engine.amp import CPUAutocastTrainer
from centerx.modeling.adversarial import FeatureAdversaries
from centerx.modeling.targets import centernet_targets, centernet_window, pad_objects, ttfnet_targets, ttfnet_window

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = {
    "CenterNet": os.path.join(REPO, "configs", "shapes", "centernet_r18_demo.yaml"),
    "TTFNet": os.path.join(REPO, "configs", "shapes", "ttfnet_r18_demo.yaml"),
}
LOSSES = {"CenterNet": {"loss_heatmap", "loss_wh", "loss_offset"}, "TTFNet": {"loss_heatmap", "loss_box"}}


def arch_cfg(arch, *opts):
    cfg = centerx.add_centerx_config(get_cfg())
    cfg.merge_from_file(CONFIGS[arch])
    cfg.merge_from_list(list(opts))
    return cfg


def ground_truth():
    """Two 64x64 images: three objects (one of them a zero-width box that the
    targets must skip) and none."""
    boxes = torch.tensor([[4.0, 6.0, 30.0, 40.0], [20.0, 20.0, 20.0, 50.0], [33.0, 10.0, 60.0, 22.0]])
    return [
        Instances((64, 64), gt_boxes=Boxes(boxes), gt_classes=torch.tensor([0, 1, 3])),
        Instances((64, 64), gt_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0, dtype=torch.long)),
    ]


@pytest.mark.parametrize("arch", ["CenterNet", "TTFNet"])
def test_losses_read_nothing_back_from_the_device(arch, one_thread):
    """Targets + losses + backward of a whole batch run on the meta device: the
    only host work is padding the loader's boxes and sizing the splat window,
    done on the host copy before the one transfer."""
    torch.manual_seed(0)
    model = build_model(arch_cfg(arch, "MODEL.DEVICE", "cpu")).train().to("meta")
    outputs = model.predict(torch.empty(2, 3, 64, 64, device="meta"))
    losses = model.losses(outputs, ground_truth())
    assert set(losses) == LOSSES[arch]
    assert all(v.device.type == "meta" and v.dim() == 0 and v.dtype == torch.float32 for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is not None and p.grad.device.type == "meta" for p in model.heads.parameters())


@pytest.mark.parametrize("arch", ["CenterNet", "TTFNet"])
def test_model_options_read_nothing_back_from_the_device(arch, one_thread):
    """The same with CoordConv, SPP and DropBlock (training mode) on, and for
    TTFNet IoU-aware scoring: its loss_iou and backward stay on the device too."""
    torch.manual_seed(0)
    opts = [
        "MODEL.DEVICE",
        "cpu",
        "MODEL.CENTERX.COORD_CONV",
        "True",
        "MODEL.CENTERX.SPP.ENABLED",
        "True",
        "MODEL.CENTERX.DROPBLOCK.ENABLED",
        "True",
    ]
    if arch == "TTFNet":
        opts += ["MODEL.TTFNET.IOU_AWARE.ENABLED", "True"]
    model = build_model(arch_cfg(arch, *opts)).train().to("meta")
    outputs = model.predict(torch.empty(2, 3, 64, 64, device="meta"))
    losses = model.losses(outputs, ground_truth())
    assert set(losses) == LOSSES[arch] | ({"loss_iou"} if arch == "TTFNet" else set())
    assert all(v.device.type == "meta" and v.dim() == 0 and v.dtype == torch.float32 for v in losses.values())
    sum(losses.values()).backward()
    trained = [model.heads, model.coord_conv, model.spp]
    assert all(p.grad is not None and p.grad.device.type == "meta" for m in trained for p in m.parameters())


@pytest.mark.parametrize("arch", ["CenterNet", "TTFNet"])
def test_weighted_losses_read_nothing_back_from_the_device(arch, one_thread):
    """The same with per-object loss weights (mixup's gt_weights on one image of
    the batch, none on the other): the weight maps are built on the device too,
    and change the losses."""
    torch.manual_seed(0)
    model = build_model(arch_cfg(arch, "MODEL.DEVICE", "cpu")).train()
    outputs = model.predict(torch.rand(2, 3, 64, 64) * 255)
    weighted = ground_truth()
    weighted[0].gt_weights = torch.tensor([0.3, 0.5, 0.7])
    plain = model.losses(outputs, ground_truth())
    mixed = model.losses(outputs, weighted)
    assert all(mixed[k].item() != plain[k].item() for k in LOSSES[arch])
    model = model.to("meta")
    outputs = model.predict(torch.empty(2, 3, 64, 64, device="meta"))
    losses = model.losses(outputs, weighted)
    assert set(losses) == LOSSES[arch]
    assert all(v.device.type == "meta" and v.dim() == 0 and v.dtype == torch.float32 for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is not None and p.grad.device.type == "meta" for p in model.heads.parameters())


def test_meta_device_catches_host_reads():
    """The check above can fail: code that reads a value (sizing the window from
    device boxes) raises on meta tensors."""
    boxes = torch.empty(2, 3, 4, device="meta")
    classes = torch.empty(2, 3, dtype=torch.long, device="meta")
    with pytest.raises((RuntimeError, NotImplementedError)):
        centernet_window(boxes, classes, 4, (16, 16))
    with pytest.raises((RuntimeError, NotImplementedError)):
        ttfnet_window(boxes, classes, 4, (16, 16))


def test_adversarial_terms_read_nothing_back_from_the_device(one_thread):
    """Adversarial feature distillation on the meta device: the student's fooling
    term, its backward into the adapter and the student map (none into the
    discriminator), and the discriminator's loss and backward."""
    adv = FeatureAdversaries(
        ("upsampler",),
        ("t0",),
        {"upsampler": ShapeSpec(channels=3, stride=4)},
        [{"upsampler": ShapeSpec(channels=4, stride=4)}],
        channels=8,
    ).to("meta")
    student = torch.empty(2, 3, 16, 16, device="meta", requires_grad=True)
    losses = adv({"upsampler": student}, [{"upsampler": torch.empty(2, 4, 16, 16, device="meta")}])
    assert losses["loss_adv_t0_upsampler"].device.type == "meta"
    losses["loss_adv_t0_upsampler"].backward()
    assert student.grad is not None and all(p.grad is not None for p in adv.adapters.parameters())
    assert all(p.grad is None for p in adv.discriminators.parameters())
    with adv.trainable_discriminators():
        loss, accuracy = adv.discriminator_losses()["t0_upsampler"]
        loss.backward()
    assert accuracy.device.type == "meta"
    assert all(p.grad is not None and p.grad.device.type == "meta" for p in adv.discriminators.parameters())


def random_objects(seed, num_images=3, max_objects=7, size=96):
    rng = np.random.default_rng(seed)
    boxes, classes = [], []
    for _ in range(num_images):
        n = int(rng.integers(0, max_objects + 1))
        xy = rng.uniform(-8, size - 4, size=(n, 2))
        wh = rng.uniform(1, size * 0.8, size=(n, 2))
        boxes.append(torch.tensor(np.concatenate([xy, xy + wh], 1), dtype=torch.float32).reshape(-1, 4))
        classes.append(torch.tensor(rng.integers(0, 3, n)))
    return pad_objects(boxes, classes)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tight_window_gives_the_same_targets_as_the_map_bound(seed):
    """The host-sized window (largest radius of the batch) and the default window
    (radius of a map-sized box) produce identical targets: the window only
    bounds the work."""
    boxes, classes = random_objects(seed)
    H = W = 24
    for mode in ("corrected", "original"):
        tight = centernet_window(boxes, classes, 4, (H, W), 0.7, mode)
        a = centernet_targets(boxes, classes, 3, (H, W), 4, radius_mode=mode, max_objects=5, window=tight)
        b = centernet_targets(boxes, classes, 3, (H, W), 4, radius_mode=mode, max_objects=5)
        for k in ("heatmap", "index", "wh", "offset", "mask", "num_skipped"):
            assert torch.equal(a[k], b[k]), (mode, k)
    tight = ttfnet_window(boxes, classes, 4, (H, W))
    a = ttfnet_targets(boxes, classes, 3, (H, W), 4, window=tight)
    b = ttfnet_targets(boxes, classes, 3, (H, W), 4)
    for k in ("heatmap", "box", "weight"):
        assert torch.isfinite(a[k]).all() and torch.isfinite(b[k]).all(), k
        assert torch.allclose(a[k], b[k], atol=1e-6), k


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["CenterNet", "TTFNet"])
def test_losses_stay_fp32_under_autocast(arch, one_thread):
    """Under FP16 autocast the convolutions run in FP16 but every loss comes out
    in FP32, close to the FP32 forward's, with finite gradients."""
    torch.manual_seed(0)
    model = build_model(arch_cfg(arch, "MODEL.DEVICE", "cpu")).train()
    g = torch.Generator().manual_seed(0)
    batch = [
        {"image": torch.randint(0, 256, (3, 64, 64), generator=g).float(), "instances": inst} for inst in ground_truth()
    ]
    reference = model(batch)
    dtypes = []
    hook = model.heads.register_forward_hook(lambda m, i, o: dtypes.append(o["heatmap"].dtype))
    with torch.autocast("cpu", dtype=torch.float16):
        losses = model(batch)
    hook.remove()
    assert dtypes == [torch.float16]
    assert set(losses) == LOSSES[arch]
    for k, v in losses.items():
        assert v.dtype == torch.float32, k
        assert torch.isclose(v, reference[k], rtol=2e-2, atol=1e-3), (k, float(v), float(reference[k]))
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def amp_trainer_cfg(arch, tiny_shapes, tmp_path, *opts):
    name, _ = tiny_shapes
    return arch_cfg(
        arch,
        "DATASETS.TRAIN",
        f"('{name}',)",
        "DATASETS.TEST",
        "()",
        "INPUT.TRAIN_SIZE",
        "64",
        "SOLVER.IMS_PER_BATCH",
        "2",
        "SOLVER.MAX_ITER",
        "3",
        "SOLVER.WARMUP_ITERS",
        "0",
        "SOLVER.CHECKPOINT_PERIOD",
        "1000",
        "DATALOADER.NUM_WORKERS",
        "0",
        "SOLVER.AMP.ENABLED",
        "True",
        "OUTPUT_DIR",
        str(tmp_path),
        "SEED",
        "3",
        *opts,
    )


def train_and_check(trainer, dtype):
    """Train ``trainer`` (3 iterations); the heads must compute in ``dtype``, the
    losses stay finite and the weights change."""
    trainer.resume_or_load(resume=False)
    model = trainer.unwrapped_model
    dtypes = []
    model.heads.register_forward_hook(lambda m, i, o: dtypes.append(o["heatmap"].dtype))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.train()
    assert dtypes == [dtype] * 3
    losses = trainer.storage.history("total_loss").values()
    assert len(losses) == 3 and all(np.isfinite(v) for v, _ in losses)
    after = model.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    assert all(v.dtype == torch.float32 for v in after.values() if v.is_floating_point())
    assert not torch.equal(before["heads.heatmap.layers.0.weight"], after["heads.heatmap.layers.0.weight"])


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["CenterNet", "TTFNet"])
def test_detectron2_amp_trainer_trains_every_architecture(arch, tiny_shapes, tmp_path, monkeypatch, one_thread):
    """detectron2's AMPTrainer (what SOLVER.AMP.ENABLED picks on CUDA) trains every
    architecture. It insists on CUDA; on this CPU machine its step runs with CPU
    FP16 autocast in place of CUDA's (GradScaler disabled, as detectron2 builds
    it without CUDA)."""
    monkeypatch.setattr(trainer_module, "build_step_trainer", lambda cfg, m, d, o: AMPTrainer(m, d, o))
    trainer = Trainer(amp_trainer_cfg(arch, tiny_shapes, tmp_path))
    assert isinstance(trainer._trainer, AMPTrainer)
    step = trainer._trainer.run_step
    cuda_available = torch.cuda.is_available

    def available_to_amp_trainer():
        # True for AMPTrainer's own check only; torch itself still sees no CUDA
        return sys._getframe(1).f_globals["__name__"] == "detectron2.engine.train_loop" or cuda_available()

    def step_with_cpu_autocast():
        with monkeypatch.context() as m:
            m.setattr(torch.cuda, "is_available", available_to_amp_trainer)
            m.setattr(torch.cuda.amp, "autocast", lambda dtype: torch.autocast("cpu", dtype=dtype))
            step()

    monkeypatch.setattr(trainer._trainer, "run_step", step_with_cpu_autocast)
    train_and_check(trainer, torch.float16)


@pytest.mark.parametrize("arch", ["CenterNet", "TTFNet"])
def test_cpu_bfloat16_autocast_trains_every_architecture(arch, tiny_shapes, tmp_path, monkeypatch, one_thread):
    """SOLVER.AMP.ENABLED on a CPU with native bfloat16 (forced here, so that the
    test runs on any CPU) trains under bfloat16 autocast with FP32 weights, also
    with MODEL.CENTERX.CHANNELS_LAST (weights and input batch in NHWC)."""
    monkeypatch.setattr(amp_module, "cpu_has_native_bf16", lambda: True)
    trainer = Trainer(amp_trainer_cfg(arch, tiny_shapes, tmp_path, "MODEL.CENTERX.CHANNELS_LAST", "True"))
    assert isinstance(trainer._trainer, CPUAutocastTrainer)
    weights = [m.weight for m in trainer.unwrapped_model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(weights) > 20 and all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)
    train_and_check(trainer, torch.bfloat16)


def test_bfloat16_losses_stay_close_to_float32(one_thread):
    """Under CPU bfloat16 autocast the losses are FP32 and within 5 % of the FP32
    forward of the same weights and batch."""
    torch.manual_seed(0)
    model = build_model(arch_cfg("TTFNet", "MODEL.DEVICE", "cpu")).train()
    g = torch.Generator().manual_seed(0)
    batch = [{"image": torch.rand(3, 64, 64, generator=g) * 255, "instances": inst} for inst in ground_truth()]
    model.eval()  # fixed BatchNorm statistics, so both passes see the same network
    with torch.no_grad():
        reference = model.losses(model.predict(model.preprocess_image(batch).tensor), ground_truth())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outputs = model.predict(model.preprocess_image(batch).tensor)
            losses = model.losses(outputs, ground_truth())
    assert outputs["heatmap"].dtype == torch.bfloat16
    for k, v in losses.items():
        assert v.dtype == torch.float32
        assert v.item() == pytest.approx(reference[k].item(), rel=5e-2), k


@pytest.mark.parametrize(
    "device, amp, native, expected",
    [
        ("cpu", False, True, SimpleTrainer),
        ("cuda", True, True, AMPTrainer),
        ("cpu", True, True, CPUAutocastTrainer),
        ("cpu", True, False, SimpleTrainer),
    ],
)
def test_step_trainer_choice(device, amp, native, expected, monkeypatch, caplog):
    """SOLVER.AMP.ENABLED and MODEL.DEVICE pick the step runner; on a CPU without
    native bfloat16 AMP falls back to FP32 with a warning naming the key."""
    monkeypatch.setattr(amp_module, "cpu_has_native_bf16", lambda: native)
    # a stand-in model: no heads for the demo's float32 modules to name
    cfg = arch_cfg("CenterNet", "MODEL.DEVICE", device, "SOLVER.AMP.ENABLED", str(amp), "SOLVER.AMP.FP32_MODULES", "()")
    model = torch.nn.Linear(2, 2)
    with caplog.at_level("WARNING", logger="centerx.engine.amp"):
        runner = amp_module.build_step_trainer(cfg, model, [], torch.optim.SGD(model.parameters(), 0.1))
    assert type(runner) is expected
    assert ("SOLVER.AMP.ENABLED" in caplog.text) == (amp and not native and device == "cpu")
