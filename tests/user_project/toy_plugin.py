"""A user's own project, outside centerX: a detector, a dataset, and an export
format with the runtime that runs it, reaching centerX only through its
registries. Nothing in ``centerx/`` names anything here; every shipped command
loads it with ``--import tests/user_project/toy_plugin.py`` (or a config's
``IMPORTS``), and a run's saved config.yaml brings it along. docs/extending.md
walks through this file.

- ToyNet: backbone -> 1x1 conv on the stride-32 feature, bilinear x8 to stride 4
  -> a heatmap and a box-size head (no offset: boxes are centred on their cell's
  corner point) -> CenterNet's targets and focal + L1 losses.
- ``toy_squares_train`` / ``toy_squares_val``: 96 x 96 images of red and blue
  squares on grey, drawn on first use into ``$TOY_SQUARES_ROOT`` (default: a
  folder in the temporary directory).
- ``--format npz-weights``: the deployment model's weights as a numpy archive,
  with centerX's properties beside it; ``--runtime npz`` rebuilds the detector
  from them and runs it in PyTorch.
- ``MODEL.DISTILL.TERMS ("ToyFeatureMimic",)``: a FitNet-style distillation term
  with its own adapter (state the checkpoint keeps).
"""

import os
import tempfile

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from detectron2.config import CfgNode as CN
from detectron2.config import configurable
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import META_ARCH_REGISTRY, build_model
from detectron2.structures import BoxMode
from torch import nn

from centerx.deploy import DeployModel, build_deploy_model
from centerx.deploy.exporters import EXPORTER_REGISTRY, Exporter
from centerx.deploy.model_info import write_sidecar
from centerx.deploy.runtimes import RUNTIME_REGISTRY, Runtime
from centerx.deploy.wrapper import deploy_config
from centerx.modeling.decode import decode_centernet
from centerx.modeling.distillation_terms import DISTILLATION_TERM_REGISTRY
from centerx.modeling.heads import ConvHead
from centerx.modeling.losses import masked_l1_loss, penalty_reduced_focal_loss
from centerx.modeling.losses.distillation import heatmap_distillation_loss
from centerx.modeling.meta_arch import PointDetector
from centerx.modeling.targets import batch_ground_truth, centernet_targets, centernet_window

# --------------------------------------------------------------------------- #
# a detector
# --------------------------------------------------------------------------- #


def add_toynet_config(cfg):
    _C = cfg
    _C.MODEL.TOYNET = CN()
    _C.MODEL.TOYNET.NUM_CLASSES = 2
    _C.MODEL.TOYNET.SCORE_THRESH_TEST = 0.01
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
            gt, self.device, lambda b, c: centernet_window(b, c, self.stride, (H, W))
        )
        t = centernet_targets(boxes, classes, self.num_classes, (H, W), self.stride, window=window)
        return {
            "loss_heatmap": penalty_reduced_focal_loss(outputs["heatmap"], t["heatmap"]),
            "loss_wh": 0.1 * masked_l1_loss(outputs["wh"], t["index"], t["wh"], t["mask"]),
        }

    def decode(self, outputs):
        return decode_centernet(
            outputs["heatmap"], outputs["wh"], torch.zeros_like(outputs["wh"]), self.test_topk, self.stride
        )

    def distillation_losses(self, student, teacher):
        return {"heatmap": heatmap_distillation_loss(student["heatmap"], teacher["heatmap"])}


# --------------------------------------------------------------------------- #
# a dataset
# --------------------------------------------------------------------------- #

SQUARE_COLOURS = {"red": (40, 40, 220), "blue": (220, 60, 40)}  # BGR
SQUARE_SPLITS = {"toy_squares_train": (24, 1), "toy_squares_val": (8, 2)}  # images, seed


