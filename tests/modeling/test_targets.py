"""CenterNet targets: Gaussian radius, Gaussian splats and the per-object targets.

Expected numbers come from closed forms written out here, hand-worked cases, or a
plain-loop numpy re-implementation of the original CenterNet's target code
(``ctdet.py``: boxes clipped to the last output cell, radius of the ceiled size,
truncated, splats max-combined).
"""

import math

import numpy as np
import pytest
import torch

from centerx.modeling.targets import pad_objects
from centerx.modeling.targets.centernet import centernet_targets as _centernet_targets
from centerx.modeling.targets.gaussian import draw_gaussians, gaussian_radius


# --------------------------------------------------------------------------- #
# independent reference implementations
# --------------------------------------------------------------------------- #
def centernet_targets(boxes, classes, *args, **kwargs):
    """The targets of per-image box / class lists (padded as the models pad them)."""
    return _centernet_targets(*pad_objects(boxes, classes), *args, **kwargs)


def _window(radii):
    """The tightest window for [N, 2] radii."""
    return (int(radii[:, 0].max()), int(radii[:, 1].max())) if len(radii) else (0, 0)


def radius_corrected(h, w, m):
    """Proper roots of CornerNet's three IoU quadratics, derived from the geometry.

    case 1 (both corners shifted the same way): (w-r)(h-r) / (2wh - (w-r)(h-r)) = m
    case 2 (box shrunk by r on each side):       (w-2r)(h-2r) / (wh) = m
    case 3 (box grown by r on each side):        wh / ((w+2r)(h+2r)) = m
    """
    s = h + w
    r1 = (s - math.sqrt(s * s - 4 * w * h * (1 - m) / (1 + m))) / 2
    r2 = (2 * s - math.sqrt(4 * s * s - 16 * (1 - m) * w * h)) / 8
    r3 = (-2 * m * s + math.sqrt(4 * m * m * s * s + 16 * m * (1 - m) * w * h)) / (8 * m)
    return min(r1, r2, r3)


def radius_original(h, w, m):
    """CornerNet / CenterNet's ``gaussian_radius`` as published (b + sqrt(D)) / 2 everywhere."""
    a1, b1, c1 = 1, h + w, w * h * (1 - m) / (1 + m)
    r1 = (b1 + math.sqrt(b1**2 - 4 * a1 * c1)) / 2
    a2, b2, c2 = 4, 2 * (h + w), (1 - m) * w * h
    r2 = (b2 + math.sqrt(b2**2 - 4 * a2 * c2)) / 2
    a3, b3, c3 = 4 * m, -2 * m * (h + w), (m - 1) * w * h
    r3 = (b3 + math.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def _radius(h, w, m, mode):
    return radius_corrected(h, w, m) if mode == "corrected" else radius_original(h, w, m)


def clipped_cells(box, stride, H, W):
    """A box in input pixels -> in cells, x clipped to [0, W - 1] and y to [0, H - 1]."""
    x1, y1, x2, y2 = (float(v) / stride for v in box)
    return (min(max(x1, 0), W - 1), min(max(y1, 0), H - 1), min(max(x2, 0), W - 1), min(max(y2, 0), H - 1))


def reference_heatmap(boxes, classes, num_classes, H, W, stride, m, mode):
    """CenterNet-style heatmap with plain loops: box clipped to the last cell,
    radius from the ceil of its size, int(r), square (2r+1)^2 window,
    sigma = (2r+1)/6, max-combined."""
    hm = np.zeros((len(boxes), num_classes, H, W), dtype=np.float64)
    for b, (bx, cl) in enumerate(zip(boxes, classes)):
        for box, c in zip(np.asarray(bx, dtype=np.float64), np.asarray(cl)):
            x1, y1, x2, y2 = clipped_cells(box, stride, H, W)
            w, h = x2 - x1, y2 - y1
            if w <= 0 or h <= 0:
                continue
            ix, iy = int(math.floor((x1 + x2) / 2)), int(math.floor((y1 + y2) / 2))
            r = max(0, int(_radius(math.ceil(h), math.ceil(w), m, mode)))
            sigma = (2 * r + 1) / 6
            for dy in range(-r, r + 1):
                for dx in range(-r, r + 1):
                    x, y = ix + dx, iy + dy
                    if 0 <= x < W and 0 <= y < H:
                        g = math.exp(-(dx * dx + dy * dy) / (2 * sigma * sigma))
                        hm[b, c, y, x] = max(hm[b, c, y, x], g)
    return hm


def _draw(H, W, centers, radii, classes=None, C=1):
    """Draw objects into one fresh [1, C, H, W] map."""
    n = len(centers)
    hm = torch.zeros(1, C, H, W)
    classes = torch.zeros(n, dtype=torch.long) if classes is None else torch.as_tensor(classes)
    r = torch.as_tensor(radii, dtype=torch.long)
    if r.dim() == 1:
        r = r[:, None].expand(-1, 2)
    return draw_gaussians(
        hm, torch.zeros(n, dtype=torch.long), classes, torch.as_tensor(centers, dtype=torch.long), r, _window(r)
    )


# --------------------------------------------------------------------------- #
# gaussian_radius
# --------------------------------------------------------------------------- #
SIZES = [(10, 10), (1, 1), (3, 17), (40, 6), (128, 96), (2, 50)]


@pytest.mark.parametrize("mode, ref", [("corrected", radius_corrected), ("original", radius_original)])
def test_radius_matches_closed_form(mode, ref):
    """Both modes equal their closed forms (written out above) for assorted sizes and overlaps."""
    for m in (0.7, 0.5, 0.9):
        h = torch.tensor([s[0] for s in SIZES], dtype=torch.float32)
        w = torch.tensor([s[1] for s in SIZES], dtype=torch.float32)
        got = gaussian_radius(h, w, m, mode)
        expected = torch.tensor([ref(a, b, m) for a, b in SIZES], dtype=torch.float32)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)


