"""Deployment: the export wrapper, ONNX / Caffe / TensorRT exports and the runtimes.

Every expected value is computed independently of the code under test: the
model's own detectron2 inference path (list of dicts -> Instances), a numpy
top-K decode written out here, the `==` definition of a peak, or geometry of a
drawn rectangle. The random-init model gets random BatchNorm statistics,
He-initialised upsampler convs and N(0, 0.1) heads so that its heatmap has many
distinct peaks (an untouched init is nearly flat and full of ties).
"""

import contextlib
import copy
import logging
import os

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from centerx.deploy import DeployModel, ExportError, build_deploy_model, decode_raw_outputs
from centerx.deploy.caffe_export import CaffeNetBuilder, _peak_mask, export_caffe
from centerx.deploy.letterbox import Letterbox
from centerx.deploy.onnx_export import export_onnx
from centerx.deploy.runtimes import CaffeRuntime, OnnxRuntime, TensorRTRuntime, TorchRuntime
from centerx.deploy.tensorrt_engine import TensorRTUnavailable, build_engine, import_tensorrt

from project_scripts import load_script
from tiny_models import SIZE, K, build, images, tiny_cfg

ort = pytest.importorskip("onnxruntime")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STRIDE = 4


pytestmark = pytest.mark.usefixtures("one_thread")


def instances_of(model, x):
    """The model's own inference path (detectron2 dicts -> Instances, padded
    batch, clipping, score threshold) on input pixels [N, 3, H, W]."""
    with torch.no_grad():
        return [o["instances"] for o in model([{"image": im} for im in x])]


def eq_peaks(heat):
    """Reference definition of a peak: heat where it equals its 3x3 max-pool, else 0."""
    return (heat == F.max_pool2d(heat, 3, stride=1, padding=1)).to(heat.dtype) * heat


def numpy_decode(heatmap, wh, offset, k, stride):
    """Top-k of peak-masked CenterNet maps in numpy: boxes (x1, y1, x2, y2) pixels."""
    n, c, h, w = heatmap.shape
    flat = heatmap.reshape(n, -1)
    order = np.argsort(-flat, axis=1, kind="stable")[:, :k]
    scores = np.take_along_axis(flat, order, axis=1)
    classes, cell = order // (h * w), order % (h * w)
    ys, xs = cell // w, cell % w
    boxes = np.zeros((n, k, 4), dtype=np.float64)
    for i in range(n):
        for j in range(k):
            y, x = ys[i, j], xs[i, j]
            cx, cy = x + offset[i, 0, y, x], y + offset[i, 1, y, x]
            bw, bh = wh[i, 0, y, x], wh[i, 1, y, x]
            boxes[i, j] = np.array([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2]) * stride
    return boxes, scores, classes


@pytest.fixture(scope="module")
def centernet():
    return build("CenterNet")


@pytest.fixture(scope="module")
def onnx_files(centernet, tmp_path_factory):
    """The model exported once decoded and once raw, traced at batch 1 and SIZE."""
    root = tmp_path_factory.mktemp("onnx")
    decoded, raw = str(root / "model.onnx"), str(root / "model_raw.onnx")
    assert export_onnx(DeployModel(centernet).eval(), decoded, SIZE) == ["boxes", "scores", "classes"]
    assert export_onnx(DeployModel(centernet, raw=True).eval(), raw, SIZE) == ["heatmap", "wh", "offset"]
    return decoded, raw


def run_onnx(path, x):
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"images": x.numpy()})))


# --------------------------------------------------------------------------- #
# ONNX
# --------------------------------------------------------------------------- #
def test_onnx_contract(onnx_files):
    """Input / output names, dtypes and dynamic axes of the export contract (docs/design.md)."""
    for path, outputs in zip(onnx_files, (("boxes", "scores", "classes"), ("heatmap", "wh", "offset"))):
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        (inp,) = session.get_inputs()
        assert inp.name == "images" and inp.type == "tensor(float)"
        assert isinstance(inp.shape[0], str) and isinstance(inp.shape[2], str) and isinstance(inp.shape[3], str)
        assert tuple(o.name for o in session.get_outputs()) == outputs
    decoded = ort.InferenceSession(onnx_files[0], providers=["CPUExecutionProvider"]).get_outputs()
    assert [o.type for o in decoded] == ["tensor(float)", "tensor(float)", "tensor(int64)"]
    assert decoded[0].shape[1:] == [K, 4] and decoded[1].shape[1:] == [K] and decoded[2].shape[1:] == [K]