def toy_squares(name: str):
    """detectron2 dataset dicts of ``name``, drawing its images on first use: 96 x 96
    grey images with one to three squares of 16-40 px, each red (class 0) or blue (1)."""
    count, seed = SQUARE_SPLITS[name]
    root = os.path.join(os.environ.get("TOY_SQUARES_ROOT", os.path.join(tempfile.gettempdir(), "toy_squares")), name)
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(seed)
    records = []
    for i in range(count):
        image = np.full((96, 96, 3), 128, np.uint8)
        annotations = []
        for _ in range(int(rng.integers(1, 4))):
            side = int(rng.integers(16, 41))
            x, y = (int(v) for v in rng.integers(0, 96 - side, size=2))
            label = int(rng.integers(0, 2))
            image[y : y + side, x : x + side] = list(SQUARE_COLOURS.values())[label]
            annotations.append(
                {"bbox": [x, y, x + side, y + side], "bbox_mode": BoxMode.XYXY_ABS, "category_id": label}
            )
        path = os.path.join(root, f"{i:03d}.png")
        if not os.path.isfile(path):
            cv2.imwrite(path, image)
        records.append({"file_name": path, "image_id": i, "height": 96, "width": 96, "annotations": annotations})
    return records


for _name in SQUARE_SPLITS:
    if _name not in DatasetCatalog.list():
        DatasetCatalog.register(_name, lambda name=_name: toy_squares(name))
        MetadataCatalog.get(_name).set(thing_classes=list(SQUARE_COLOURS), evaluator_type="coco")


# --------------------------------------------------------------------------- #
# an export format and its runtime
# --------------------------------------------------------------------------- #


@EXPORTER_REGISTRY.register()
class NpzWeightsExporter(Exporter):
    """The deployment model's weights as a numpy .npz archive, one array per
    state-dict entry, with centerX's properties in ``weights.npz.centerx.json``."""

    format = "npz-weights"
    description = "weights as a numpy .npz archive (toy_plugin)"
    runtime = "npz"

    def export(self):
        model = build_deploy_model(self.cfg, allow_random=self.allow_random).model
        os.makedirs(self.out_dir, exist_ok=True)
        path = os.path.join(self.out_dir, "weights.npz")
        np.savez(path, **{k: v.numpy() for k, v in model.state_dict().items()})
        write_sidecar(path, self.model_info())
        return path


@RUNTIME_REGISTRY.register()
class NpzRuntime(Runtime):
    """The config's detector rebuilt with the weights of an ``npz-weights`` archive,
    run in PyTorch on the CPU."""

    name = "npz"
    model_file = ".npz (npz-weights)"

    @classmethod
    def from_file(cls, cfg, model_path):
        return cls(cfg, model_path)

    def __init__(self, cfg, model_path: str):
        super().__init__(cfg)
        model = build_model(deploy_config(cfg)).eval()
        with np.load(model_path) as archive:
            model.load_state_dict({k: torch.from_numpy(archive[k]) for k in archive.files}, strict=True)
        self.model = DeployModel(model).eval()

    def run(self, batch):
        with torch.no_grad():
            out = self.model(torch.from_numpy(batch))
        return {k: v.numpy() for k, v in out.items()}


# --------------------------------------------------------------------------- #
# a distillation term
# --------------------------------------------------------------------------- #


@DISTILLATION_TERM_REGISTRY.register()
class ToyFeatureMimic(nn.Module):
    """Mean squared difference of the student's upsampled map, through a 1x1
    adapter, and each teacher's: ``loss_mimic_<teacher>``."""

    def __init__(self, cfg, student, teachers, links):
        super().__init__()
        self.adapter = nn.Conv2d(student.upsampler.out_channels, teachers[0].upsampler.out_channels, 1)
        self.names = [link.name for link in links]

    def forward(self, distiller, outputs, features, teacher_outputs, teacher_features):
        return {
            f"loss_mimic_{name}": ((self.adapter(features["upsampler"]) - t["upsampler"]) ** 2).mean()
            for name, t in zip(self.names, teacher_features)
        }
