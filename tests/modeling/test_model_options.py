"""PP-YOLO's model options (issue #7): CoordConv and SPP after the backbone,
DropBlock in the heads, IoU-aware scoring for TTFNet.

Expected values come from closed forms (coordinate ramps, box IoU, the fused
score), a second implementation written here (numpy sliding-window max-pool
with -inf padding, numpy BCE), hand-built maps, or ONNX Runtime / OpenCV
running the exported graphs.
"""

import os

import cv2
import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

from centerx.deploy import DeployModel, ExportError, decode_raw_outputs
from centerx.deploy.caffe_export import export_caffe
from centerx.deploy.letterbox import Letterbox
from centerx.deploy.onnx_export import export_onnx
from centerx.deploy.quantize import CalibrationImages, quantize_onnx
from centerx.engine import Trainer
from centerx.modeling.decode import decode_ttfnet, ttfnet_scores
from centerx.modeling.dropblock import DropBlock
from centerx.modeling.losses.iou_aware import iou_targets
from centerx.modeling.necks import SPP, CoordConv, coordinate_channels
from centerx.modeling.targets import pad_objects, ttfnet_targets

from tiny_models import SIZE, images, randomize_
from tiny_models import tiny_cfg as deploy_tiny_cfg

ort = pytest.importorskip("onnxruntime")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STRIDE = 4
NECK_OPTIONS = [
    "MODEL.CENTERX.COORD_CONV",
    "True",
    "MODEL.CENTERX.SPP.ENABLED",
    "True",
    "MODEL.CENTERX.DROPBLOCK.ENABLED",
    "True",
]
ALL_OPTIONS = {"CenterNet": NECK_OPTIONS, "TTFNet": NECK_OPTIONS + ["MODEL.TTFNET.IOU_AWARE.ENABLED", "True"]}


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_cfg(arch, *opts):
    """The shared tiny model (ResNet-18, 3 classes, K = 10, 128 px export
    size) with a narrower upsampler, then ``opts``."""
    key = arch.upper()
    return deploy_tiny_cfg(arch, f"MODEL.{key}.UPSAMPLE_CHANNELS", "[32, 16, 16]", *opts)


def build(arch, *opts, seed=0):
    torch.manual_seed(seed)
    return randomize_(build_model(tiny_cfg(arch, *opts)).eval(), seed)


def run_onnx(path, x):
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"images": x.numpy()})))


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# --------------------------------------------------------------------------- #
# CoordConv
# --------------------------------------------------------------------------- #
def test_coordinate_channels_closed_form():
    """3 x 5 map: x = -1 + 2 j / 4 along each row, y = -1 + 2 i / 2 down each
    column, both corners -1 and 1; a map one cell high or wide gets -1 there."""
    x = torch.zeros(2, 7, 3, 5)
    coords = coordinate_channels(x)
    assert coords.shape == (2, 2, 3, 5) and coords.dtype == x.dtype
    expected_x = np.tile([-1.0, -0.5, 0.0, 0.5, 1.0], (3, 1))
    expected_y = np.tile([[-1.0], [0.0], [1.0]], (1, 5))
    for n in range(2):
        np.testing.assert_allclose(coords[n, 0].numpy(), expected_x, atol=1e-7)
        np.testing.assert_allclose(coords[n, 1].numpy(), expected_y, atol=1e-7)
    one_row = coordinate_channels(torch.zeros(1, 1, 1, 4))
    np.testing.assert_allclose(one_row[0, 1].numpy(), -np.ones((1, 4)))
    np.testing.assert_allclose(one_row[0, 0, 0].numpy(), [-1.0, -1 / 3, 1 / 3, 1.0], atol=1e-6)


