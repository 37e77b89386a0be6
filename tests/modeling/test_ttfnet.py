"""TTFNet: targets, GIoU loss, decoding, upsampler, DarkNet-53 and training.

Expected numbers come from closed forms written out here, hand-worked cases, or a
plain-loop numpy re-implementation of the authors' target code (``ttf_head.py``):
the Gaussian window of radius int(k * side / 2) cells of the box clipped to the
map, sigma = (2r + 1) / 6, every cell of the beta window a sample, owned by the
smallest box, weights log(pixel-inclusive area) * G / sum(G).
"""

import json
import math
import os

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone, build_model
from detectron2.structures import Boxes, Instances

import centerx
from centerx.modeling.backbones.darknet import DarkNet
from centerx.modeling.decode import decode_ttfnet
from centerx.modeling.losses.giou import generalized_iou, weighted_giou_loss
from centerx.modeling.targets import pad_objects
from centerx.modeling.targets.ttfnet import ttfnet_targets

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(REPO, "configs", "shapes", "ttfnet_r18_demo.yaml")
STRIDE = 4


pytestmark = pytest.mark.usefixtures("one_thread")


def demo_cfg(*opts):
    cfg = centerx.add_centerx_config(get_cfg())
    cfg.merge_from_file(DEMO)
    cfg.merge_from_list(list(opts))
    return cfg


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(demo_cfg()).eval()


# --------------------------------------------------------------------------- #
# independent reference of the targets
# --------------------------------------------------------------------------- #
def gaussian_window(cx, cy, w, h, k, H, W):
    """{(x, y): G} for the truncated Gaussian of extent k around cell (cx, cy)."""
    rx, ry = int(k * w / 2), int(k * h / 2)
    sx, sy = (2 * rx + 1) / 6, (2 * ry + 1) / 6
    out = {}
    for y in range(cy - ry, cy + ry + 1):
        for x in range(cx - rx, cx + rx + 1):
            if 0 <= x < W and 0 <= y < H:
                out[(x, y)] = math.exp(-((x - cx) ** 2) / (2 * sx * sx) - ((y - cy) ** 2) / (2 * sy * sy))
    return out


def reference_targets(boxes, classes, C, H, W, stride, alpha=0.54, beta=0.54):
    """TTFNet targets with plain loops, one object at a time, largest first, as
    the authors' ``target_single_image``: Gaussian radii from the box in cells
    clipped to [0, W - 1] x [0, H - 1], the centre cell from the unclipped box,
    every cell of the beta-Gaussian a sample, its weights normalised over all of
    them with log((w + 1)(h + 1)) (pixel-inclusive area) before smaller boxes
    overwrite cells."""
    B = len(boxes)
    hm = np.zeros((B, C, H, W))
    box_t = np.zeros((B, 4, H, W))
    weight = np.zeros((B, H, W))
    for b in range(B):
        objs = []
        for box, c in zip(np.asarray(boxes[b], dtype=np.float64).reshape(-1, 4), np.asarray(classes[b])):
            x1, y1, x2, y2 = box
            cx, cy = math.floor((x1 + x2) / 2 / stride), math.floor((y1 + y2) / 2 / stride)
            fx1, fx2 = (min(max(v / stride, 0), W - 1) for v in (x1, x2))
            fy1, fy2 = (min(max(v / stride, 0), H - 1) for v in (y1, y2))
            if x2 > x1 and y2 > y1 and 0 <= cx < W and 0 <= cy < H:
                objs.append((box, int(c), fx2 - fx1, fy2 - fy1, cx, cy, (x2 - x1 + 1) * (y2 - y1 + 1)))
        for i in sorted(range(len(objs)), key=lambda i: -objs[i][6]):  # stable: ties keep batch order
            box, c, w, h, cx, cy, area = objs[i]
            for (x, y), g in gaussian_window(cx, cy, w, h, alpha, H, W).items():
                hm[b, c, y, x] = max(hm[b, c, y, x], g)
            samples = gaussian_window(cx, cy, w, h, beta, H, W)
            total = sum(samples.values())
            for (x, y), g in samples.items():
                box_t[b, :, y, x] = box
                weight[b, y, x] = math.log(area) * g / total
    return hm, box_t, weight


