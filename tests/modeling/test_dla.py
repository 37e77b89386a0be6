"""CenterNet-DLA34 as the paper builds it (centerx/modeling/necks/dla_up.py, DLA-34
from timm): the neck's bilinear upsampling against a closed form, DLA-up's passes
against the reference trace, DLA-34's size against the DLA paper, a training step
of the shapes config, and ONNX export with parity (plain convs, and modulated
deformable ones at opset 19)."""

import json
import os

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from fvcore.nn import FlopCountAnalysis

import centerx
from centerx.deploy import DeployModel
from centerx.deploy.onnx_export import export_onnx
from centerx.deploy.verify import FP32_TOLERANCE, compare_detections
from centerx.modeling.necks.dla_up import DLAUp, DLAUpsampler, bilinear_upsampling_

from tiny_models import randomize_

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(REPO, "configs", "shapes", "centernet_dla34_demo.yaml")
DLA34_FEATURES = {
    "res2": ShapeSpec(channels=64, stride=4),
    "res3": ShapeSpec(channels=128, stride=8),
    "res4": ShapeSpec(channels=256, stride=16),
    "res5": ShapeSpec(channels=512, stride=32),
}


@pytest.mark.parametrize("factor", [2, 4])
def test_the_upsampling_is_bilinear_interpolation(factor):
    """On a ramp a*x + b*y + c, bilinear interpolation (align_corners False) is exact away
    from the border; the initialised depthwise transposed conv gives the same values there."""
    up = bilinear_upsampling_(
        torch.nn.ConvTranspose2d(2, 2, 2 * factor, stride=factor, padding=factor // 2, groups=2, bias=False)
    )
    y, x = torch.meshgrid(torch.arange(6.0), torch.arange(7.0), indexing="ij")
    ramp = torch.stack([2 * x + 3 * y + 1, -x + 0.5 * y])[None]
    with torch.no_grad():
        got = up(ramp)
    expected = F.interpolate(ramp, scale_factor=factor, mode="bilinear", align_corners=False)
    inner = (slice(None), slice(None), slice(factor, -factor), slice(factor, -factor))
    assert got.shape == expected.shape
    torch.testing.assert_close(got[inner], expected[inner], rtol=0, atol=1e-5)


def test_dla_up_passes_follow_the_reference_trace():
    """The three IDA passes of DLA-up over DLA-34's channels (64, 128, 256, 512), as the
    reference code's DLAUp builds them: (256 from [256, 512], up x2), (128 from [128, 256,
    256], up x2, x2), (64 from [64, 128, 128, 128], up x2, x2, x2); the neck's IDA-up merges
    the stride-4, 8, 16 maps (64 from [64, 128, 256], up x2, x4)."""
    neck = DLAUpsampler(DLA34_FEATURES)
    stages = [
        ([p[0].in_channels for p in s.project], [u.stride[0] for u in s.upsample], s.merge[0][0].out_channels)
        for s in neck.dla_up.stages
    ]
    assert stages == [([512], [2], 256), ([256, 256], [2, 2], 128), ([128, 128, 128], [2, 2, 2], 64)]
    ida = neck.ida_up
    assert [p[0].in_channels for p in ida.project] == [128, 256] and [u.stride[0] for u in ida.upsample] == [2, 4]
    feats = [torch.randn(1, s.channels, 64 // s.stride, 96 // s.stride) for s in DLA34_FEATURES.values()]
    with torch.no_grad():
        maps = DLAUp([64, 128, 256, 512], deformable=False, norm="BN").eval()(feats)
        out = neck.eval()(dict(zip(DLA34_FEATURES, feats)))
    assert [tuple(m.shape) for m in maps] == [(1, 64, 16, 24), (1, 128, 8, 12), (1, 256, 4, 6), (1, 512, 2, 3)]
    assert torch.equal(maps[-1], feats[-1])  # the deepest feature passes as it is
    assert tuple(out.shape) == (1, 64, 16, 24) and neck.out_stride == 4 and neck.in_feature == "res5"


def test_dla34_has_the_size_of_the_dla_paper():
    """DLA-34 ("Deep Layer Aggregation", Table 1): 15.7 M parameters and 3.1 G multiply-adds
    at 224 x 224; the detector's backbone (no classifier) is fully convolutional, so at
    512 x 512 it costs (512 / 224)^2 times that, about 16 G."""
    full = timm.create_model("dla34").eval()
    assert sum(p.numel() for p in full.parameters()) / 1e6 == pytest.approx(15.7, rel=0.01)
    flops = FlopCountAnalysis(full, torch.randn(1, 3, 224, 224))
    flops.unsupported_ops_warnings(False)
    assert flops.total() / 1e9 == pytest.approx(3.1, rel=0.03)
    cfg = centerx.get_centerx_cfg()
    cfg.merge_from_file(DEMO)
    backbone = build_model(cfg).backbone.eval()
    at_512 = FlopCountAnalysis(backbone, torch.randn(1, 3, 512, 512))
    at_512.unsupported_ops_warnings(False)
    assert at_512.total() / 1e9 == pytest.approx(flops.total() / 1e9 * (512 / 224) ** 2, rel=0.03)


@pytest.mark.slow
def test_the_shapes_config_trains_and_evaluates(tiny_shapes, tmp_path, one_thread, monkeypatch):
    """train_net.py --config-file configs/shapes/centernet_dla34_demo.yaml, shrunk to two
    iterations at 64 px on the tiny set: finite losses, then COCO evaluation."""
    import train_net

    monkeypatch.chdir(REPO)
    name, _ = tiny_shapes
    small = ["INPUT.TRAIN_SIZE", "64", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64"]
    args = train_net.argument_parser().parse_args(
        [
            "--config-file",
            DEMO,
            "DATASETS.TRAIN",
            f"('{name}',)",
            "DATASETS.TEST",
            f"('{name}',)",
            *small,
            "SOLVER.IMS_PER_BATCH",
            "2",
            "SOLVER.MAX_ITER",
            "2",
            "SOLVER.WARMUP_ITERS",
            "0",
            "TEST.VIS_IMAGES",
            "0",
            "OUTPUT_DIR",
            str(tmp_path),
        ]
    )
    train_net.main(args)
    records = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    assert all(np.isfinite(r["total_loss"]) for r in records if "total_loss" in r)
    assert any("bbox/AP" in r for r in records)


@pytest.mark.parametrize("deformable, opset", [(False, 17), (True, 19)])
def test_export_to_onnx_matches_pytorch(deformable, opset, tmp_path, one_thread):
    ort = pytest.importorskip("onnxruntime")
    cfg = centerx.get_centerx_cfg()
    cfg.merge_from_file(DEMO)
    cfg.merge_from_list(["MODEL.CENTERX.CHANNELS_LAST", False, "MODEL.CENTERNET.DEFORMABLE", deformable])
    torch.manual_seed(5)  # the backbone's initialisation, which randomize_ leaves to timm
    model = randomize_(build_model(cfg).eval(), seed=5)
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(2)) * 255
    with torch.no_grad():
        if deformable:  # non-zero sampling offsets, so the deformation matters
            for m in model.upsampler.modules():
                if hasattr(m, "offset_mask"):
                    m.offset_mask.weight.normal_(0, 0.01)
        # heatmap logits of unit spread on this image: scores spread over (0, 1), distinct peaks, none saturated
        logits = model.predict((x - model.pixel_mean) / model.pixel_std)["heatmap"]
        model.heads.heatmap.layers[-1].weight.div_(logits.std())
    wrapper = DeployModel(model).eval()  # decoded: the top-K detections, as export.py checks them
    path = str(tmp_path / "dla.onnx")
    export_onnx(wrapper, path, (128, 128), opset=opset)
    with torch.no_grad():
        reference = {k: v[0].numpy() for k, v in wrapper(x).items()}
    got = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})
    # detections near the K-th score may swap places with the first one left out
    floor = float(reference["scores"][-1]) + 1e-3
    outputs = dict(zip(("boxes", "scores", "classes"), (o[0] for o in got)))
    agreement = compare_detections(outputs, reference, score_floor=floor, **FP32_TOLERANCE)
    assert agreement.misses == 0 and agreement.matched > 10, agreement
