"""Peak masking, top-K decoding and the CenterNet inference path.

Expected values come from the `==` definition of a peak, hand-built maps whose
boxes are computed here by CenterNet's decoding formula, and target/decode round trips.
"""

import math
import os

import pytest
import torch
import torch.nn.functional as F

from centerx.modeling.decode import decode_centernet, peak_mask, topk_peaks
from centerx.modeling.targets import centernet_targets, pad_objects


def eq_peaks(heat):
    """The reference definition: heat where it equals its 3x3 max-pool, else 0."""
    return (heat == F.max_pool2d(heat, 3, stride=1, padding=1)).to(heat.dtype) * heat


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


# --------------------------------------------------------------------------- #
# peak_mask
# --------------------------------------------------------------------------- #
def test_peak_mask_equals_eq_definition_fp32():
    """Random FP32 maps (scores in [0.05, 0.95]): identical to (heat == maxpool) * heat."""
    g = torch.Generator().manual_seed(0)
    heat = torch.rand(3, 4, 17, 13, generator=g) * 0.9 + 0.05
    out = peak_mask(heat)
    assert torch.equal(out, eq_peaks(heat))
    assert (out > 0).sum() > 0 and (out == 0).sum() > 0


def test_peak_mask_near_ties_fp32():
    """Neighbours one float32 ulp below a peak are suppressed, the peak kept exactly."""
    heat = torch.full((1, 1, 5, 5), 0.1)
    heat[0, 0, 2, 2] = 0.6
    heat[0, 0, 2, 3] = torch.nextafter(torch.tensor(0.6), torch.tensor(0.0))
    out = peak_mask(heat)
    assert torch.equal(out, eq_peaks(heat))
    assert out[0, 0, 2, 2].item() == heat[0, 0, 2, 2].item() and out[0, 0, 2, 3].item() == 0.0


def test_peak_mask_keeps_plateaus():
    """Two equal neighbouring maxima are both kept, as `==` does."""
    g = torch.Generator().manual_seed(1)
    heat = torch.rand(1, 2, 9, 9, generator=g) * 0.8 + 0.05
    heat[0, 0, 4, 4] = heat[0, 0, 4, 5] = 0.97
    heat[0, 1, 2, 2] = heat[0, 1, 3, 3] = heat[0, 1, 2, 3] = 0.99
    out = peak_mask(heat)
    assert torch.equal(out, eq_peaks(heat))
    assert out[0, 0, 4, 4].item() == out[0, 0, 4, 5].item() == pytest.approx(0.97)
    assert out[0, 1, 2, 2].item() == out[0, 1, 3, 3].item() == out[0, 1, 2, 3].item() == pytest.approx(0.99)


def test_peak_mask_fp16_finite_and_same_peaks():
    """FP16: no NaN / inf, and the same peaks (same values) as FP32 for a map whose
    values are exactly representable in FP16 (multiples of 1/1024)."""
    g = torch.Generator().manual_seed(2)
    heat32 = torch.randint(51, 973, (2, 3, 12, 10), generator=g).float() / 1024
    heat32[0, 0, 5, 5] = heat32[0, 0, 5, 6] = 1.0  # plateau at the top score
    out16 = peak_mask(heat32.half())
    assert out16.dtype == torch.float16
    assert torch.isfinite(out16).all()
    assert torch.equal(out16.float(), eq_peaks(heat32))


def test_design_1e9_trick_is_nan_in_fp16():
    """Documents why peak_mask does not use the original centerX's ReLU * 1e9 trick: in FP16, 1e-9 -> 0 and
    1e9 -> inf, so keep = ReLU(heat - hmax + 1e-9) * 1e9 is 0 * inf = NaN at every
    cell (peaks and non-peaks alike), while peak_mask stays exact on the same map."""
    heat = (torch.arange(1, 26, dtype=torch.float32).view(1, 1, 5, 5) / 32).half()
    hmax = F.max_pool2d(heat, 3, stride=1, padding=1)
    keep = F.relu(heat - hmax + torch.tensor(1e-9, dtype=torch.float16)) * torch.tensor(1e9, dtype=torch.float16)
    trick = heat * keep
    assert torch.tensor(1e-9, dtype=torch.float16).item() == 0.0
    assert torch.isinf(torch.tensor(1e9, dtype=torch.float16))
    assert torch.isnan(trick).all()
    out = peak_mask(heat)
    assert torch.isfinite(out).all() and out[0, 0, 4, 4].item() == 25 / 32