def test_radius_design_example_10x10():
    """A 10x10-cell box gives r = 2.73 ("original") vs 0.82 ("corrected") at 0.7."""
    t = torch.tensor([10.0])
    assert round(float(gaussian_radius(t, t, 0.7, "original")), 2) == 2.73
    assert round(float(gaussian_radius(t, t, 0.7, "corrected")), 2) == 0.82


def test_corrected_radius_keeps_min_overlap():
    """The corrected radius is the largest shift keeping IoU >= min_overlap: the
    IoU of every case is >= m and the tightest case hits m exactly."""
    m = 0.7
    for h, w in SIZES:
        r = float(gaussian_radius(torch.tensor([float(h)]), torch.tensor([float(w)]), m, "corrected"))
        inter1 = (w - r) * (h - r)
        ious = [inter1 / (2 * w * h - inter1), (w - 2 * r) * (h - 2 * r) / (w * h), w * h / ((w + 2 * r) * (h + 2 * r))]
        assert min(ious) == pytest.approx(m, abs=1e-5)


def test_radius_invalid_mode():
    """An unknown RADIUS_MODE is a ValueError, not a silent default."""
    with pytest.raises(ValueError):
        gaussian_radius(torch.tensor([10.0]), torch.tensor([10.0]), 0.7, "paper")


# --------------------------------------------------------------------------- #
# draw_gaussians
# --------------------------------------------------------------------------- #
def test_gaussian_peak_and_profile():
    """Centre is exactly 1; neighbours follow exp(-d^2 / (2 sigma^2)), sigma = (2r+1)/6."""
    r = 2
    sigma = (2 * r + 1) / 6
    hm = _draw(11, 11, [[5, 5]], [r])[0, 0]
    assert hm[5, 5].item() == 1.0
    for dy, dx in [(0, 1), (1, 0), (1, 1), (0, 2), (2, 2), (-2, 1)]:
        expected = math.exp(-(dx * dx + dy * dy) / (2 * sigma * sigma))
        assert hm[5 + dy, 5 + dx].item() == pytest.approx(expected, rel=1e-5)


def test_gaussian_zero_outside_window():
    """Only the (2r+1)^2 square around the centre is non-zero."""
    r = 2
    hm = _draw(12, 13, [[6, 5]], [r])[0, 0]
    inside = torch.zeros(12, 13, dtype=torch.bool)
    inside[5 - r : 5 + r + 1, 6 - r : 6 + r + 1] = True
    assert (hm[~inside] == 0).all()
    assert (hm[inside] > 0).all()