def test_coord_conv_feeds_the_coordinates_to_its_conv():
    """CoordConv keeps the shape; its output is ReLU(W [x; coords] + b) with the
    coordinates of the closed form (here a conv reading only the y channel)."""
    m = CoordConv(4, norm="").eval()
    with torch.no_grad():
        m.conv[0].weight.zero_()
        m.conv[0].weight[:, 5] = 1.0  # input channel 4 + 1: the y coordinate
        m.conv[0].bias.fill_(1.0)
    out = m(torch.randn(2, 4, 5, 3))
    assert out.shape == (2, 4, 5, 3)
    expected = np.tile((np.linspace(-1, 1, 5) + 1.0)[:, None], (1, 3))
    for n in range(2):
        for c in range(4):
            np.testing.assert_allclose(out[n, c].detach().numpy(), expected, atol=1e-6)


# --------------------------------------------------------------------------- #
# SPP
# --------------------------------------------------------------------------- #
def numpy_max_pool_same(x, k):
    """Stride-1 k x k max-pool of [N, C, H, W] with -inf padding of k // 2."""
    p = k // 2
    padded = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (k, k), axis=(2, 3))
    return windows.max(axis=(-2, -1))


def test_spp_equals_numpy_pooling_and_keeps_channels():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 6, 7, generator=g)
    m = SPP(3, pool_sizes=(3, 5, 13), norm="").eval()
    with torch.no_grad():
        m.fuse[0].weight.normal_(generator=g)
        m.fuse[0].bias.normal_(generator=g)
        out = m(x).numpy()
    assert out.shape == (2, 3, 6, 7)
    xs = x.numpy()
    stacked = np.concatenate([xs] + [numpy_max_pool_same(xs, k) for k in (3, 5, 13)], axis=1)
    weight, bias = m.fuse[0].weight.detach().numpy()[:, :, 0, 0], m.fuse[0].bias.detach().numpy()
    expected = np.maximum(np.einsum("oc,nchw->nohw", weight, stacked) + bias[None, :, None, None], 0)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sizes", [(5, 8), (0,), ()])
def test_spp_refuses_even_or_missing_pool_sizes(sizes):
    with pytest.raises(ValueError, match=r"MODEL\.CENTERX\.SPP\.POOL_SIZES"):
        build_model(
            tiny_cfg("CenterNet", "MODEL.CENTERX.SPP.ENABLED", "True", "MODEL.CENTERX.SPP.POOL_SIZES", str(sizes))
        )


# --------------------------------------------------------------------------- #
# DropBlock
# --------------------------------------------------------------------------- #
def test_dropblock_is_identity_in_eval():
    m = DropBlock(0.3, 3).eval()
    x = torch.randn(2, 4, 9, 9)
    assert torch.equal(m(x), x)


def test_dropblock_drops_whole_blocks_at_the_configured_rate():
    """All-ones input, 3x3 blocks, DROP_PROB 0.1, fixed seed:
    - every zeroed unit lies in a k x k square of zeros inside the map;
    - the dropped fraction is within 0.01 of 0.1 (the paper's gamma ignores
      block overlaps: 0.0955 expected here, worked out cell by cell);
    - every kept unit equals numel / (number of kept units)."""
    k, p = 3, 0.1
    m = DropBlock(p, k).train()
    torch.manual_seed(0)
    out = m(torch.ones(4, 8, 48, 48)).numpy()
    zero = out == 0
    full = np.lib.stride_tricks.sliding_window_view(zero, (k, k), axis=(2, 3)).all(axis=(-2, -1))
    covered = np.zeros_like(zero)
    for dy in range(k):
        for dx in range(k):
            covered[:, :, dy : dy + full.shape[2], dx : dx + full.shape[3]] |= full
    assert zero.any() and (covered == zero).all()
    assert abs(zero.mean() - p) < 0.01, zero.mean()
    np.testing.assert_allclose(out[~zero], zero.size / (~zero).sum(), rtol=1e-6)