def targets(boxes, classes, C, H, W, **kw):
    padded = pad_objects(
        [torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4) for b in boxes],
        [torch.as_tensor(c, dtype=torch.long) for c in classes],
    )
    return ttfnet_targets(*padded, C, (H, W), STRIDE, **kw)


# --------------------------------------------------------------------------- #
# targets
# --------------------------------------------------------------------------- #
def test_heatmap_sigma_from_alpha_closed_form():
    """A box of 22 x 14 cells with alpha 0.5: radii (int(5.5), int(3.5)) = (5, 3),
    so sigma = (11/6, 7/6) = alpha * (w, h) / 6 exactly; the profile along each
    axis is exp(-d^2 / (2 sigma^2)) and the Gaussian stops at the radius."""
    box = [20.0, 24.0, 20.0 + 88.0, 24.0 + 56.0]  # centre (64, 52) px = cell (16, 13)
    hm = targets([[box]], [[0]], 1, 32, 40, alpha=0.5)["heatmap"][0, 0]
    sx, sy = 0.5 * 22 / 6, 0.5 * 14 / 6
    assert hm[13, 16].item() == 1.0
    for d in (1, 3, 5):
        assert hm[13, 16 + d].item() == pytest.approx(math.exp(-d * d / (2 * sx * sx)), rel=1e-5)
        assert hm[13, 16 - d].item() == pytest.approx(math.exp(-d * d / (2 * sx * sx)), rel=1e-5)
    for d in (1, 3):
        assert hm[13 + d, 16].item() == pytest.approx(math.exp(-d * d / (2 * sy * sy)), rel=1e-5)
    assert hm[13, 16 + 6].item() == 0 and hm[13, 16 - 6].item() == 0
    assert hm[13 + 4, 16].item() == 0 and hm[13 - 4, 16].item() == 0


def test_heatmap_sigma_default_alpha_within_a_sixth_cell():
    """With alpha 0.54 the measured sigma (from the first neighbour's value) is
    within 1/6 cell of the paper's alpha * side / 6 for assorted sizes."""
    for w_cells, h_cells in [(10, 30), (17.5, 6.25), (40, 41)]:
        box = [8.0, 8.0, 8.0 + 4 * w_cells, 8.0 + 4 * h_cells]
        hm = targets([[box]], [[0]], 1, 64, 64)["heatmap"][0, 0]
        cy, cx = [int(v) for v in (hm == 1).nonzero()[0]]
        sx = math.sqrt(-1 / (2 * math.log(hm[cy, cx + 1].item())))
        sy = math.sqrt(-1 / (2 * math.log(hm[cy + 1, cx].item())))
        assert abs(sx - 0.54 * w_cells / 6) <= 1 / 6 + 1e-4
        assert abs(sy - 0.54 * h_cells / 6) <= 1 / 6 + 1e-4