def test_gaussian_radius_zero_is_single_cell():
    """r = 0 marks only the centre cell, with value 1."""
    hm = _draw(5, 5, [[2, 3]], [0])[0, 0]
    expected = torch.zeros(5, 5)
    expected[3, 2] = 1.0
    assert torch.equal(hm, expected)


def test_gaussian_truncated_at_border():
    """Centres at corners / edges are truncated without error; the kept part equals
    the same Gaussian drawn in the middle of a larger map."""
    r = 3
    big = _draw(21, 21, [[10, 10]], [r])[0, 0]
    hm = _draw(8, 9, [[0, 0], [8, 7], [4, 0]], [r, r, r], classes=[0, 1, 2], C=3)[0]
    torch.testing.assert_close(hm[0, : r + 1, : r + 1], big[10:14, 10:14])  # top-left corner
    torch.testing.assert_close(hm[1, 7 - r :, 8 - r :], big[7:11, 7:11])  # bottom-right corner
    torch.testing.assert_close(hm[2, : r + 1, 4 - r : 4 + r + 1], big[10:14, 7:14])  # top edge
    assert hm.sum(dim=(1, 2)).tolist() == pytest.approx(
        [big[10:14, 10:14].sum().item(), big[7:11, 7:11].sum().item(), big[10:14, 7:14].sum().item()]
    )


def test_overlapping_gaussians_combine_by_max():
    """Two overlapping objects of one class give the element-wise max of the two
    drawn separately (not the sum)."""
    a = _draw(16, 16, [[5, 6]], [3])
    b = _draw(16, 16, [[8, 7]], [2])
    both = _draw(16, 16, [[5, 6], [8, 7]], [3, 2])
    assert torch.equal(both, torch.maximum(a, b))
    assert (a * b).sum() > 0  # they really overlap


def test_classes_and_images_do_not_interact():
    """Objects of different classes / images land in their own planes only."""
    hm = torch.zeros(2, 3, 10, 10)
    draw_gaussians(
        hm,
        torch.tensor([0, 0, 1]),
        torch.tensor([0, 2, 2]),
        torch.tensor([[4, 4], [5, 4], [4, 5]]),
        torch.tensor([[2, 2], [2, 2], [1, 1]]),
        (2, 2),
    )
    single = _draw(10, 10, [[4, 4]], [2])[0, 0]
    assert torch.equal(hm[0, 0], single)
    assert torch.equal(hm[0, 2], _draw(10, 10, [[5, 4]], [2])[0, 0])
    assert torch.equal(hm[1, 2], _draw(10, 10, [[4, 5]], [1])[0, 0])
    assert (hm[0, 1] == 0).all() and (hm[1, 0] == 0).all() and (hm[1, 1] == 0).all()


def test_elliptical_radii():
    """Different rx, ry give a separable Gaussian with its own sigma per axis."""
    hm = _draw(11, 15, [[7, 5]], [[4, 1]])[0, 0]
    sx, sy = 9 / 6, 3 / 6
    assert hm[5, 11].item() == pytest.approx(math.exp(-16 / (2 * sx * sx)), rel=1e-5)
    assert hm[6, 7].item() == pytest.approx(math.exp(-1 / (2 * sy * sy)), rel=1e-5)
    assert (hm[:4] == 0).all() and (hm[7:] == 0).all()
    assert (hm[:, :3] == 0).all() and (hm[:, 12:] == 0).all()


# --------------------------------------------------------------------------- #
# centernet_targets
# --------------------------------------------------------------------------- #
def test_single_object_targets():
    """Box (10, 18, 30, 42) at stride 4: centre (5, 7.5) -> cell (5, 7), index 7*W+5,
    wh (5, 6) cells, offset (0, 0.5), mask 1 in slot 0 only."""
    H, W = 16, 12
    t = centernet_targets(
        [torch.tensor([[10.0, 18.0, 30.0, 42.0]])],
        [torch.tensor([2])],
        num_classes=3,
        output_size=(H, W),
        stride=4,
        max_objects=4,
    )
    assert t["heatmap"].shape == (1, 3, H, W)
    assert t["heatmap"][0, 2, 7, 5].item() == 1.0
    assert t["heatmap"][0, 2].max().item() == 1.0
    assert (t["heatmap"][0, :2] == 0).all()
    assert t["index"].tolist() == [[7 * W + 5, 0, 0, 0]]
    assert t["wh"][0, 0].tolist() == [5.0, 6.0]
    assert t["offset"][0, 0].tolist() == [0.0, 0.5]
    assert t["mask"].tolist() == [[1.0, 0.0, 0.0, 0.0]]
    assert (t["wh"][0, 1:] == 0).all() and (t["offset"][0, 1:] == 0).all()
    assert t["num_skipped"] == 0