def test_dropblock_refuses_bad_settings():
    with pytest.raises(ValueError, match=r"DROPBLOCK\.DROP_PROB"):
        DropBlock(1.0, 3)
    with pytest.raises(ValueError, match=r"DROPBLOCK\.BLOCK_SIZE"):
        build_model(
            tiny_cfg("TTFNet", "MODEL.CENTERX.DROPBLOCK.ENABLED", "True", "MODEL.CENTERX.DROPBLOCK.BLOCK_SIZE", "4")
        )
    with pytest.raises(ValueError, match=r"DROPBLOCK\.BLOCK_SIZE"):
        DropBlock(0.1, 5).train()(torch.ones(1, 1, 4, 8))


# --------------------------------------------------------------------------- #
# IoU-aware TTFNet
# --------------------------------------------------------------------------- #
def test_iou_target_closed_form():
    """IoU of (0, 0, 10, 10) with (5, 5, 15, 15) = 25 / 175; disjoint and identical boxes."""
    pred = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 4.0, 4.0], [2.0, 3.0, 7.0, 9.0]], requires_grad=True)
    target = torch.tensor([[5.0, 5.0, 15.0, 15.0], [5.0, 5.0, 9.0, 9.0], [2.0, 3.0, 7.0, 9.0]])
    t = iou_targets(pred, target)
    np.testing.assert_allclose(t.numpy(), [25 / 175, 0.0, 1.0], rtol=1e-6)
    assert not t.requires_grad


def single_box_case():
    """One 40 x 24 px box in a 64 x 64 image; maps of 16 x 16 cells with
    constant l, t, r, b = (10, 6, 14, 8) px and IoU logits 1.5."""
    model = build("TTFNet", "MODEL.TTFNET.IOU_AWARE.ENABLED", "True").train()
    box = [12.0, 20.0, 52.0, 44.0]
    gt = [Instances((64, 64), gt_boxes=Boxes(torch.tensor([box])), gt_classes=torch.tensor([1]))]
    ltrb = torch.tensor([10.0, 6.0, 14.0, 8.0]).view(1, 4, 1, 1).expand(1, 4, 16, 16).clone().requires_grad_()
    outputs = {
        "heatmap": torch.zeros(1, 3, 16, 16, requires_grad=True),
        "ltrb": ltrb,
        "iou": torch.full((1, 1, 16, 16), 1.5, requires_grad=True),
    }
    return model, box, gt, outputs


def test_iou_loss_is_bce_against_the_closed_form_iou():
    """loss_iou = sum_cells w BCE(1.5, IoU(cell's box, gt box)) / sum w, the IoU
    worked out here per cell: box (4x - 10, 4y - 6, 4x + 14, 4y + 8) vs the gt."""
    model, box, gt, outputs = single_box_case()
    with torch.no_grad():
        losses = model.losses(outputs, gt)
    assert set(losses) == {"loss_heatmap", "loss_box", "loss_iou"}
    boxes, classes = pad_objects([torch.tensor([box])], [torch.tensor([1])])
    weight = ttfnet_targets(boxes, classes, 3, (16, 16), STRIDE)["weight"][0].numpy()
    assert (weight > 0).sum() > 4, "test precondition: several samples"
    x1, y1, x2, y2 = box
    total = 0.0
    for y, x in zip(*np.nonzero(weight)):
        px, py = 4.0 * x, 4.0 * y
        p = (px - 10, py - 6, px + 14, py + 8)
        inter = max(0.0, min(p[2], x2) - max(p[0], x1)) * max(0.0, min(p[3], y2) - max(p[1], y1))
        iou = inter / (24 * 14 + 40 * 24 - inter)
        q = sigmoid(1.5)
        total += weight[y, x] * -(iou * np.log(q) + (1 - iou) * np.log(1 - q))
    expected = total / weight.sum()
    assert float(losses["loss_iou"]) == pytest.approx(expected * model.loss_weights["iou"], rel=1e-5)


def test_iou_loss_sends_no_gradient_into_the_boxes():
    model, _, gt, outputs = single_box_case()
    losses = model.losses(outputs, gt)
    losses["loss_iou"].backward(retain_graph=True)
    assert outputs["ltrb"].grad is None or not outputs["ltrb"].grad.any()
    assert outputs["iou"].grad.abs().sum() > 0
    losses["loss_box"].backward()  # the GIoU loss does move them: the check above can fail
    assert outputs["ltrb"].grad.abs().sum() > 0


