"""A third detector, defined in this file alone, goes through everything centerX does
with its own two: training with detectron2's trainer and COCO evaluation, a
checkpoint that serves as a Distiller's teacher, and ONNX export matched by
onnxruntime. It is docs/extending.md's example: if centerX needed a table edited
elsewhere for a new detector, this file could not pass.

ToyNet: backbone -> 1x1 conv on the stride-32 feature, bilinear x8 to stride 4
-> a heatmap and a box-size head (no offset: boxes are centred on their cell's
corner point) -> CenterNet's targets and focal + L1 losses.
"""
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.config import CfgNode as CN
from detectron2.config import configurable, get_cfg
from detectron2.modeling import META_ARCH_REGISTRY, build_model
from detectron2.structures import Boxes, Instances
from torch import nn

import centerx
from centerx.deploy import DeployModel
from centerx.deploy.verify import compare_detections
from centerx.modeling.decode import decode_centernet
from centerx.modeling.heads import ConvHead
from centerx.modeling.losses import masked_l1_loss, penalty_reduced_focal_loss
from centerx.modeling.losses.distillation import heatmap_distillation_loss
from centerx.modeling.meta_arch import PointDetector
from centerx.modeling.targets import batch_ground_truth, centernet_targets, centernet_window

from project_scripts import load_script

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, "configs", "shapes", "centernet_r18_demo.yaml")


def add_toynet_config(cfg):
    _C = cfg
    _C.MODEL.TOYNET = CN()
    _C.MODEL.TOYNET.NUM_CLASSES = 4
    _C.MODEL.TOYNET.SCORE_THRESH_TEST = 0.01
    _C.MODEL.TOYNET.DEFORMABLE = False
    _C.MODEL.TOYNET.CHANNELS = 32
    return cfg


class ResizeUpsampler(nn.Module):
    """The upsampler interface: features dict in, one map out, with in_feature,
    out_channels and out_stride."""

    def __init__(self, input_shapes, channels: int, out_stride: int = 4):
        super().__init__()
        self.in_feature = max(input_shapes, key=lambda name: input_shapes[name].stride)
        self.factor = input_shapes[self.in_feature].stride // out_stride
        self.conv = nn.Conv2d(input_shapes[self.in_feature].channels, channels, 1)
        self.out_channels, self.out_stride = channels, out_stride

    def forward(self, features):
        x = F.relu(self.conv(features[self.in_feature]))
        # align_corners=True: linear ramps everywhere (align_corners=False holds the border
        # cells at a constant, whose equal-valued peaks are a tie for the runtimes)
        return F.interpolate(x, scale_factor=self.factor, mode="bilinear", align_corners=True)


class ToyHeads(nn.Module):
    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.heatmap = ConvHead(in_channels, in_channels, num_classes, bias_init=-2.19)
        self.wh = ConvHead(in_channels, in_channels, 2, bias_init=4.0)

    def forward(self, x):
        return {"heatmap": self.heatmap(x), "wh": self.wh(x)}


@META_ARCH_REGISTRY.register()
class ToyNet(PointDetector):
    config_prefix = "MODEL.TOYNET"
    output_maps = ("heatmap", "wh")

    @configurable
    def __init__(self, **kwargs):
        super().__init__(**kwargs)

    @classmethod
    def add_config(cls, cfg):
        return add_toynet_config(cfg)

    @classmethod
    def build_upsampler(cls, cfg, input_shapes):
        return ResizeUpsampler(input_shapes, cfg.MODEL.TOYNET.CHANNELS)

    @classmethod
    def build_heads(cls, cfg, in_channels):
        return ToyHeads(in_channels, cfg.MODEL.TOYNET.NUM_CLASSES)

    def losses(self, outputs, gt):
        H, W = outputs["heatmap"].shape[-2:]
        boxes, classes, _, window = batch_ground_truth(
            gt, self.device, lambda b, c: centernet_window(b, c, self.stride, (H, W)))
        t = centernet_targets(boxes, classes, self.num_classes, (H, W), self.stride, window=window)
        return {"loss_heatmap": penalty_reduced_focal_loss(outputs["heatmap"], t["heatmap"]),
                "loss_wh": 0.1 * masked_l1_loss(outputs["wh"], t["index"], t["wh"], t["mask"])}

    def decode(self, outputs):
        return decode_centernet(outputs["heatmap"], outputs["wh"], torch.zeros_like(outputs["wh"]), self.test_topk,
                                self.stride)

    def distillation_losses(self, student, teacher):
        return {"heatmap": heatmap_distillation_loss(student["heatmap"], teacher["heatmap"])}