@pytest.mark.parametrize("shape", [(1, *SIZE), (2, 96, 160)], ids=["traced-shape", "batch2-96x160"])
def test_onnx_matches_pytorch_inference(centernet, onnx_files, shape):
    """ONNX Runtime's decoded outputs = the PyTorch model's own inference
    (Instances) on the same pixels: same classes in the same order, boxes and
    scores within 1e-4 relative; also at a batch and size not traced."""
    x = images(*shape, seed=1)
    out = run_onnx(onnx_files[0], x)
    assert out["boxes"].shape == (shape[0], K, 4) and out["classes"].dtype == np.int64
    for i, inst in enumerate(instances_of(centernet, x)):
        assert len(inst) == K
        scores = inst.scores.numpy()
        assert np.diff(scores).max() < -1e-6, "test precondition: distinct scores, so the order is defined"
        boxes = out["boxes"][i].copy()
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, shape[2])
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, shape[1])
        np.testing.assert_array_equal(out["classes"][i], inst.pred_classes.numpy())
        np.testing.assert_allclose(out["scores"][i], scores, rtol=1e-4)
        np.testing.assert_allclose(boxes, inst.pred_boxes.tensor.numpy(), rtol=1e-4, atol=1e-3)


def test_onnx_raw_outputs_decode_to_the_decoded_outputs(centernet, onnx_files):
    """The raw graph's heatmap is the `==` peak mask of the model's sigmoid
    heatmap; a numpy top-K decode of the raw outputs gives the decoded graph's
    outputs, and so does decode_raw_outputs (the runtimes' path)."""
    x = images(2, 96, 128, seed=2)
    raw, dec = run_onnx(onnx_files[1], x), run_onnx(onnx_files[0], x)
    with torch.no_grad():
        logits = centernet.predict((x - centernet.pixel_mean) / centernet.pixel_std)["heatmap"]
    expected_heat = eq_peaks(torch.sigmoid(logits)).numpy()
    assert ((raw["heatmap"] > 0) == (expected_heat > 0)).all()
    np.testing.assert_allclose(raw["heatmap"], expected_heat, rtol=1e-5, atol=1e-7)

    boxes, scores, classes = numpy_decode(raw["heatmap"], raw["wh"], raw["offset"], K, STRIDE)
    np.testing.assert_array_equal(dec["classes"], classes)
    np.testing.assert_allclose(dec["scores"], scores, rtol=1e-6)
    np.testing.assert_allclose(dec["boxes"], boxes, rtol=1e-5, atol=1e-4)

    det = decode_raw_outputs(centernet, {k: torch.from_numpy(v) for k, v in raw.items()})
    np.testing.assert_array_equal(det["classes"].numpy(), classes)
    np.testing.assert_allclose(det["scores"].numpy(), scores, rtol=1e-6)
    np.testing.assert_allclose(det["boxes"].numpy(), boxes, rtol=1e-5, atol=1e-4)


def test_ttfnet_shares_the_wrapper(tmp_path):
    """TTFNet goes through the same wrapper: its ONNX export equals its own
    inference, and its raw outputs are ``heatmap`` + ``ltrb``."""
    model = build("TTFNet")
    path = str(tmp_path / "ttfnet.onnx")
    export_onnx(DeployModel(model).eval(), path, SIZE)
    x = images(1, 96, 128, seed=3)
    with torch.no_grad():
        assert list(DeployModel(model, raw=True)(x).keys()) == ["heatmap", "ltrb"]
    out = run_onnx(path, x)
    (inst,) = instances_of(model, x)
    assert np.diff(inst.scores.numpy()).max() < -1e-6
    boxes = out["boxes"][0].clip(0, [128, 96, 128, 96])
    np.testing.assert_array_equal(out["classes"][0], inst.pred_classes.numpy())
    np.testing.assert_allclose(out["scores"][0], inst.scores.numpy(), rtol=1e-4)
    np.testing.assert_allclose(boxes, inst.pred_boxes.tensor.numpy(), rtol=1e-4, atol=1e-3)