def test_fused_score_closed_form():
    g = torch.Generator().manual_seed(0)
    heat, iou = torch.randn(2, 3, 4, 5, generator=g), torch.randn(2, 1, 4, 5, generator=g)
    for alpha in (0.0, 0.3, 0.5, 1.0):
        expected = sigmoid(heat.numpy()) ** (1 - alpha) * sigmoid(iou.numpy()) ** alpha
        np.testing.assert_allclose(ttfnet_scores(heat, iou, alpha).numpy(), expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ttfnet_scores(heat).numpy(), sigmoid(heat.numpy()), rtol=1e-6)
    model = build("TTFNet", "MODEL.TTFNET.IOU_AWARE.ENABLED", "True", "MODEL.TTFNET.IOU_AWARE.ALPHA", "0.3")
    np.testing.assert_allclose(
        model.heatmap_scores({"heatmap": heat, "iou": iou}).numpy(),
        sigmoid(heat.numpy()) ** 0.7 * sigmoid(iou.numpy()) ** 0.3,
        rtol=1e-6,
    )
    with pytest.raises(ValueError, match=r"IOU_AWARE\.ALPHA"):
        build_model(tiny_cfg("TTFNet", "MODEL.TTFNET.IOU_AWARE.ENABLED", "True", "MODEL.TTFNET.IOU_AWARE.ALPHA", "1.5"))


def test_decode_takes_the_peak_of_the_fused_map():
    """Heatmap peaks at (2, 2) (p 0.9) and (6, 5) (p 0.8); the predicted IoU is
    0.1 at the first and 0.9 at the second: the fused top-1 is (6, 5) with score
    0.8^0.5 * 0.9^0.5, the plain one (2, 2) with 0.9."""
    logit = lambda p: float(np.log(p / (1 - p)))  # noqa: E731
    heat = torch.full((1, 2, 8, 8), -6.0)
    heat[0, 1, 2, 2], heat[0, 0, 5, 6] = logit(0.9), logit(0.8)
    iou = torch.zeros(1, 1, 8, 8)
    iou[0, 0, 2, 2], iou[0, 0, 5, 6] = logit(0.1), logit(0.9)
    ltrb = torch.full((1, 4, 8, 8), 3.0)
    fused = decode_ttfnet(heat, ltrb, 1, STRIDE, iou, 0.5)
    plain = decode_ttfnet(heat, ltrb, 1, STRIDE)
    assert fused["classes"].tolist() == [[0]] and plain["classes"].tolist() == [[1]]
    assert float(fused["scores"]) == pytest.approx((0.8 * 0.9) ** 0.5, rel=1e-5)
    assert float(plain["scores"]) == pytest.approx(0.9, rel=1e-5)
    np.testing.assert_allclose(fused["boxes"][0, 0].numpy(), [24 - 3, 20 - 3, 24 + 3, 20 + 3])


# --------------------------------------------------------------------------- #
# both architectures: parameter names, training, export
# --------------------------------------------------------------------------- #
HEAD_KEYS = {
    "CenterNet": {
        f"heads.{h}.layers.{i}.{p}" for h in ("heatmap", "wh", "offset") for i in (0, 2) for p in ("weight", "bias")
    },
    "TTFNet": {f"heads.{h}.layers.{i}.{p}" for h in ("heatmap", "ltrb") for i in (0, 2, 4) for p in ("weight", "bias")},
}


