"""Flip test-time augmentation (TEST.FLIP_TEST, EXPORT.FLIP_TEST).

Expected values come from two separate passes of the model (the image, then its
mirror image, each run on its own), combined here by the rules written out in the
tests: the mean of the sigmoids, CenterNet's sizes averaged and offsets of the
unflipped pass, TTFNet's boxes mirrored back geometrically (x -> W - x) before
their distances to each cell point are averaged.
"""

import numpy as np
import pytest
import torch

from centerx.deploy import DeployModel, ExportError
from centerx.deploy.caffe_export import export_caffe
from centerx.deploy.onnx_export import export_onnx

from tiny_models import SIZE, build, images

ARCHS = ["CenterNet", "TTFNet"]
STRIDE = 4

pytestmark = pytest.mark.usefixtures("one_thread")


def two_passes(model, x):
    """Raw maps of ``x`` and, separately, of its mirror image (not flipped back)."""
    with torch.no_grad():
        return model.predict(x), model.predict(x.flip(-1))


def normalised(model, x):
    return (x - model.pixel_mean) / model.pixel_std


@pytest.mark.parametrize("arch", ARCHS)
def test_flip_averaged_scores_are_the_mean_of_the_two_passes(arch):
    model = build(arch)
    x = normalised(model, images(2, 96, 128))
    plain, mirror = two_passes(model, x)
    with torch.no_grad():
        merged = model.predict_flip_averaged(x)
    expected = (torch.sigmoid(plain["heatmap"]) + torch.sigmoid(mirror["heatmap"]).flip(-1)) / 2
    torch.testing.assert_close(torch.sigmoid(merged["heatmap"]), expected, rtol=1e-5, atol=1e-6)
    if arch == "CenterNet":
        torch.testing.assert_close(merged["wh"], (plain["wh"] + mirror["wh"].flip(-1)) / 2)
        torch.testing.assert_close(merged["offset"], plain["offset"])


def test_ttfnet_flip_averaged_boxes_are_the_mean_of_the_mirrored_boxes():
    """At every cell j, the merged (l, t, r, b) are the mean of the plain pass's and
    of those of the mirror pass's box at the mirrored cell, mirrored back to the
    image (x -> W - x) and measured from cell j's point (j * 4, i * 4)."""
    model = build("TTFNet")
    x = normalised(model, images(1, 64, 96, seed=3))
    W = x.shape[-1]
    plain, mirror = two_passes(model, x)
    with torch.no_grad():
        merged = model.predict_flip_averaged(x)
    lt = mirror["ltrb"][0].numpy()  # [4, h, w] of the mirror image
    h, w = lt.shape[1:]
    expected = np.zeros((4, h, w))
    for i in range(h):
        for j in range(w):
            k = w - 1 - j  # the mirror image's cell over the same image cell
            px = k * STRIDE
            x1m, x2m = px - lt[0, i, k], px + lt[2, i, k]  # its box, in mirror-image pixels
            x1, x2 = W - x2m, W - x1m  # the same box in the image
            mirrored = [j * STRIDE - x1, lt[1, i, k], x2 - j * STRIDE, lt[3, i, k]]
            expected[:, i, j] = (plain["ltrb"][0, :, i, j].numpy() + np.array(mirrored)) / 2
    np.testing.assert_allclose(merged["ltrb"][0].numpy(), expected, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("arch", ARCHS)
def test_symmetric_image_gives_mirror_symmetric_detections(arch):
    """An image equal to its mirror image: with flip test the scores and sizes are
    mirror-symmetric, so each detection has a twin at the mirrored place with the
    same score and class (TTFNet: the mirrored box itself; CenterNet, whose
    offsets come from the unflipped pass only: the same width and height)."""
    model = build(arch)
    half = images(1, 64, 48, seed=5)
    x = torch.cat([half, half.flip(-1)], dim=-1)  # 64 x 96, symmetric
    W = x.shape[-1]
    model.flip_test = True
    with torch.no_grad():
        inst = model([{"image": x[0]}])[0]["instances"]
    boxes, scores, classes = inst.pred_boxes.tensor.numpy(), inst.scores.numpy(), inst.pred_classes.numpy()
    assert len(scores) == 10
    # the lowest-scoring detections may have their twin just below the top-K cut
    for b, s, c in zip(boxes[:6], scores[:6], classes[:6]):
        twin = [i for i in range(len(scores)) if classes[i] == c and abs(scores[i] - s) < 1e-5]
        assert twin, (b, s)
        if arch == "TTFNet":
            mirrored = np.array([W - b[2], b[1], W - b[0], b[3]])
            assert min(np.abs(boxes[i] - mirrored).max() for i in twin) < 1e-3
        else:
            size = b[2:] - b[:2]
            assert min(np.abs((boxes[i][2:] - boxes[i][:2]) - size).max() for i in twin) < 1e-3
    model.flip_test = False
    with torch.no_grad():
        plain = model([{"image": x[0]}])[0]["instances"]
    assert not np.allclose(plain.scores.numpy(), scores)  # the augmentation changes something


@pytest.mark.parametrize("arch", ARCHS)
def test_inference_with_flip_test_decodes_the_merged_maps(arch):
    """TEST.FLIP_TEST in the detectron2 inference path (list of dicts ->
    Instances) equals decoding the flip-averaged maps."""
    model = build(arch, "TEST.FLIP_TEST", "True")
    assert model.flip_test
    x = images(2, 64, 64, seed=1)
    with torch.no_grad():
        got = [o["instances"] for o in model([{"image": im} for im in x])]
        det = model.decode(model.predict_flip_averaged(normalised(model, x)))
    for i, inst in enumerate(got):
        keep = det["scores"][i] > model.score_thresh_test
        torch.testing.assert_close(inst.scores, det["scores"][i][keep])
        torch.testing.assert_close(inst.pred_boxes.tensor, det["boxes"][i][keep].clamp(0, 64))


@pytest.mark.parametrize("arch", ARCHS)
def test_onnx_export_with_flip_test_matches_pytorch(arch, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = build(arch)
    deploy = DeployModel(model, flip_test=True).eval()
    path = str(tmp_path / "flip.onnx")
    export_onnx(deploy, path, SIZE)
    x = images(2, 96, 128, seed=2)
    with torch.no_grad():
        ref = deploy(x)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    out = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"images": x.numpy()})))
    np.testing.assert_allclose(out["scores"], ref["scores"].numpy(), atol=1e-5)
    np.testing.assert_allclose(out["boxes"], ref["boxes"].numpy(), atol=1e-3)
    with torch.no_grad():
        plain = DeployModel(model).eval()(x)
    assert not torch.allclose(plain["scores"], ref["scores"])


def test_caffe_export_refuses_flip_test(tmp_path):
    with pytest.raises(ExportError, match="EXPORT.FLIP_TEST"):
        export_caffe(DeployModel(build("CenterNet"), flip_test=True).eval(), str(tmp_path / "m"), SIZE)