def test_deformable_export_refused_below_opset_19_and_exact_at_19(tmp_path):
    """A DCN model: a clear error naming the config key at opset 17; at opset 19
    ONNX DeformConv, which ONNX Runtime runs like torchvision's deform_conv2d."""
    model = build("CenterNet", "MODEL.CENTERNET.DEFORMABLE", "True")
    with torch.no_grad():  # non-zero sampling offsets, so the deformation matters
        for m in model.upsampler.modules():
            if hasattr(m, "offset_mask"):
                m.offset_mask.weight.normal_(0, 0.01)
    wrapper = DeployModel(model, raw=True).eval()
    with pytest.raises(ExportError, match=r"MODEL\.CENTERNET\.DEFORMABLE"):
        export_onnx(wrapper, str(tmp_path / "dcn17.onnx"), SIZE, opset=17)
    assert not (tmp_path / "dcn17.onnx").exists()
    path = str(tmp_path / "dcn19.onnx")
    export_onnx(wrapper, path, SIZE, opset=19)
    x = images(1, *SIZE, seed=4)
    out = run_onnx(path, x)
    with torch.no_grad():
        ref = wrapper(x)
    for name in ("wh", "offset"):
        np.testing.assert_allclose(out[name], ref[name].numpy(), rtol=1e-4, atol=1e-6)


@contextlib.contextmanager
def export_cli_errors():
    """projects/speedup/export.py's module and the list its ERROR log lines go to meanwhile."""
    cli = load_script("speedup", "export")
    errors = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = lambda record: errors.append(record.getMessage())
    cli.logger.addHandler(handler)
    try:
        yield cli, errors
    finally:
        cli.logger.removeHandler(handler)


def test_export_cli(tmp_path):
    """projects/speedup/export.py: no weights refused with exit code 2 naming
    MODEL.WEIGHTS; with --allow-random-weights the ONNX file is written; DCN
    refused with exit code 2 and an error log line naming the config key."""
    base = [
        "--config-file",
        os.path.join(REPO, "configs", "shapes", "centernet_r18_demo.yaml"),
        "--output",
        str(tmp_path),
    ]
    small = ["EXPORT.INPUT_SIZE", "(64, 64)", "MODEL.CENTERNET.UPSAMPLE_CHANNELS", "[32, 32, 32]"]
    with export_cli_errors() as (cli, errors):
        assert cli.main(base + ["--format", "onnx", "--raw"] + small) == 2
        assert not (tmp_path / "model_raw.onnx").exists()
        assert len(errors) == 1 and "MODEL.WEIGHTS is empty" in errors[0] and "--allow-random-weights" in errors[0]
        errors.clear()
        assert cli.main(base + ["--format", "onnx", "--raw", "--allow-random-weights"] + small) == 0
        assert (tmp_path / "model_raw.onnx").exists() and not errors
        assert (
            cli.main(
                base + ["--format", "onnx", "--allow-random-weights"] + small + ["MODEL.CENTERNET.DEFORMABLE", "True"]
            )
            == 2
        )
    assert not (tmp_path / "model.onnx").exists()
    assert len(errors) == 1 and "MODEL.CENTERNET.DEFORMABLE" in errors[0]


def test_openvino_refuses_deformable_convs_naming_the_key(tmp_path):
    """OpenVINO's ONNX reader has no DeformConv: ``--format openvino --opset 19`` of a DCN
    model is exit code 2 and one error line naming the config key, no stack trace, no file."""
    pytest.importorskip("openvino")
    argv = ["--config-file", os.path.join(REPO, "configs", "shapes", "centernet_r18_demo.yaml"), "--output",
            str(tmp_path), "--format", "openvino", "--opset", "19", "--allow-random-weights",
            "EXPORT.INPUT_SIZE", "(64, 64)", "MODEL.CENTERNET.UPSAMPLE_CHANNELS", "[32, 32, 32]",
            "MODEL.CENTERNET.DEFORMABLE", "True"]  # fmt: skip
    with export_cli_errors() as (cli, errors):
        assert cli.main(argv) == 2
    assert len(errors) == 1 and "MODEL.CENTERNET.DEFORMABLE False" in errors[0] and "OpenVINO" in errors[0]
    assert not list(tmp_path.glob("model*"))