# --------------------------------------------------------------------------- #
# decode_centernet on hand-built maps
# --------------------------------------------------------------------------- #
C, H, W, STRIDE = 3, 8, 10, 4
# (class, y, x, logit, w, h, ox, oy): dyadic numbers, so every box is exact in float32
PEAKS = [
    (1, 2, 3, 10.0, 3.5, 2.25, 0.25, 0.75),
    (2, 6, 1, 8.0, 1.0, 4.0, 0.5, 0.0),
    (0, 5, 7, 5.0, 6.0, 3.0, 0.125, 0.5),
]


def hand_maps(peaks=PEAKS, shape=(C, H, W), background=-10.0):
    c, h, w = shape
    logits = torch.full((1, c, h, w), background)
    wh = torch.zeros(1, 2, h, w)
    off = torch.zeros(1, 2, h, w)
    for cls, y, x, logit, bw, bh, ox, oy in peaks:
        logits[0, cls, y, x] = logit
        wh[0, :, y, x] = torch.tensor([bw, bh])
        off[0, :, y, x] = torch.tensor([ox, oy])
    return logits, wh, off


def expected_box(y, x, bw, bh, ox, oy, stride=STRIDE):
    cx, cy = x + ox, y + oy
    return [(cx - bw / 2) * stride, (cy - bh / 2) * stride, (cx + bw / 2) * stride, (cy + bh / 2) * stride]


def test_decode_hand_built_peaks():
    """Boxes = ((x+ox -/+ w/2) * stride, (y+oy -/+ h/2) * stride) exactly, classes
    and scores sigmoid(logit), sorted by score."""
    logits, wh, off = hand_maps()
    det = decode_centernet(logits, wh, off, k=3, stride=STRIDE)
    assert det["boxes"].shape == (1, 3, 4)
    order = sorted(PEAKS, key=lambda p: -p[3])
    assert det["boxes"][0].tolist() == [expected_box(p[1], p[2], *p[4:]) for p in order]
    assert det["classes"][0].tolist() == [p[0] for p in order]
    assert det["classes"].dtype == torch.int64
    for s, p in zip(det["scores"][0].tolist(), order):
        assert s == pytest.approx(sigmoid(p[3]), rel=1e-6)


def test_decode_top1_and_suppressed_neighbours():
    """k=1 returns only the best peak; a neighbour of a peak with a lower but still
    high score is not a detection (it is masked by the 3x3 max)."""
    peaks = PEAKS + [(1, 2, 4, 9.0, 2.0, 2.0, 0.0, 0.0)]  # right next to the +10 peak
    logits, wh, off = hand_maps(peaks)
    det = decode_centernet(logits, wh, off, k=4, stride=STRIDE)
    assert det["classes"][0, 0].item() == 1
    assert det["boxes"][0, 0].tolist() == expected_box(2, 3, 3.5, 2.25, 0.25, 0.75)
    # the +9 cell is suppressed: the 4th detection is background, not (1, 2, 4)
    assert det["scores"][0, :3].tolist() == pytest.approx([sigmoid(10), sigmoid(8), sigmoid(5)], rel=1e-6)
    assert det["scores"][0, 3].item() == pytest.approx(sigmoid(-10), rel=1e-5)
    top1 = decode_centernet(logits, wh, off, k=1, stride=STRIDE)
    assert top1["boxes"].shape == (1, 1, 4) and top1["classes"].tolist() == [[1]]


def test_decode_k_larger_than_map():
    """k > C*H*W still returns k rows: the 3 peaks, then the flat background
    (every background cell equals its max-pool, score sigmoid(-10)), then score
    0: the 8 neighbours of each peak and the k - C*H*W rows beyond the map's
    cells (class 0, the box of cell (0, 0))."""
    logits, wh, off = hand_maps()
    k = 10_000
    det = decode_centernet(logits, wh, off, k=k, stride=STRIDE)
    n = C * H * W
    assert det["scores"].shape == (1, k) and det["boxes"].shape == (1, k, 4)
    scores = det["scores"][0]
    assert (scores[:-1] >= scores[1:]).all()
    n_zero = 3 * 8  # all three peaks are interior cells
    assert (scores == 0).sum().item() == n_zero + (k - n)
    bg = scores[3 : n - n_zero]
    assert torch.allclose(bg, torch.full_like(bg, sigmoid(-10)), rtol=1e-5)
    beyond = slice(n, None)
    assert (det["classes"][0, beyond] < C).all()


def test_topk_peaks_coordinates():
    """topk_peaks returns class, flat index y*W+x and the x, y cell coordinates."""
    heat = torch.zeros(2, 3, 4, 5)
    heat[0, 2, 3, 1] = 0.9
    heat[0, 0, 1, 4] = 0.8
    heat[1, 1, 0, 0] = 0.7
    scores, classes, index, xs, ys = topk_peaks(heat, 2)
    assert scores[0].tolist() == pytest.approx([0.9, 0.8])
    assert classes[0].tolist() == [2, 0] and index[0].tolist() == [3 * 5 + 1, 1 * 5 + 4]
    assert xs[0].tolist() == [1.0, 4.0] and ys[0].tolist() == [3.0, 1.0]
    assert classes[1, 0].item() == 1 and index[1, 0].item() == 0