def toy_cfg(output_dir, dataset, *opts):
    cfg = centerx.add_centerx_config(get_cfg())
    cfg.merge_from_file(DEMO)
    cfg.merge_from_list([
        "MODEL.META_ARCHITECTURE", "ToyNet", "MODEL.CENTERX.CHANNELS_LAST", "False",
        "DATASETS.TRAIN", f"('{dataset}',)", "DATASETS.TEST", f"('{dataset}',)",
        "INPUT.TRAIN_SIZE", "96", "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "96",
        "SOLVER.IMS_PER_BATCH", "4", "SOLVER.MAX_ITER", "20", "SOLVER.WARMUP_ITERS", "0", "SOLVER.STEPS", "()",
        "SOLVER.CHECKPOINT_PERIOD", "100000", "DATALOADER.NUM_WORKERS", "0", "TEST.VIS_IMAGES", "0",
        "TEST.DETECTIONS_PER_IMAGE", "20", "OUTPUT_DIR", str(output_dir), "SEED", "1",
    ])
    cfg.merge_from_list(list(opts))
    return cfg


@pytest.fixture(scope="module")
def trained_toy(tiny_shapes, tmp_path_factory):
    """ToyNet trained 20 iterations and evaluated by train_net.py: (output dir, metrics records)."""
    import train_net

    name, _ = tiny_shapes
    out = tmp_path_factory.mktemp("toynet")
    cfg = toy_cfg(out, name)
    cfg_file = out / "toy.yaml"
    cfg_file.write_text(cfg.dump())
    # train_net builds its config with add_centerx_config, which adds the keys of every
    # registered detector: importing the module that registers ToyNet is all it takes
    args = train_net.argument_parser().parse_args(["--config-file", str(cfg_file)])
    train_net.main(args)
    with open(out / "metrics.json") as f:
        records = [json.loads(line) for line in f]
    return out, records


@pytest.mark.slow
def test_toy_detector_trains_and_evaluates(trained_toy):
    out, records = trained_toy
    losses = [r["total_loss"] for r in records if "total_loss" in r]
    assert losses and all(np.isfinite(losses)), records
    assert any("bbox/AP" in r for r in records), records[-1]
    assert os.path.isfile(out / "model_final.pth") and os.path.isfile(out / "config.yaml")


@pytest.mark.slow
def test_toy_detector_teaches_a_toy_student(trained_toy, tiny_shapes, tmp_path):
    """A Distiller with a ToyNet student and the trained ToyNet as teacher: its
    loss_kd_t0_heatmap is DISTILL.WEIGHT x HEATMAP_WEIGHT x the mean squared
    difference of the two models' heatmap probabilities, computed here directly."""
    out, _ = trained_toy
    name, _ = tiny_shapes
    cfg = toy_cfg(tmp_path, name, "MODEL.META_ARCHITECTURE", "Distiller",
                  "MODEL.DISTILL.STUDENT_META_ARCHITECTURE", "ToyNet",
                  "MODEL.DISTILL.TEACHERS", f"[('{out / 'config.yaml'}', '{out / 'model_final.pth'}', ())]",
                  "MODEL.DISTILL.WEIGHT", "3.0", "MODEL.DISTILL.HEATMAP_WEIGHT", "0.5")
    distiller = build_model(cfg).train()
    g = torch.Generator().manual_seed(0)
    batch = [{"image": torch.randint(0, 256, (3, 96, 96), generator=g).float(),
              "instances": Instances((96, 96), gt_boxes=Boxes(torch.tensor([[10.0, 12.0, 50.0, 40.0]])),
                                     gt_classes=torch.tensor([1]))}]
    losses = distiller(batch)
    assert set(losses) == {"loss_heatmap", "loss_wh", "loss_kd_t0_heatmap"}
    x = (batch[0]["image"][None] - distiller.student.pixel_mean) / distiller.student.pixel_std
    with torch.no_grad():
        s, t = distiller.student.predict(x)["heatmap"], distiller.teachers[0].predict(x)["heatmap"]
    expected = 3.0 * 0.5 * ((torch.sigmoid(s) - torch.sigmoid(t)) ** 2).mean()
    assert losses["loss_kd_t0_heatmap"].item() == pytest.approx(expected.item(), rel=1e-4)