# --------------------------------------------------------------------------- #
# half precision
# --------------------------------------------------------------------------- #
def test_fp16_wrapper_finds_the_same_peaks(centernet):
    """The whole wrapper in FP16 on CPU: finite outputs, and wherever a cell's
    peak status is decided by more than twice the FP16 error of the heatmap it
    agrees with FP32; the decoded top-K rows with clear margins are found too."""
    half = copy.deepcopy(centernet).half()
    x = images(1, *SIZE, seed=5)
    with torch.no_grad():
        raw32, dec32 = DeployModel(centernet, raw=True)(x), DeployModel(centernet)(x)
        raw16, dec16 = DeployModel(half, raw=True)(x.half()), DeployModel(half)(x.half())
        heat32 = torch.sigmoid(centernet.predict((x - centernet.pixel_mean) / centernet.pixel_std)["heatmap"])
        heat16 = torch.sigmoid(half.predict((x.half() - half.pixel_mean) / half.pixel_std)["heatmap"])
    assert raw16["heatmap"].dtype == torch.float16
    assert all(torch.isfinite(v).all() for v in list(raw16.values()) + list(dec16.values()))
    torch.testing.assert_close(raw16["heatmap"], eq_peaks(heat16), rtol=0, atol=0)

    err = (heat16.float() - heat32).abs().max().item()
    assert err < 5e-3
    h, w = heat32.shape[-2:]
    padded = F.pad(heat32, (1, 1, 1, 1), value=-1.0)
    shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    best_neighbour = torch.stack([padded[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy, dx in shifts]).amax(0)
    clear = (heat32 - best_neighbour).abs() > 2 * err
    assert clear.float().mean() > 0.9
    peaks32, peaks16 = raw32["heatmap"] > 0, raw16["heatmap"] > 0
    assert torch.equal(peaks16[clear], peaks32[clear])
    assert (peaks32 & clear).sum() > 4 * K

    found = 0
    for i in range(x.shape[0]):
        kth = dec32["scores"][i, -1]
        for box, score, cls in zip(dec32["boxes"][i], dec32["scores"][i], dec32["classes"][i]):
            if score - kth <= 2 * err:
                continue
            same = (dec16["classes"][i] == cls) & ((dec16["boxes"][i].float() - box).abs().amax(-1) < 0.5)
            assert same.sum() == 1 and abs(dec16["scores"][i][same].float().item() - score) <= err
            found += 1
    assert found >= K // 2


# --------------------------------------------------------------------------- #
# Caffe
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def caffe_files(centernet, tmp_path_factory):
    return export_caffe(DeployModel(centernet).eval(), str(tmp_path_factory.mktemp("caffe") / "model"), SIZE)


def test_caffe_matches_pytorch(centernet, caffe_files):
    """OpenCV's Caffe importer runs the export (at another batch and size than
    its Input layer) with the same peaks and maps as the PyTorch raw outputs."""
    net = cv2.dnn.readNetFromCaffe(*caffe_files)
    x = images(2, 96, 160, seed=6)
    net.setInput(x.numpy(), "images")
    names = list(net.getUnconnectedOutLayersNames())
    assert sorted(names) == ["heatmap", "offset", "wh"]
    out = dict(zip(names, net.forward(names)))
    with torch.no_grad():
        logits = centernet.predict((x - centernet.pixel_mean) / centernet.pixel_std)
    expected_heat = eq_peaks(torch.sigmoid(logits["heatmap"])).numpy()
    assert ((out["heatmap"] > 0) == (expected_heat > 0)).all()
    np.testing.assert_allclose(out["heatmap"], expected_heat, rtol=1e-4, atol=1e-6)
    for name in ("wh", "offset"):
        np.testing.assert_allclose(out[name], logits[name].numpy(), rtol=1e-4, atol=1e-5)


def test_caffe_peak_mask_is_the_eq_mask_on_hand_built_maps(tmp_path):
    """The Caffe layers' arithmetic peak mask, run by OpenCV's DNN, keeps exactly
    the cells equal to their 3x3 max: a neighbour one float32 ulp below a peak is
    dropped, plateaus of equal maxima are kept whole, a peak at the border is kept."""
    heat = np.zeros((1, 2, 6, 7), np.float32)  # zeros stay 0, masked or not
    heat[0, 0, 2, 2] = 0.6
    heat[0, 0, 3, 1] = 0.2
    heat[0, 0, 2, 3] = np.nextafter(np.float32(0.6), np.float32(0))
    heat[0, 0, 5, 6] = 0.3
    heat[0, 1, 1, 1] = heat[0, 1, 1, 2] = heat[0, 1, 2, 1] = 0.97
    heat[0, 1, 4, 4] = 0.5
    heat[0, 1, 4, 5] = 0.25
    heat[0, 1, 3, 2] = 0.96
    b = CaffeNetBuilder("peaks")
    _peak_mask(b, b.input("heat", heat.shape), "heatmap")
    path = tmp_path / "peaks.prototxt"
    path.write_text(str(b.net))
    net = cv2.dnn.readNetFromCaffe(str(path))
    net.setInput(heat, "heat")
    out = net.forward("heatmap")
    expected = np.zeros_like(heat)
    for c, y, x in [(0, 2, 2), (0, 5, 6), (1, 1, 1), (1, 1, 2), (1, 2, 1), (1, 4, 4)]:
        expected[0, c, y, x] = heat[0, c, y, x]
    np.testing.assert_array_equal(out, expected)


def test_caffe_prototxt_is_standard_caffe(caffe_files):
    """Only layer types of BVLC Caffe; the stem pooling is not the ceil-mode
    stride-2 pooling that would give one row too many."""
    text = open(caffe_files[0]).read()
    types = {line.split('"')[1] for line in text.splitlines() if line.strip().startswith("type:")}
    assert types <= {
        "Input",
        "Scale",
        "Convolution",
        "Deconvolution",
        "BatchNorm",
        "ReLU",
        "Pooling",
        "Eltwise",
        "Power",
        "Sigmoid",
    }
    assert "stride: 2" not in text.split('name: "backbone.maxpool"')[1].split("layer {")[0]


def test_caffe_refuses_ttfnet_and_deformable(tmp_path):
    with pytest.raises(ExportError, match="bilinear"):
        export_caffe(DeployModel(build("TTFNet")).eval(), str(tmp_path / "t"), SIZE)
    with pytest.raises(ExportError, match=r"MODEL\.CENTERNET\.DEFORMABLE False"):
        export_caffe(
            DeployModel(build("CenterNet", "MODEL.CENTERNET.DEFORMABLE", "True")).eval(), str(tmp_path / "d"), SIZE
        )


# --------------------------------------------------------------------------- #
# pre-processing and runtimes
# --------------------------------------------------------------------------- #
def test_letterbox_geometry_and_mapping_back():
    """A 60x90 BGR image with a white rectangle: scaled by 128/90 at the
    top-left of the canvas, padded with the pixel mean, RGB order; the
    rectangle found in the canvas maps back onto the original one."""
    img = np.zeros((60, 90, 3), dtype=np.uint8)
    img[:, :, 0] = 200  # blue
    img[10:30, 20:50] = 255
    lb = Letterbox(SIZE, "RGB", (1.0, 2.0, 3.0))
    (batch, (scale,)) = lb([img])[0], lb([img])[1]
    assert batch.shape == (1, 3, 128, 128) and batch.dtype == np.float32
    assert scale == pytest.approx((85 / 60, 128 / 90))
    assert (batch[0, :, 85:, :] == np.array([1.0, 2.0, 3.0])[:, None, None]).all()
    assert batch[0, 2, 5, 5] == 200 and batch[0, 0, 5, 5] == 0  # blue is the last channel in RGB
    ys, xs = np.nonzero(batch[0, 0] > 128)
    found = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=np.float32)
    np.testing.assert_allclose(Letterbox.to_original(found, scale, img.shape), [[20, 10, 50, 30]], atol=1.0)
    clipped = Letterbox.to_original(np.array([[-10, -10, 500, 500]], dtype=np.float32), scale, img.shape)
    np.testing.assert_array_equal(clipped, [[0, 0, 90, 60]])