def test_targets_decode_round_trip():
    """Targets of some boxes turned into perfect maps (logit of the target heatmap,
    wh / offset written at the index cells) decode back to the same boxes, as the
    targets see them: clipped to the last cell's point ((W - 1) * 4, (H - 1) * 4)
    px, the original CenterNet's convention (the last box spans the image)."""
    boxes = [
        torch.tensor([[10.3, 12.7, 50.1, 40.9], [70.2, 5.5, 90.0, 60.25], [3.0, 70.0, 33.3, 95.1]]),
        torch.tensor([[40.0, 40.0, 41.5, 47.0], [0.0, 0.0, 127.0, 95.0]]),
    ]
    classes = [torch.tensor([0, 1, 0]), torch.tensor([1, 1])]
    Hm, Wm, s = 24, 32, 4
    t = centernet_targets(*pad_objects(boxes, classes), num_classes=2, output_size=(Hm, Wm), stride=s, max_objects=8)
    hm = t["heatmap"].clamp(1e-6, 1 - 1e-6)
    logits = torch.log(hm / (1 - hm))
    wh = torch.zeros(2, 2, Hm, Wm)
    off = torch.zeros(2, 2, Hm, Wm)
    for b in range(2):
        for k in range(t["mask"].shape[1]):
            if t["mask"][b, k] == 1:
                y, x = divmod(int(t["index"][b, k]), Wm)
                wh[b, :, y, x] = t["wh"][b, k]
                off[b, :, y, x] = t["offset"][b, k]
    det = decode_centernet(logits, wh, off, k=3, stride=s)
    for b, (bx, cl) in enumerate(zip(boxes, classes)):
        n = len(bx)
        got = sorted(zip(det["boxes"][b, :n].tolist(), det["classes"][b, :n].tolist()))
        clipped = torch.stack([bx[:, 0::2].clamp(0, (Wm - 1) * s), bx[:, 1::2].clamp(0, (Hm - 1) * s)], -1)
        exp = sorted(zip(clipped.reshape(-1, 4).tolist(), cl.tolist()))  # rows (x1, y1), (x2, y2)
        for (gb, gc), (eb, ec) in zip(got, exp):
            assert gc == ec
            assert gb == pytest.approx(eb, abs=1e-4)
        assert det["scores"][b, :n].min().item() > 0.99
        if n < 3:
            assert det["scores"][b, n].item() < 1e-3


# --------------------------------------------------------------------------- #
# the CenterNet model's inference path
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def tiny_cfg():
    from detectron2.config import get_cfg

    import centerx  # noqa: F401  (registers the backbone and meta-architecture)
    from centerx.config import add_centerx_config

    cfg = add_centerx_config(get_cfg())
    cfg.merge_from_file(os.path.join(os.path.dirname(__file__), "..", "..", "configs", "Base-CenterNet.yaml"))
    cfg.merge_from_list(
        [
            "MODEL.DEVICE",
            "cpu",
            "MODEL.CENTERNET.NUM_CLASSES",
            3,
            "MODEL.CENTERNET.UPSAMPLE_CHANNELS",
            [8, 8, 8],
            "MODEL.CENTERNET.HEAD_CHANNELS",
            8,
            "MODEL.CENTERX.BACKBONE_WEIGHTS",
            "",
        ]
    )
    return cfg


@pytest.fixture(scope="module")
def default_model(tiny_cfg):
    return _build(tiny_cfg)


def _build(cfg, **overrides):
    from detectron2.modeling import build_model

    cfg = cfg.clone()
    cfg.merge_from_list([x for kv in overrides.items() for x in kv])
    return build_model(cfg).eval()


def _fake_predict(maps, seen):
    def predict(images):
        seen.append(tuple(images.shape))
        return maps

    return predict