def _slot_rows(t, b):
    """Set of (index, w, h, ox, oy) for the real objects of image b."""
    rows = set()
    for k in range(t["mask"].shape[1]):
        if t["mask"][b, k] == 1:
            rows.add(
                (
                    int(t["index"][b, k]),
                    *(round(v, 5) for v in t["wh"][b, k].tolist()),
                    *(round(v, 5) for v in t["offset"][b, k].tolist()),
                )
            )
    return rows


def _expected_row(box, stride, W, H):
    x1, y1, x2, y2 = clipped_cells(box, stride, H, W)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    ix, iy = math.floor(cx), math.floor(cy)
    return (iy * W + ix, round(x2 - x1, 5), round(y2 - y1, 5), round(cx - ix, 5), round(cy - iy, 5))


def test_batch_with_different_object_counts():
    """Image 0 has one object, image 1 three: every image gets exactly its own
    objects' index / wh / offset, mask counts 1 and 3, heatmap peaks per image."""
    H, W, s = 20, 24, 4
    b0 = [[8.0, 8.0, 40.0, 30.0]]
    b1 = [[50.0, 10.0, 70.0, 26.0], [4.0, 40.0, 21.0, 77.0], [60.0, 50.0, 90.0, 70.0]]
    t = centernet_targets(
        [torch.tensor(b0), torch.tensor(b1)],
        [torch.tensor([1]), torch.tensor([0, 1, 0])],
        num_classes=2,
        output_size=(H, W),
        stride=s,
        max_objects=5,
    )
    assert t["mask"].sum(1).tolist() == [1.0, 3.0]
    assert _slot_rows(t, 0) == {_expected_row(b, s, W, H) for b in b0}
    assert _slot_rows(t, 1) == {_expected_row(b, s, W, H) for b in b1}
    ref = reference_heatmap([b0, b1], [[1], [0, 1, 0]], 2, H, W, s, 0.7, "original")
    np.testing.assert_allclose(t["heatmap"].numpy(), ref, atol=1e-6)
    assert (t["heatmap"] == 1).sum().item() == 4


def test_image_without_objects():
    """An empty image (in a batch, or alone) gives a zero heatmap and mask."""
    t = centernet_targets(
        [torch.zeros(0, 4), torch.tensor([[4.0, 4.0, 20.0, 20.0]])],
        [torch.zeros(0, dtype=torch.long), torch.tensor([0])],
        num_classes=2,
        output_size=(8, 8),
        stride=4,
        max_objects=3,
    )
    assert (t["heatmap"][0] == 0).all() and (t["mask"][0] == 0).all()
    assert t["heatmap"][1, 0, 3, 3].item() == 1.0 and t["mask"][1].tolist() == [1.0, 0.0, 0.0]

    t = centernet_targets(
        [torch.zeros(0, 4)],
        [torch.zeros(0, dtype=torch.long)],
        num_classes=2,
        output_size=(8, 8),
        stride=4,
        max_objects=3,
    )
    assert t["heatmap"].shape == (1, 2, 8, 8) and (t["heatmap"] == 0).all()
    assert t["mask"].shape == (1, 3) and (t["mask"] == 0).all()
    assert t["num_skipped"] == 0