def test_runtimes_give_the_same_detections(centernet, onnx_files, caffe_files, tmp_path):
    """PyTorch, ONNX Runtime (decoded and raw) and Caffe-via-OpenCV runtimes on
    the same two BGR images of other sizes: the same detections in original
    pixels, and those equal the model's inference on the letterboxed pixels."""
    cfg = tiny_cfg()
    weights = str(tmp_path / "model.pth")
    torch.save({"model": centernet.state_dict()}, weights)
    cfg.MODEL.WEIGHTS = weights
    rng = np.random.RandomState(0)
    imgs = [rng.randint(0, 256, (100, 150, 3), dtype=np.uint8), rng.randint(0, 256, (140, 90, 3), dtype=np.uint8)]
    runtimes = [
        TorchRuntime(cfg),
        OnnxRuntime(cfg, onnx_files[0]),
        OnnxRuntime(cfg, onnx_files[1]),
        CaffeRuntime(cfg, *caffe_files),
    ]
    results = [rt(imgs) for rt in runtimes]

    batch, scales = runtimes[0].letterbox(imgs)
    for i, (img, inst) in enumerate(zip(imgs, instances_of(centernet, torch.from_numpy(batch)))):
        keep = inst.scores.numpy() > runtimes[0].score_thresh
        sy, sx = scales[i]
        h, w = img.shape[:2]
        expected = inst.pred_boxes.tensor.numpy()[keep] / np.array([sx, sy, sx, sy])
        expected = np.minimum(expected, [w, h, w, h])
        for rt, res in zip(runtimes, results):
            np.testing.assert_array_equal(res[i]["classes"], inst.pred_classes.numpy()[keep], err_msg=rt.name)
            np.testing.assert_allclose(res[i]["scores"], inst.scores.numpy()[keep], rtol=1e-4, err_msg=rt.name)
            np.testing.assert_allclose(res[i]["boxes"], expected, rtol=1e-4, atol=1e-3, err_msg=rt.name)