def test_inference_rescales_to_requested_size(default_model, monkeypatch):
    """Boxes come back in the input dict's height/width: here 2x the input image,
    so every box is 2x the decoded input-pixel box."""
    model = default_model
    logits, wh, off = hand_maps(shape=(3, 16, 16))  # 64x64 padded input at stride 4
    seen = []
    monkeypatch.setattr(model, "predict", _fake_predict({"heatmap": logits, "wh": wh, "offset": off}, seen))
    Hi, Wi = 40, 48
    with torch.no_grad():
        out = model([{"image": torch.zeros(3, Hi, Wi), "height": 2 * Hi, "width": 2 * Wi}])
    assert seen == [(1, 3, 64, 64)]
    inst = out[0]["instances"]
    assert inst.image_size == (2 * Hi, 2 * Wi)
    order = sorted(PEAKS, key=lambda p: -p[3])
    expected = torch.tensor([[2 * v for v in expected_box(p[1], p[2], *p[4:])] for p in order])
    assert len(inst) == 3
    torch.testing.assert_close(inst.pred_boxes.tensor, expected)
    assert inst.pred_classes.tolist() == [p[0] for p in order]
    assert inst.scores.tolist() == pytest.approx([sigmoid(p[3]) for p in order], rel=1e-6)


def test_inference_honours_topk_and_score_threshold(tiny_cfg, monkeypatch):
    """TEST.DETECTIONS_PER_IMAGE caps the detections (highest first) and
    MODEL.CENTERNET.SCORE_THRESH_TEST drops lower scores."""
    logits, wh, off = hand_maps(shape=(3, 16, 16))
    maps = {"heatmap": logits, "wh": wh, "offset": off}
    inputs = [{"image": torch.zeros(3, 40, 48)}]
    model = _build(tiny_cfg, **{"TEST.DETECTIONS_PER_IMAGE": 2})
    monkeypatch.setattr(model, "predict", _fake_predict(maps, []))
    with torch.no_grad():
        inst = model(inputs)[0]["instances"]
    assert inst.scores.tolist() == pytest.approx([sigmoid(10), sigmoid(8)], rel=1e-6)

    model = _build(tiny_cfg, **{"MODEL.CENTERNET.SCORE_THRESH_TEST": 0.9997})  # between sig(8) and sig(10)
    monkeypatch.setattr(model, "predict", _fake_predict(maps, []))
    with torch.no_grad():
        inst = model(inputs)[0]["instances"]
    assert inst.scores.tolist() == pytest.approx([sigmoid(10)], rel=1e-6)
    assert inst.pred_classes.tolist() == [1]


def test_inference_default_threshold_drops_background(default_model, monkeypatch):
    """The default SCORE_THRESH_TEST (0.01) drops the flat background (sigmoid(-10)),
    which the peak mask alone keeps (every cell of a plateau is a peak)."""
    logits, wh, off = hand_maps(shape=(3, 16, 16))
    monkeypatch.setattr(default_model, "predict", _fake_predict({"heatmap": logits, "wh": wh, "offset": off}, []))
    with torch.no_grad():
        inst = default_model([{"image": torch.zeros(3, 40, 48)}])[0]["instances"]
    assert len(inst) == 3
    assert inst.scores.tolist() == pytest.approx([sigmoid(10), sigmoid(8), sigmoid(5)], rel=1e-6)


def test_inference_batch_of_two_sizes_padded_to_32(default_model, monkeypatch):
    """Two images of different sizes are padded together to a multiple of 32, and
    each image's boxes are rescaled with its own input size / requested size."""
    model = default_model
    peaks_a = [(0, 3, 4, 6.0, 4.0, 2.0, 0.5, 0.5)]  # box inside image a (48 x 40)
    peaks_b = [(2, 12, 3, 7.0, 2.0, 6.0, 0.25, 0.0)]  # box inside image b (33 x 70)
    la, wa, oa = hand_maps(peaks_a, shape=(3, 24, 16))
    lb, wb, ob = hand_maps(peaks_b, shape=(3, 24, 16))
    maps = {"heatmap": torch.cat([la, lb]), "wh": torch.cat([wa, wb]), "offset": torch.cat([oa, ob])}
    seen = []
    monkeypatch.setattr(model, "predict", _fake_predict(maps, seen))
    inputs = [
        {"image": torch.zeros(3, 40, 48), "height": 80, "width": 96},  # padded batch:
        {"image": torch.zeros(3, 70, 33), "height": 35, "width": 33},
    ]  # 96 x 64
    with torch.no_grad():
        out = model(inputs)
    assert seen == [(2, 3, 96, 64)]
    a, b = out[0]["instances"], out[1]["instances"]
    assert a.image_size == (80, 96) and b.image_size == (35, 33)
    box_a = expected_box(3, 4, 4.0, 2.0, 0.5, 0.5)
    box_b = expected_box(12, 3, 2.0, 6.0, 0.25, 0.0)
    torch.testing.assert_close(a.pred_boxes.tensor, torch.tensor([[2 * v for v in box_a]]))
    torch.testing.assert_close(b.pred_boxes.tensor, torch.tensor([[box_b[0], box_b[1] / 2, box_b[2], box_b[3] / 2]]))
    assert a.pred_classes.tolist() == [0] and b.pred_classes.tolist() == [2]