@pytest.mark.slow
def test_toy_detector_exports_to_onnx_and_onnxruntime_agrees(trained_toy, tmp_path):
    """The trained ToyNet's config with non-trivial random weights (many distinct
    peaks), exported raw and decoded; onnxruntime finds the detections PyTorch finds."""
    ort = pytest.importorskip("onnxruntime")
    from centerx.deploy.onnx_export import export_onnx

    from tiny_models import randomize_

    out, _ = trained_toy
    cfg = centerx.add_centerx_config(get_cfg())
    cfg.merge_from_file(str(out / "config.yaml"))
    model = randomize_(build_model(cfg)).eval()
    raw_path, path = str(tmp_path / "raw.onnx"), str(tmp_path / "toy.onnx")
    assert export_onnx(DeployModel(model, raw=True).eval(), raw_path, (96, 96)) == ["heatmap", "wh"]
    assert export_onnx(DeployModel(model).eval(), path, (96, 96)) == ["boxes", "scores", "classes"]
    images = torch.randint(0, 256, (2, 3, 96, 128), generator=torch.Generator().manual_seed(3)).float()
    with torch.no_grad():
        reference = DeployModel(model).eval()(images)
    got = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"images": images.numpy()})
    for i in range(2):
        # detections near the K-th score may swap places with the first one left out
        floor = float(reference["scores"][i, -1]) + 1e-3
        agreement = compare_detections(dict(zip(("boxes", "scores", "classes"), (o[i] for o in got))),
                                       {k: v[i].numpy() for k, v in reference.items()}, score_floor=floor,
                                       box_px=0.05)
        assert agreement.total > 5 and agreement.misses == 0, agreement


# --------------------------------------------------------------------------- #
# a new export format and a new runtime, registered here alone
# --------------------------------------------------------------------------- #
from centerx.deploy.exporters import EXPORTER_REGISTRY, Exporter  # noqa: E402
from centerx.deploy.runtimes import RUNTIME_REGISTRY, Runtime, build_runtime  # noqa: E402


@EXPORTER_REGISTRY.register()
class NpzWeightsExporter(Exporter):
    """The detector's weights as a numpy .npz archive, one array per state-dict entry."""

    format = "npz-weights"
    description = "weights as a numpy .npz archive"

    def export(self):
        from centerx.deploy import build_deploy_model

        model = build_deploy_model(self.cfg, allow_random=self.allow_random).model
        os.makedirs(self.out_dir, exist_ok=True)
        path = os.path.join(self.out_dir, "weights.npz")
        np.savez(path, **{k: v.numpy() for k, v in model.state_dict().items()})
        return path


@RUNTIME_REGISTRY.register()
class ConstantRuntime(Runtime):
    """Always one detection: class 1, score 0.9, the middle half of the letterboxed input."""

    name = "constant"
    model_file = ".txt (ignored)"

    @classmethod
    def from_file(cls, cfg, model_path):
        return cls(cfg)

    def run(self, batch):
        n, _, h, w = batch.shape
        box = np.array([w / 4, h / 4, 3 * w / 4, 3 * h / 4], dtype=np.float32)
        return {"boxes": np.tile(box, (n, 1, 1)), "scores": np.full((n, 1), 0.9, np.float32),
                "classes": np.ones((n, 1), np.int64)}


def test_registered_export_format_is_offered_and_written_by_export_py(tmp_path):
    cli = load_script("speedup", "export")
    argv = ["--config-file", os.path.join(REPO, "configs", "shapes", "centernet_r18_demo.yaml"), "--format",
            "npz-weights", "--output", str(tmp_path), "--allow-random-weights", "EXPORT.INPUT_SIZE", "(64, 64)"]
    with pytest.raises(SystemExit, match="--fp16 applies to --format tensorrt, not npz-weights"):
        cli.main(argv[:4] + ["--fp16"] + argv[4:])
    assert cli.main(argv) == 0
    archive = np.load(tmp_path / "weights.npz")
    cfg = centerx.get_centerx_cfg()
    cfg.merge_from_file(argv[1])
    assert sorted(archive.files) == sorted(build_model(cfg).state_dict())


def test_registered_runtime_is_built_by_name_and_maps_back_to_image_pixels(tmp_path):
    """The base class letterboxes a 100 x 200 image into the 64 x 64 input at the top
    left (scale 0.32, the image fills rows 0-32), so the runtime's box (16, 16, 48, 48)
    in input pixels is (50, 50, 150, 150) in the image, clipped to its 100 rows."""
    cfg = centerx.get_centerx_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "shapes", "centernet_r18_demo.yaml"))
    cfg.merge_from_list(["EXPORT.INPUT_SIZE", "(64, 64)"])
    runtime = build_runtime("constant", cfg, str(tmp_path / "ignored.txt"))
    with pytest.raises(ValueError, match="needs the exported model file"):
        build_runtime("constant", cfg)
    (det,) = runtime([np.zeros((100, 200, 3), np.uint8)])
    np.testing.assert_allclose(det["boxes"], [[50.0, 50.0, 150.0, 100.0]], atol=1e-4)
    assert det["classes"].tolist() == [1] and det["scores"].tolist() == pytest.approx([0.9])