def test_distiller_config_deploys_its_student():
    """A Distiller config (teachers not needed) deploys its student: the wrapper
    holds the student's meta-architecture and the runtimes its score threshold."""
    cfg = tiny_cfg("CenterNet", "MODEL.META_ARCHITECTURE", "Distiller", "MODEL.CENTERNET.SCORE_THRESH_TEST", "0.3")
    wrapper = build_deploy_model(cfg, allow_random=True)
    assert type(wrapper.model).__name__ == "CenterNet" and not wrapper.training
    assert TorchRuntime(cfg, allow_random=True).score_thresh == pytest.approx(0.3)


# --------------------------------------------------------------------------- #
# TensorRT
# --------------------------------------------------------------------------- #
def _tensorrt_missing() -> str:
    """Why TensorRT cannot run here ("" where it can); checked before any fixture is built."""
    try:
        import_tensorrt()
    except TensorRTUnavailable as e:
        return str(e)
    return ""


@pytest.mark.skipif(bool(_tensorrt_missing()), reason=f"needs TensorRT and an NVIDIA GPU: {_tensorrt_missing()}")
@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
def test_tensorrt_engine_matches_onnx(centernet, onnx_files, tmp_path, fp16):
    """FP32 / FP16 engines from the decoded ONNX file, batch 2: the detections
    with clear score margins are found with the same class and box."""
    cfg = tiny_cfg()
    engine = build_engine(onnx_files[0], str(tmp_path / "model.engine"), SIZE, max_batch=2, fp16=fp16)
    x = images(2, *SIZE, seed=7)
    out = TensorRTRuntime(cfg, engine).infer(x.numpy())
    ref = run_onnx(onnx_files[0], x)
    tol = 5e-3 if fp16 else 1e-4
    for i in range(2):
        for box, score, cls in zip(ref["boxes"][i], ref["scores"][i], ref["classes"][i]):
            if score - ref["scores"][i, -1] <= 2 * tol:
                continue
            same = (out["classes"][i] == cls) & (np.abs(out["boxes"][i] - box).max(-1) < (0.5 if fp16 else 1e-2))
            assert same.sum() == 1 and abs(out["scores"][i][same][0] - score) <= tol