def test_targets_match_loop_reference():
    """Random batch (overlaps within and across classes, a zero-width box, a box
    touching the border, an empty image) equals the plain-loop reference."""
    g = np.random.default_rng(3)
    boxes, classes = [], []
    for n in (7, 0, 5):
        xy = g.uniform(0, 100, (n, 2))
        wh = g.uniform(6, 80, (n, 2))
        boxes.append(np.concatenate([xy, np.minimum(xy + wh, 128)], 1))
        classes.append(g.integers(0, 3, n))
    boxes[0][1] = [30.0, 40.0, 30.0, 90.0]  # zero width: no targets
    boxes[2][0] = [0.0, 60.0, 44.0, 128.0]  # touches the left and bottom borders
    t = targets(boxes, classes, 3, 32, 32)
    hm, box_t, weight = reference_targets(boxes, classes, 3, 32, 32, STRIDE)
    np.testing.assert_allclose(t["heatmap"].numpy(), hm, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(t["box"].numpy(), box_t, rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(t["weight"].numpy(), weight, rtol=1e-5, atol=1e-6)
    assert (weight[0] > 0).sum() > 20 and (weight[2] > 0).sum() > 20  # a non-trivial case


def test_each_object_weights_sum_to_log_area():
    """Summed over its samples, an object's weights are log of its pixel-inclusive
    area (w + 1)(h + 1) in input pixels, when no smaller object takes any of them."""
    boxes = [[[4.0, 4.0, 40.0, 34.0], [70.0, 60.0, 120.0, 100.0]]]
    t = targets(boxes, [[0, 1]], 2, 32, 32)
    for box in boxes[0]:
        owned = (t["box"][0] == torch.tensor(box)[:, None, None]).all(0) & (t["weight"][0] > 0)
        area = (box[2] - box[0] + 1) * (box[3] - box[1] + 1)
        assert t["weight"][0][owned].sum().item() == pytest.approx(math.log(area), rel=1e-5)


def test_small_box_inside_large_box_owns_its_cells():
    """Every sample cell of a small box inside a large one regresses the small
    box, whichever order the boxes come in. The large box keeps the rest of its
    samples with the weights it had before (normalised over all of its samples,
    as the authors' code), so it sums to log(97 * 97) minus its Gaussian's share
    on the cells the small box took."""
    large, small = [0.0, 0.0, 96.0, 96.0], [36.0, 40.0, 60.0, 60.0]
    # large: 24 x 24 cells clipped to 23 x 23, centre cell (12, 12), beta radii int(6.21) = 6
    # small: w = 6, h = 5 cells, centre cell (12, 12), beta radii (1, 1)
    sigma = 13 / 6
    g_large = {
        (dx, dy): math.exp(-(dx * dx + dy * dy) / (2 * sigma * sigma)) for dx in range(-6, 7) for dy in range(-6, 7)
    }
    taken = sum(v for (dx, dy), v in g_large.items() if abs(dx) <= 1 and abs(dy) <= 1)
    for order in ([large, small], [small, large]):
        t = targets([order], [[0, 0]], 1, 24, 24)
        small_cells = torch.zeros(24, 24, dtype=torch.bool)
        small_cells[11:14, 11:14] = True
        assert (t["box"][0][:, small_cells] == torch.tensor(small)[:, None]).all()
        assert ((t["box"][0] == torch.tensor(large)[:, None, None]).all(0) == (t["weight"][0] > 0) & ~small_cells).all()
        large_w = t["weight"][0][~small_cells].sum().item()
        assert large_w == pytest.approx(math.log(97 * 97) * (1 - taken / sum(g_large.values())), rel=1e-5)
        assert t["weight"][0][small_cells].sum().item() == pytest.approx(math.log(25 * 21), rel=1e-5)


def test_box_beyond_border_takes_radii_from_the_clipped_box():
    """A box centred on the corner cell (0, 0), 8 x 8 cells in the image but 4 x 4
    once clipped to the map (the authors clip before the radii): radii
    int(0.54 * 4 / 2) = 1, so a 2 x 2 corner of a 3 x 3 Gaussian (sigma 1/2) is
    kept, and the centre weight is log(33 * 33) / (the sum of G over those 4 cells)."""
    t = targets([[[-16.0, -16.0, 16.0, 16.0]]], [[0]], 1, 16, 16)
    sigma = 3 / 6
    kept = sum(math.exp(-(dx * dx + dy * dy) / (2 * sigma * sigma)) for dx in range(2) for dy in range(2))
    assert t["heatmap"][0, 0, 0, 0].item() == 1.0
    assert (t["heatmap"][0, 0] > 0).sum().item() == 4
    assert (t["weight"][0] > 0).sum().item() == 4
    assert t["weight"][0, 0, 0].item() == pytest.approx(math.log(33 * 33) / kept, rel=1e-5)
    assert t["box"][0, :, 1, 1].tolist() == [-16.0, -16.0, 16.0, 16.0]


def test_box_touching_the_last_cell_hand_worked():
    """Box (48, 16, 64, 48) px on a 16 x 16 map: 4 x 8 cells in the image, x clipped
    to the last cell (15) gives w = 3 cells, so the heatmap's x radius is
    int(0.54 * 3 / 2) = 0 (the unclipped box would give int(1.08) = 1) and its y
    radius int(0.54 * 8 / 2) = 2: one column of 5 cells around the centre cell
    (14, 8), taken from the unclipped box. The samples are those 5 cells too,
    each regressing the unclipped box."""
    box = [48.0, 16.0, 64.0, 48.0]
    t = targets([[box]], [[0]], 1, 16, 16)
    hm = t["heatmap"][0, 0]
    assert hm[8, 14].item() == 1.0
    assert (hm > 0).nonzero().tolist() == [[y, 14] for y in range(6, 11)]
    assert ((t["weight"][0] > 0) == (hm > 0)).all()
    assert (t["box"][0][:, hm > 0] == torch.tensor(box)[:, None]).all()


def test_10x10_cell_box_hand_worked():
    """Box (12, 12, 52, 52) px: 10 x 10 cells, centre (32, 32) px = cell (8, 8);
    alpha and beta radii int(0.54 * 10 / 2) = 2, so a 5 x 5 Gaussian of sigma 5/6
    is both the heatmap and the 25 samples, whose weights are
    log(41 * 41) * G / (sum of G over the 25 cells)."""
    t = targets([[[12.0, 12.0, 52.0, 52.0]]], [[0]], 1, 16, 16)
    sigma = 5 / 6
    g = {(dx, dy): math.exp(-(dx * dx + dy * dy) / (2 * sigma * sigma)) for dx in range(-2, 3) for dy in range(-2, 3)}
    total = sum(g.values())
    hm, weight = t["heatmap"][0, 0], t["weight"][0]
    assert (hm > 0).sum().item() == 25 and (weight > 0).sum().item() == 25
    for (dx, dy), value in g.items():
        assert hm[8 + dy, 8 + dx].item() == pytest.approx(value, rel=1e-5)
        assert weight[8 + dy, 8 + dx].item() == pytest.approx(math.log(41 * 41) * value / total, rel=1e-5)


def test_tiny_box_regresses_from_its_centre_cell():
    """A 3 x 3 px box (5, 5, 8, 8): its centre 6.5 px is in cell 1, whose point
    (4, 4) px lies outside the box. As in the authors' code, the centre cell is
    still its one regression sample, with the whole weight log(4 * 4)."""
    t = targets([[[5.0, 5.0, 8.0, 8.0]]], [[0]], 1, 8, 8)
    assert t["heatmap"][0, 0, 1, 1].item() == 1.0 and (t["heatmap"] > 0).sum().item() == 1
    assert (t["weight"][0] > 0).nonzero().tolist() == [[1, 1]]
    assert t["weight"][0, 1, 1].item() == pytest.approx(math.log(16.0), rel=1e-6)
    assert t["weight_sum"].item() == pytest.approx(math.log(16.0), rel=1e-6)
    assert t["box"][0, :, 1, 1].tolist() == [5.0, 5.0, 8.0, 8.0]


def test_every_small_object_gets_a_regression_sample():
    """36 random boxes of 1.5 to 8 px, one per 16 px tile (no two share a cell):
    each has beta radius 0 and exactly one sample, its centre cell, regressing
    its own box with weight log((w + 1)(h + 1)) (a point inside the box or not)."""
    g = np.random.default_rng(11)
    tiles = np.stack(np.meshgrid(np.arange(6), np.arange(6)), -1).reshape(-1, 2) * 16.0
    wh = g.uniform(1.5, 8, (36, 2))
    xy = tiles + g.uniform(0, 16 - wh)
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    t = targets([boxes], [np.zeros(36, dtype=int)], 1, 24, 24)
    assert int((t["weight"][0] > 0).sum()) == 36
    for box in boxes:
        cx, cy = (int(v) for v in np.floor((box[:2] + box[2:]) / 8))
        assert t["box"][0, :, cy, cx].tolist() == box.tolist()
        area = (box[2] - box[0] + 1) * (box[3] - box[1] + 1)
        assert t["weight"][0, cy, cx].item() == pytest.approx(math.log(area), rel=1e-5)


def test_image_without_objects():
    """No objects: zero heatmap, no samples; a batch with no object at all too."""
    t = targets([np.zeros((0, 4)), [[8.0, 8.0, 40.0, 40.0]]], [[], [0]], 2, 16, 16)
    assert (t["heatmap"][0] == 0).all() and (t["weight"][0] == 0).all() and (t["box"][0] == 0).all()
    assert t["heatmap"][1, 0].max().item() == 1.0
    t = targets([np.zeros((0, 4))], [[]], 2, 16, 16)
    assert t["heatmap"].sum().item() == 0 and t["weight"].sum().item() == 0


# --------------------------------------------------------------------------- #
# GIoU
# --------------------------------------------------------------------------- #
def test_giou_hand_values():
    """identical: 1; disjoint [0,0,1,1] vs [2,0,3,1]: 0 - (3 - 2) / 3;
    nested [0,0,4,4] vs [1,1,3,3]: 4 / 16; zero-area point inside a box: 0 - 0."""
    pred = torch.tensor([[1.0, 2.0, 5.0, 7.0], [0, 0, 1, 1], [0, 0, 4, 4], [2, 2, 2, 2]])
    target = torch.tensor([[1.0, 2.0, 5.0, 7.0], [2, 0, 3, 1], [1, 1, 3, 3], [0, 0, 4, 4]])
    expected = torch.tensor([1.0, -1 / 3, 0.25, 0.0])
    torch.testing.assert_close(generalized_iou(pred, target), expected)
    loss = weighted_giou_loss(pred, target, torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert loss.item() == pytest.approx((0 + 2 * 4 / 3 + 3 * 0.75 + 4 * 1) / 10, rel=1e-6)
    assert weighted_giou_loss(pred[:1], target[:1], torch.ones(1)).item() == 0.0


def test_giou_zero_area_boxes_no_nan():
    """Zero-area predictions and targets (even both the same point) give finite
    losses and gradients."""
    pred = torch.tensor([[3.0, 3.0, 3.0, 3.0], [0, 0, 0, 5], [1, 1, 1, 1]], requires_grad=True)
    target = torch.tensor([[0.0, 0.0, 6.0, 6.0], [0, 0, 0, 5], [1, 1, 1, 1]])
    loss = weighted_giou_loss(pred, target, torch.ones(3))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pred.grad).all()
    assert loss.item() == pytest.approx(1.0)  # GIoU 0 for each: no overlap area, no enclosure penalty


def test_giou_no_samples_is_zero_and_differentiable():
    pred = torch.zeros(0, 4, requires_grad=True)
    loss = weighted_giou_loss(pred, torch.zeros(0, 4), torch.zeros(0))
    loss.backward()
    assert loss.item() == 0.0 and pred.grad.shape == (0, 4)


# --------------------------------------------------------------------------- #
# the model: losses and decoding
# --------------------------------------------------------------------------- #
def ltrb_from_targets(t):
    """Exact l, t, r, b maps at the sample cells, from the cell points (x * 4, y * 4)."""
    H, W = t["weight"].shape[-2:]
    py, px = torch.meshgrid(torch.arange(H) * STRIDE, torch.arange(W) * STRIDE, indexing="ij")
    box = t["box"]
    return torch.stack((px - box[:, 0], py - box[:, 1], box[:, 2] - px, box[:, 3] - py), 1) * (t["weight"] > 0)[:, None]


def test_box_loss_against_numpy_giou(model):
    """loss_box = 5 * sum w (1 - GIoU) / sum w, with predictions l = t = r = b = 8 px
    around each cell point (x * 4, y * 4), recomputed here with numpy loops."""
    boxes = [[[8.0, 12.0, 72.0, 52.0], [40.0, 30.0, 60.0, 70.0]], [[0.0, 0.0, 30.0, 20.0]]]
    classes = [[0, 2], [3]]
    gt = [
        Instances((96, 96), gt_boxes=Boxes(torch.tensor(b)), gt_classes=torch.tensor(c)) for b, c in zip(boxes, classes)
    ]
    outputs = {"heatmap": torch.zeros(2, 4, 24, 24), "ltrb": torch.full((2, 4, 24, 24), 8.0)}
    losses = model.losses(outputs, gt)
    _, box_t, weight = reference_targets(boxes, classes, 4, 24, 24, STRIDE)
    num = den = 0.0
    for b, y, x in zip(*np.nonzero(weight)):
        p = (x * 4 - 8, y * 4 - 8, x * 4 + 8, y * 4 + 8)
        t = box_t[b, :, y, x]
        inter = max(0, min(p[2], t[2]) - max(p[0], t[0])) * max(0, min(p[3], t[3]) - max(p[1], t[1]))
        union = 256 + (t[2] - t[0]) * (t[3] - t[1]) - inter
        encl = (max(p[2], t[2]) - min(p[0], t[0])) * (max(p[3], t[3]) - min(p[1], t[1]))
        num += weight[b, y, x] * (1 - (inter / union - (encl - union) / encl))
        den += weight[b, y, x]
    assert losses["loss_box"].item() == pytest.approx(5 * num / den, rel=1e-5)
    assert set(losses) == {"loss_heatmap", "loss_box"}

    outputs["ltrb"] = ltrb_from_targets(targets(boxes, classes, 4, 24, 24))
    assert model.losses(outputs, gt)["loss_box"].item() == pytest.approx(0.0, abs=1e-6)


def test_dead_ltrb_gives_finite_losses_and_grads(model):
    """All-zero l, t, r, b (a dead ReLU: zero-area boxes) and an image without
    objects: finite losses and gradients."""
    gt = [
        Instances((64, 64), gt_boxes=Boxes(torch.tensor([[4.0, 4.0, 40.0, 30.0]])), gt_classes=torch.tensor([1])),
        Instances((64, 64), gt_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0, dtype=torch.long)),
    ]
    ltrb = torch.zeros(2, 4, 16, 16, requires_grad=True)
    heat = torch.zeros(2, 4, 16, 16, requires_grad=True)
    losses = model.losses({"heatmap": heat, "ltrb": ltrb}, gt)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert torch.isfinite(ltrb.grad).all() and torch.isfinite(heat.grad).all()
    assert losses["loss_box"].item() == pytest.approx(5.0)  # GIoU 0 at every sample


def test_decoding_targets_gives_back_the_boxes(model):
    """Logit(target heatmap) and exact l, t, r, b maps of a hand-built image decode
    to its boxes and classes, rescaled to the requested original size (x2)."""
    boxes = [[8.0, 12.0, 40.0, 52.0], [52.0, 8.0, 92.0, 40.0], [60.0, 60.0, 84.0, 92.0]]
    classes = [2, 0, 3]
    t = targets([boxes], [classes], 4, 24, 24)
    outputs = {"heatmap": torch.logit(t["heatmap"].clamp(1e-4, 1 - 1e-4)), "ltrb": ltrb_from_targets(t)}
    det = decode_ttfnet(outputs["heatmap"], outputs["ltrb"], 3, STRIDE)
    order = det["boxes"][0][:, 0].argsort()
    torch.testing.assert_close(det["boxes"][0][order], torch.tensor(boxes))
    assert det["classes"][0][order].tolist() == classes

    results = model.postprocess(model.inference(outputs, [(96, 96)]), [{"height": 192, "width": 192}], [(96, 96)])
    inst = results[0]["instances"]
    top = inst.scores.argsort(descending=True)[:3]
    order = top[inst.pred_boxes.tensor[top, 0].argsort()]
    torch.testing.assert_close(inst.pred_boxes.tensor[order], torch.tensor(boxes) * 2)
    assert inst.pred_classes[order].tolist() == classes
    assert inst.image_size == (192, 192)


# --------------------------------------------------------------------------- #
# upsampler and DarkNet-53
# --------------------------------------------------------------------------- #
def test_box_head_outputs_relu_times_base():
    """l, t, r, b = ReLU(last conv output) * BOX_BASE: with zero weights the output
    is ReLU(bias) * 16 at every cell."""
    from centerx.modeling.heads import TTFNetHeads

    heads = TTFNetHeads(8, 3, box_base=16.0)
    with torch.no_grad():
        for m in heads.ltrb.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.zero_()
        heads.ltrb.layers[-1].bias.copy_(torch.tensor([-1.0, 0.5, 1.0, 2.0]))
        ltrb = heads(torch.randn(2, 8, 5, 7))["ltrb"]
    assert ltrb.shape == (2, 4, 5, 7)
    assert torch.equal(ltrb, torch.tensor([0.0, 8.0, 16.0, 32.0])[None, :, None, None].expand(2, 4, 5, 7))


def test_upsampler_shortcuts_follow_backbone_strides():
    """With DarkNet stages the shortcuts come from dark4, dark3, dark2 with 1, 2, 3
    convs (SHORTCUT_CONVS), a 0 removes one, and the output has stride 4."""
    from centerx.modeling.necks import TTFNetUpsampler

    shapes = {f"dark{k}": ShapeSpec(channels=8 * 2**k, stride=2**k) for k in (2, 3, 4, 5)}
    up = TTFNetUpsampler(shapes, list(shapes), (16, 12, 8), (1, 2, 3))
    assert up.shortcut_features == ["dark4", "dark3", "dark2"]
    n_convs = {k: sum(isinstance(m, torch.nn.Conv2d) for m in v.modules()) for k, v in up.shortcuts.items()}
    assert n_convs == {"dark4": 1, "dark3": 2, "dark2": 3}
    feats = {k: torch.randn(1, s.channels, 64 // s.stride, 96 // s.stride) for k, s in shapes.items()}
    assert up(feats).shape == (1, 8, 16, 24) and up.out_stride == 4

    up = TTFNetUpsampler(shapes, list(shapes), (16, 12, 8), (0, 2, 0)).eval()
    assert up.shortcut_features == [None, "dark3", None]
    changed = dict(feats, dark2=torch.randn_like(feats["dark2"]), dark4=torch.randn_like(feats["dark4"]))
    assert torch.equal(up(feats), up(changed))


def test_pointwise_shortcuts_add_a_channel_mix_of_the_backbone_feature():
    """SHORTCUT_KERNEL_SIZE 1: the shortcut is one 1x1 conv (weights [out, in, 1, 1]),
    so a one-stage upsampler gives stage(x) + W @ f + b at every cell, f the
    stride-8 feature: checked against an einsum. Other sizes are refused by name."""
    from centerx.modeling.necks import TTFNetUpsampler

    shapes = {"dark3": ShapeSpec(channels=6, stride=8), "dark4": ShapeSpec(channels=10, stride=16)}
    up = TTFNetUpsampler(shapes, list(shapes), (5,), (1,), shortcut_kernel_size=1).eval()
    (conv,) = [m for m in up.shortcuts["dark3"].modules() if isinstance(m, torch.nn.Conv2d)]
    assert conv.weight.shape == (5, 6, 1, 1)
    torch.nn.init.normal_(conv.bias)
    feats = {"dark3": torch.randn(2, 6, 4, 6), "dark4": torch.randn(2, 10, 2, 3)}
    mixed = torch.einsum("oc,nchw->nohw", conv.weight[:, :, 0, 0], feats["dark3"]) + conv.bias[None, :, None, None]
    with torch.no_grad():
        expected = up.stages[0](feats["dark4"]) + mixed
        assert torch.allclose(up(feats), expected, atol=1e-6)
    with pytest.raises(ValueError, match="SHORTCUT_KERNEL_SIZE must be 1 or 3; got 5"):
        TTFNetUpsampler(shapes, list(shapes), (5,), (1,), shortcut_kernel_size=5)


def darknet_num_params(blocks):
    """Closed form: 3x3 stem (3 -> 32), per stage a 3x3 stride-2 conv c -> 2c and
    blocks of 1x1 (2c -> c) + 3x3 (c -> 2c); every conv has a norm (2 params per channel)."""
    total = 3 * 32 * 9 + 2 * 32
    c = 32
    for n in blocks:
        total += c * 2 * c * 9 + 2 * 2 * c
        total += n * (2 * c * c + 2 * c + c * 2 * c * 9 + 2 * 2 * c)
        c *= 2
    return total


def test_darknet53_shapes_and_strides():
    """DarkNet-53: 52 convs, the closed-form parameter count, dark2..dark5 at strides
    4..32 with 128..1024 channels, also through the registry / config."""
    cfg = centerx.add_centerx_config(get_cfg())
    cfg.MODEL.BACKBONE.NAME = "build_darknet_backbone"
    net = build_backbone(cfg, ShapeSpec(channels=3)).eval()
    assert sum(isinstance(m, torch.nn.Conv2d) for m in net.modules()) == 52
    assert sum(p.numel() for p in net.parameters()) == darknet_num_params((1, 2, 8, 8, 4))
    with torch.no_grad():
        outs = net(torch.randn(1, 3, 64, 96))
    expected = {"dark2": (128, 4), "dark3": (256, 8), "dark4": (512, 16), "dark5": (1024, 32)}
    assert list(outs) == net._out_features == list(expected)
    for name, (c, s) in expected.items():
        assert outs[name].shape == (1, c, 64 // s, 96 // s)
        assert (net.output_shape()[name].channels, net.output_shape()[name].stride) == (c, s)
    assert net.size_divisibility == 32


def test_darknet_loads_local_weights(tmp_path):
    """A .pth state dict (with a DataParallel "module." prefix) built here from another
    DarkNet with random values loads tensor for tensor; outputs match the source."""
    torch.manual_seed(0)
    source = DarkNet((1, 1, 1, 1, 1)).eval()
    g = torch.Generator().manual_seed(1)
    state = {
        k: (torch.rand(v.shape, generator=g) + 0.5 if v.is_floating_point() else v)
        for k, v in source.state_dict().items()
    }
    source.load_state_dict(state)
    path = tmp_path / "darknet.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, path)

    cfg = centerx.add_centerx_config(get_cfg())
    cfg.MODEL.BACKBONE.NAME = "build_darknet_backbone"
    cfg.MODEL.DARKNET.STAGE_BLOCKS = [1, 1, 1, 1, 1]
    cfg.MODEL.CENTERX.BACKBONE_WEIGHTS = str(path)
    net = build_backbone(cfg, ShapeSpec(channels=3)).eval()
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k]), k
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(net(x)["dark5"], source(x)["dark5"])


# --------------------------------------------------------------------------- #
# training
# --------------------------------------------------------------------------- #
@pytest.mark.slow
def test_overfit_one_batch_losses_drop():
    """Training on one fixed 96-px batch (boxes painted on noise, no augmentation)
    for 80 iterations drives the heatmap loss down >= 100x and the GIoU box loss
    >= 2x (measured: 3.09 -> 0.0003 and 2.24 -> 0.80)."""
    torch.manual_seed(0)
    model = build_model(demo_cfg())
    model.train()
    boxes = [
        torch.tensor([[8.0, 10.0, 32.0, 30.0], [50.0, 44.0, 74.0, 72.0]]),
        torch.tensor([[20.0, 52.0, 48.0, 76.0], [60.0, 12.0, 80.0, 36.0]]),
    ]
    classes = [torch.tensor([0, 2]), torch.tensor([3, 1])]
    g = torch.Generator().manual_seed(0)
    batch = []
    for b, c in zip(boxes, classes):
        image = torch.randint(60, 120, (3, 96, 96), generator=g).float()
        for k, (x1, y1, x2, y2) in enumerate(b.long().tolist()):
            image[:, y1:y2, x1:x2] = torch.tensor([220.0, 40.0, 120.0 + 60 * k])[:, None, None]
        batch.append({"image": image, "instances": Instances((96, 96), gt_boxes=Boxes(b), gt_classes=c)})
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [55], 0.1)
    losses = []
    for _ in range(80):
        terms = model(batch)
        loss = sum(terms.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append({k: v.item() for k, v in terms.items()})
    assert losses[-1]["loss_heatmap"] < losses[0]["loss_heatmap"] / 100, losses[::10]
    assert losses[-1]["loss_box"] < losses[0]["loss_box"] / 2, losses[::10]


@pytest.mark.slow
def test_train_then_evaluate_with_coco_evaluator(tiny_shapes, tmp_path):
    """train_net.py's main trains TTFNet on generated shapes and evaluates with
    COCOEvaluator: AP > 0 and well above the same model's AP before training
    (trained and tested on the same 8 images). 40 iterations are noisy: final AP
    over data seeds 1 / 2 / 3 was 10.8 / 12.0 / 2.9 with the default stream."""
    from centerx.engine import Trainer

    import train_net

    name, _ = tiny_shapes
    opts = [
        "DATASETS.TRAIN",
        f"('{name}',)",
        "DATASETS.TEST",
        f"('{name}',)",
        "INPUT.TRAIN_SIZE",
        "96",
        "INPUT.MIN_SIZE_TEST",
        "96",
        "INPUT.MAX_SIZE_TEST",
        "96",
        "INPUT.SCALE_RANGE",
        "(0.9, 1.1)",
        "SOLVER.IMS_PER_BATCH",
        "4",
        "SOLVER.MAX_ITER",
        "40",
        "SOLVER.WARMUP_ITERS",
        "10",
        "SOLVER.STEPS",
        "()",
        "SOLVER.CHECKPOINT_PERIOD",
        "100000",
        "DATALOADER.NUM_WORKERS",
        "0",
        "OUTPUT_DIR",
        str(tmp_path),
        "SEED",
        "1",
    ]
    train_net.main(train_net.argument_parser().parse_args(["--config-file", DEMO, *opts]))
    with open(tmp_path / "metrics.json") as f:
        records = [json.loads(line) for line in f]
    ap = [r["bbox/AP"] for r in records if "bbox/AP" in r]

    cfg = demo_cfg(*opts)
    torch.manual_seed(3)
    untrained = Trainer.test(cfg, build_model(cfg))["bbox"]["AP"]
    assert ap and ap[-1] > 0 and ap[-1] > untrained + 3, (ap, untrained)