def test_max_objects_keeps_largest():
    """With 5 objects and max_objects=3 the 3 largest get targets, the 2 smallest
    are skipped (counted in num_skipped) and leave no heatmap peak."""
    H, W, s = 32, 32, 4
    boxes = [
        [4.0, 4.0, 12.0, 12.0],  # area 64   (skipped)
        [40.0, 4.0, 80.0, 44.0],  # area 1600
        [90.0, 90.0, 94.0, 94.0],  # area 16   (skipped)
        [4.0, 60.0, 36.0, 124.0],  # area 2048
        [70.0, 70.0, 100.0, 90.0],
    ]  # area 600
    t = centernet_targets(
        [torch.tensor(boxes)],
        [torch.zeros(5, dtype=torch.long)],
        num_classes=1,
        output_size=(H, W),
        stride=s,
        max_objects=3,
    )
    assert t["num_skipped"] == 2
    kept = [boxes[1], boxes[3], boxes[4]]
    assert _slot_rows(t, 0) == {_expected_row(b, s, W, H) for b in kept}
    ref = reference_heatmap([kept], [[0, 0, 0]], 1, H, W, s, 0.7, "original")
    np.testing.assert_allclose(t["heatmap"].numpy(), ref, atol=1e-6)
    assert t["heatmap"][0, 0, 2, 2].item() == 0.0  # smallest boxes' centres are empty
    assert t["heatmap"][0, 0, 23, 23].item() < 1.0


def test_degenerate_and_outside_boxes_are_skipped():
    """Zero-width, zero-height, inverted and centre-outside-the-map boxes are
    skipped and counted; the one valid box still gets its targets."""
    H, W, s = 10, 10, 4
    boxes = torch.tensor(
        [
            [8.0, 8.0, 8.0, 20.0],  # zero width
            [8.0, 8.0, 20.0, 8.0],  # zero height
            [20.0, 20.0, 10.0, 30.0],  # inverted
            [50.0, 4.0, 70.0, 12.0],  # centre x = 60 px -> cell 15 >= W
            [-30.0, -30.0, -10.0, -2.0],  # centre at negative cells
            [12.0, 12.0, 28.0, 20.0],
        ]
    )  # valid: centre (5, 4) cells
    t = centernet_targets(
        [boxes], [torch.zeros(6, dtype=torch.long)], num_classes=1, output_size=(H, W), stride=s, max_objects=8
    )
    assert t["num_skipped"] == 5
    assert t["mask"].sum().item() == 1.0
    assert _slot_rows(t, 0) == {_expected_row([12.0, 12.0, 28.0, 20.0], s, W, H)}
    ref = reference_heatmap([boxes.tolist()], [[0] * 6], 1, H, W, s, 0.7, "original")
    np.testing.assert_allclose(t["heatmap"].numpy(), ref, atol=1e-6)
    assert torch.isfinite(t["heatmap"]).all()


@pytest.mark.parametrize("mode", ["corrected", "original"])
def test_heatmap_matches_loop_reference(mode):
    """~10 random boxes in 2 images, 3 classes: heatmap equals the plain-loop
    CenterNet reference (ceil size -> radius -> int -> max) in both radius modes;
    index / wh / offset equal the per-box closed forms."""
    rng = np.random.default_rng(0)
    H, W, s = 24, 28, 4
    boxes, classes = [], []
    for n in (6, 4):
        xy = rng.uniform(0, [W * s - 8, H * s - 8], size=(n, 2))
        wh = rng.uniform(3, 48, size=(n, 2))
        b = np.concatenate([xy, np.minimum(xy + wh, [W * s, H * s])], 1).astype(np.float32)
        boxes.append(b)
        classes.append(rng.integers(0, 3, n))
    t = centernet_targets(
        [torch.from_numpy(b) for b in boxes],
        [torch.from_numpy(c) for c in classes],
        num_classes=3,
        output_size=(H, W),
        stride=s,
        radius_mode=mode,
        max_objects=16,
    )
    ref = reference_heatmap(boxes, classes, 3, H, W, s, 0.7, mode)
    np.testing.assert_allclose(t["heatmap"].numpy(), ref, atol=1e-6)
    for i, b in enumerate(boxes):
        assert t["mask"][i].sum().item() == len(b)
        got = sorted(_slot_rows(t, i))
        exp = sorted(_expected_row(row.tolist(), s, W, H) for row in b)
        assert [g[0] for g in got] == [e[0] for e in exp]
        np.testing.assert_allclose(np.array([g[1:] for g in got]), np.array([e[1:] for e in exp]), atol=2e-5)
    assert t["num_skipped"] == 0