@pytest.mark.parametrize("arch", ["CenterNet", "TTFNet"])
def test_options_off_keep_the_parameter_names_and_on_only_add(arch):
    """Defaults: the heads' names as before the options existed and nothing but
    backbone / upsampler / heads; every option on: the same names with the same
    shapes plus only the new modules' (a plain checkpoint loads into it)."""
    off = build_model(tiny_cfg(arch)).state_dict()
    assert {k for k in off if k.startswith("heads.")} == HEAD_KEYS[arch]
    assert all(k.split(".")[0] in ("backbone", "upsampler", "heads") for k in off)
    on = build_model(tiny_cfg(arch, *ALL_OPTIONS[arch])).state_dict()
    assert all(on[k].shape == v.shape for k, v in off.items() if k in on) and set(off) <= set(on)
    new = {k.split(".")[0] if not k.startswith("heads.") else k for k in set(on) - set(off)}
    assert new == {"coord_conv", "spp"} | ({"heads.iou.weight", "heads.iou.bias"} if arch == "TTFNet" else set())


@pytest.mark.parametrize("arch", ["CenterNet", "TTFNet"])
def test_smoke_training_with_every_option(arch, tiny_shapes, tmp_path):
    """Two iterations of centerX's Trainer with every option on: finite losses,
    loss_iou among them for TTFNet, DropBlock active in training."""
    name, _ = tiny_shapes
    cfg = tiny_cfg(
        arch,
        *ALL_OPTIONS[arch],
        "DATASETS.TRAIN",
        f"('{name}',)",
        "DATASETS.TEST",
        "()",
        "INPUT.TRAIN_SIZE",
        "64",
        "SOLVER.IMS_PER_BATCH",
        "2",
        "SOLVER.MAX_ITER",
        "2",
        "SOLVER.WARMUP_ITERS",
        "0",
        "SOLVER.BASE_LR",
        "0.001",
        "SOLVER.REFERENCE_WORLD_SIZE",
        "0",
        "SOLVER.CHECKPOINT_PERIOD",
        "1000",
        "DATALOADER.NUM_WORKERS",
        "0",
        "OUTPUT_DIR",
        str(tmp_path),
        "SEED",
        "3",
    )
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    history = trainer.storage.histories()
    expected = {
        "CenterNet": {"loss_heatmap", "loss_wh", "loss_offset"},
        "TTFNet": {"loss_heatmap", "loss_box", "loss_iou"},
    }[arch]
    assert {k for k in history if k.startswith("loss_")} == expected
    for key in expected | {"total_loss"}:
        values = [v for v, _ in history[key].values()]
        assert len(values) == 2 and np.isfinite(values).all(), key
    drop = [m for m in trainer.unwrapped_model.modules() if isinstance(m, DropBlock)]
    assert len(drop) == {"CenterNet": 3, "TTFNet": 4}[arch] and all(m.training for m in drop)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Both architectures with every option on, exported decoded at batch 1 and
    SIZE, TTFNet also raw: {arch: (model, decoded path, raw path or None)}."""
    root = tmp_path_factory.mktemp("onnx_options")
    out = {}
    for arch in ("CenterNet", "TTFNet"):
        model = build(arch, *ALL_OPTIONS[arch])
        decoded = str(root / f"{arch}.onnx")
        export_onnx(DeployModel(model).eval(), decoded, SIZE)
        raw = None
        if arch == "TTFNet":
            raw = str(root / f"{arch}_raw.onnx")
            assert export_onnx(DeployModel(model, raw=True).eval(), raw, SIZE) == ["heatmap", "ltrb"]
        out[arch] = model, decoded, raw
    return out


@pytest.mark.parametrize("arch", ["CenterNet", "TTFNet"])
@pytest.mark.parametrize("shape", [(1, *SIZE), (2, 96, 160)], ids=["traced-shape", "batch2-96x160"])
def test_onnx_export_with_every_option_matches_pytorch(exported, arch, shape):
    """ONNX Runtime's decoded outputs = the PyTorch wrapper's, boxes and scores
    within 1e-4, at the traced shape and at another batch and size (dynamic
    N, H, W with the coordinate channels computed in the graph)."""
    model, decoded, _ = exported[arch]
    x = images(*shape, seed=1)
    out = run_onnx(decoded, x)
    with torch.no_grad():
        ref = DeployModel(model)(x)
    assert np.diff(ref["scores"].numpy(), axis=1).max() < -1e-6, "test precondition: distinct scores"
    np.testing.assert_array_equal(out["classes"], ref["classes"].numpy())
    np.testing.assert_allclose(out["scores"], ref["scores"].numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out["boxes"], ref["boxes"].numpy(), rtol=1e-4, atol=1e-4)


def test_raw_ttfnet_outputs_hold_the_fused_scores_and_decode_as_before(exported):
    """Raw IoU-aware TTFNet: heatmap = the 3x3 peaks (`==`) of the fused score
    worked out here from the model's maps, then ltrb (no iou); decoding the raw
    outputs (decode_raw_outputs, the runtimes' path) gives the decoded graph's
    outputs."""
    model, decoded, raw = exported["TTFNet"]
    x = images(2, 96, 128, seed=2)
    out, dec = run_onnx(raw, x), run_onnx(decoded, x)
    assert list(out) == ["heatmap", "ltrb"]
    with torch.no_grad():
        maps = model.predict((x - model.pixel_mean) / model.pixel_std)
    fused = sigmoid(maps["heatmap"].numpy().astype(np.float64)) ** 0.5 * sigmoid(maps["iou"].numpy()) ** 0.5
    peaks = fused == numpy_max_pool_same(fused, 3)
    assert ((out["heatmap"] > 0) == peaks).all()
    np.testing.assert_allclose(out["heatmap"][peaks], fused[peaks], rtol=1e-5)
    det = decode_raw_outputs(model, {k: torch.from_numpy(v) for k, v in out.items()})
    np.testing.assert_array_equal(det["classes"].numpy(), dec["classes"])
    np.testing.assert_allclose(det["scores"].numpy(), dec["scores"], rtol=1e-5)
    np.testing.assert_allclose(det["boxes"].numpy(), dec["boxes"], rtol=1e-5, atol=1e-4)


def test_int8_keeps_the_iou_conv_fp32(exported, tmp_path):
    """INT8 of the IoU-aware TTFNet (2 random calibration images): the heads'
    last convs, the IoU conv among them, keep their FP32 weights, equal to
    PyTorch's; every other conv reads int8 weights."""
    import onnx
    from onnx import numpy_helper

    model, decoded, _ = exported["TTFNet"]
    rng = np.random.default_rng(0)
    calibration = [rng.integers(0, 256, (100, 120, 3), dtype=np.uint8) for _ in range(2)]
    reader = CalibrationImages(calibration, Letterbox(SIZE, "RGB", model.pixel_mean.flatten().tolist()))
    int8 = quantize_onnx(decoded, str(tmp_path / "int8.onnx"), reader)
    graph = onnx.load(int8).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    fp32 = [inits[n.input[1]] for n in graph.node if n.op_type == "Conv" and n.input[1] in inits]
    expected = [model.heads.heatmap.layers[-1].weight, model.heads.ltrb.layers[-1].weight, model.heads.iou.weight]
    assert len(fp32) == len(expected)
    for w in expected:
        assert sum(f.shape == w.shape and np.array_equal(f, w.detach().numpy()) for f in fp32) == 1
    out = run_onnx(int8, images(1, *SIZE, seed=3))
    assert np.isfinite(out["scores"]).all() and np.isfinite(out["boxes"]).all()


# --------------------------------------------------------------------------- #
# Caffe
# --------------------------------------------------------------------------- #
def test_caffe_exports_spp_and_refuses_coord_conv(tmp_path):
    """SPP + DropBlock: OpenCV's Caffe importer runs the net (at another size
    than its Input layer) with PyTorch's peaks and maps; CoordConv: ExportError
    naming MODEL.CENTERX.COORD_CONV."""
    model = build("CenterNet", "MODEL.CENTERX.SPP.ENABLED", "True", "MODEL.CENTERX.DROPBLOCK.ENABLED", "True")
    prototxt, caffemodel = export_caffe(DeployModel(model).eval(), str(tmp_path / "spp"), SIZE)
    assert "Concat" in open(prototxt).read()
    net = cv2.dnn.readNetFromCaffe(prototxt, caffemodel)
    x = images(1, 96, 160, seed=6)
    net.setInput(x.numpy(), "images")
    names = list(net.getUnconnectedOutLayersNames())
    out = dict(zip(names, net.forward(names)))
    with torch.no_grad():
        ref = DeployModel(model, raw=True)(x)
    assert ((out["heatmap"] > 0) == (ref["heatmap"].numpy() > 0)).all()
    for name in ("heatmap", "wh", "offset"):
        np.testing.assert_allclose(out[name], ref[name].numpy(), rtol=1e-4, atol=1e-5)
    with pytest.raises(ExportError, match=r"MODEL\.CENTERX\.COORD_CONV"):
        export_caffe(
            DeployModel(build("CenterNet", "MODEL.CENTERX.COORD_CONV", "True")).eval(), str(tmp_path / "coord"), SIZE
        )


# --------------------------------------------------------------------------- #
# Distiller
# --------------------------------------------------------------------------- #
def test_distilled_iou_aware_student_keeps_loss_iou_and_kd_on_heatmap_logits(tmp_path):
    """A Distiller with an IoU-aware TTFNet student (CoordConv and SPP on too)
    and a plain TTFNet teacher: the student's loss_iou is among the losses, and
    the heatmap KD term is the MSE of the two models' heatmap probabilities
    (logits through a sigmoid), not of the fused scores."""
    teacher_cfg = tiny_cfg("TTFNet", "DATASETS.TRAIN", "()", "DATASETS.TEST", "()")
    torch.manual_seed(1)
    teacher = randomize_(build_model(teacher_cfg), seed=1)
    DetectionCheckpointer(teacher, save_dir=str(tmp_path)).save("teacher")
    (tmp_path / "teacher.yaml").write_text(teacher_cfg.dump())
    cfg = tiny_cfg(
        "TTFNet",
        "MODEL.CENTERX.COORD_CONV",
        "True",
        "MODEL.CENTERX.SPP.ENABLED",
        "True",
        "MODEL.TTFNET.IOU_AWARE.ENABLED",
        "True",
        "MODEL.META_ARCHITECTURE",
        "Distiller",
        "MODEL.DISTILL.STUDENT_META_ARCHITECTURE",
        "TTFNet",
        "DATASETS.TRAIN",
        "()",
        "DATASETS.TEST",
        "()",
    )
    cfg.MODEL.DISTILL.TEACHERS = [(str(tmp_path / "teacher.yaml"), str(tmp_path / "teacher.pth"), (0, 1, 2))]
    torch.manual_seed(0)
    distiller = build_model(cfg).train()
    g = torch.Generator().manual_seed(0)
    batch = [
        {
            "image": torch.randint(0, 256, (3, 64, 64), generator=g).float(),
            "instances": Instances(
                (64, 64), gt_boxes=Boxes(torch.tensor([[4.0, 6.0, 40.0, 30.0]])), gt_classes=torch.tensor([1])
            ),
        }
        for _ in range(2)
    ]
    losses = distiller(batch)
    assert {"loss_heatmap", "loss_box", "loss_iou", "loss_kd_t0_heatmap"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    tensor = distiller.student.preprocess_image(batch).tensor
    with torch.no_grad():
        student_maps = distiller.student.predict(tensor)
        teacher_maps = distiller.teachers[0].predict(tensor)
    assert "iou" in student_maps and "iou" not in teacher_maps
    expected = np.mean((sigmoid(student_maps["heatmap"].numpy()) - sigmoid(teacher_maps["heatmap"].numpy())) ** 2)
    weight = cfg.MODEL.DISTILL.WEIGHT * cfg.MODEL.DISTILL.HEATMAP_WEIGHT
    assert float(losses["loss_kd_t0_heatmap"]) == pytest.approx(expected * weight, rel=1e-4)