def test_default_targets_10x10_cell_box():
    """A 10 x 10-cell box (40 x 40 px) gets r = int(2.73) = 2 with the defaults
    (the original CenterNet's radius at min_overlap 0.7): a 5 x 5 splat, as
    every reference gives (centerX / mmdetection: corrected roots at 0.3, also
    r = int(2.26) = 2); corrected roots at 0.7 give r = int(0.82) = 0."""
    args = dict(num_classes=1, output_size=(16, 16), stride=4)
    box, cls = [torch.tensor([[12.0, 12.0, 52.0, 52.0]])], [torch.tensor([0])]
    assert (centernet_targets(box, cls, **args)["heatmap"] > 0).sum().item() == 25
    assert (centernet_targets(box, cls, min_overlap=0.3, radius_mode="corrected", **args)["heatmap"] > 0).sum() == 25
    assert (centernet_targets(box, cls, radius_mode="corrected", **args)["heatmap"] > 0).sum().item() == 1


def test_box_touching_the_last_cell_is_clipped_to_it():
    """Box (44, 20, 64, 40) px on a 16 x 16 map: cells x 11 to 16, clipped to the
    last cell, 15 (the original CenterNet's convention), so w = 4 (not 5) cells,
    centre x 13 (not 13.5): cell (13, 7), offset (0, 0.5); the radius is that of
    ceil((h, w)) = (5, 4): int(1.216) = 1, a 3 x 3 splat."""
    t = centernet_targets(
        [torch.tensor([[44.0, 20.0, 64.0, 40.0]])],
        [torch.tensor([0])],
        num_classes=1,
        output_size=(16, 16),
        stride=4,
        max_objects=2,
    )
    assert t["wh"][0, 0].tolist() == [4.0, 5.0]
    assert t["offset"][0, 0].tolist() == [0.0, 0.5]
    assert t["index"][0, 0].item() == 7 * 16 + 13
    assert radius_original(5, 4, 0.7) == pytest.approx(1.216, abs=1e-3)
    hm = t["heatmap"][0, 0]
    assert hm[7, 13].item() == 1.0
    assert (hm > 0).nonzero().tolist() == [[y, x] for y in (6, 7, 8) for x in (12, 13, 14)]


def test_3x3_pixel_box():
    """Box (5, 5, 8, 8) px: 0.75 x 0.75 cells, ceiled to 1 x 1, radius int(0.27) = 0:
    one positive cell (1, 1), offset (0.625, 0.625), wh (0.75, 0.75)."""
    t = centernet_targets(
        [torch.tensor([[5.0, 5.0, 8.0, 8.0]])],
        [torch.tensor([0])],
        num_classes=1,
        output_size=(8, 8),
        stride=4,
        max_objects=2,
    )
    assert (t["heatmap"] > 0).nonzero().tolist() == [[0, 0, 1, 1]]
    assert t["offset"][0, 0].tolist() == [0.625, 0.625]
    assert t["wh"][0, 0].tolist() == [0.75, 0.75]
    assert t["index"][0, 0].item() == 1 * 8 + 1


def test_radius_modes_differ_on_targets():
    """The two radius modes give visibly different splats for a 40x40 px box
    (10x10 cells: r = int(2.73) = 2 vs int(0.82) = 0)."""
    args = dict(num_classes=1, output_size=(16, 16), stride=4)
    box, cls = [torch.tensor([[12.0, 12.0, 52.0, 52.0]])], [torch.tensor([0])]
    orig = centernet_targets(box, cls, radius_mode="original", **args)["heatmap"]
    corr = centernet_targets(box, cls, radius_mode="corrected", **args)["heatmap"]
    assert (orig > 0).sum().item() == 25
    assert (corr > 0).sum().item() == 1


def test_invalid_boxes_do_not_take_the_slots_of_valid_ones():
    """An off-map box larger than every valid one is skipped before MAX_OBJECTS applies,
    so both valid objects keep their targets (regression: it used to evict one)."""
    b = torch.tensor([[-100.0, -100.0, -10.0, -10.0], [4.0, 4.0, 20.0, 20.0], [40.0, 40.0, 50.0, 50.0]])
    t = centernet_targets([b], [torch.zeros(3, dtype=torch.long)], 1, (16, 16), 4, max_objects=2)
    assert t["mask"].sum().item() == 2
    assert t["num_skipped"] == 1
    assert int((t["heatmap"] == 1).sum()) == 2
