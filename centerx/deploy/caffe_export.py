"""Caffe export: ``.prototxt`` + ``.caffemodel`` written by walking the PyTorch
modules of a CenterNet with a ResNet backbone and a plain-conv upsampler.

Layers used: Input, Scale (normalisation), Convolution, Deconvolution,
BatchNorm + Scale (each BatchNorm2d / FrozenBatchNorm2d), ReLU, Pooling,
Eltwise, Power, Sigmoid, Concat (SPP). Every one is exact in standard Caffe:

- ResNet's stem max-pool (3x3, stride 2, pad 1, floor mode) is a stride-1
  max-pool followed by a 1x1 depthwise identity convolution of stride 2,
  because Caffe's pooling rounds its output size up (one row too many).
- Peak masking (``centerx.modeling.decode.peak_mask``, ``heat == maxpool3x3(heat)``;
  Caffe has no comparison layer) is arithmetic: ``gap = maxpool3x3(heat) - heat``,
  three stages ``gap = t - ReLU(t - 1)`` with ``t = 4096 * gap`` (= min(t, 1),
  exact below 1) and ``heatmap = heat * ReLU(1 - 4096 * gap)``: every gap of at
  least 2^-48 becomes a factor 0, so it equals the ``==`` mask for scores above
  about 1e-7. (The original centerX's ``ReLU(heat - hmax + 1e-9) * 1e9`` turns
  into 0 * inf = NaN in FP16; 4096 is representable there.)
- SPP (MODEL.CENTERX.SPP) is a Concat of the feature and stride-1 Pooling
  layers padded by k // 2 (Caffe's max-pooling skips the padding, as PyTorch's
  -inf padding does), then the 1x1 conv. DropBlock is the identity in eval
  mode and has no layer.

Caffe has no top-K, so the net ends with the raw outputs of the export contract (docs/design.md):
``heatmap`` (peak-masked scores) and ``wh``, ``offset``; ``decode_raw_outputs``
or the runtimes decode them. TTFNet (bilinear upsampling) and deformable
convs have no standard Caffe layer and are refused, and so is CoordConv
(MODEL.CENTERX.COORD_CONV: its coordinate channels depend on the input size,
which a Caffe net run at another size than its Input layer would get wrong).
"""

import logging
import os
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from detectron2.layers import FrozenBatchNorm2d
from google.protobuf import text_format
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from ..modeling.backbones.resnet import TorchvisionResNet
from ..modeling.dropblock import DropBlock
from ..modeling.heads import CenterNetHeads, ConvHead
from ..modeling.meta_arch.centernet import CenterNet
from ..modeling.necks import SPP, CenterNetUpsampler, CoordConv
from . import caffe_pb
from .wrapper import DeployModel, ExportError

# The peak mask's gain per stage and number of stages (one in the final ReLU).
PEAK_GAIN = 4096.0
PEAK_STAGES = 4

logger = logging.getLogger(__name__)


def _blob(array) -> "caffe_pb.BlobProto":
    array = np.asarray(array.detach().cpu() if isinstance(array, torch.Tensor) else array, dtype=np.float32)
    blob = caffe_pb.BlobProto()
    blob.shape.dim.extend(array.shape)
    blob.data.extend(array.ravel().tolist())
    return blob


class CaffeNetBuilder:
    """Appends layers to a ``NetParameter``. Each method adds the layer(s) for
    one operation and returns the name of its output blob (each layer's single
    top is named as the layer)."""

    def __init__(self, name: str):
        self.net = caffe_pb.NetParameter(name=name)
        self._names = set()

    def layer(self, name: str, type_: str, bottoms: Sequence[str], blobs: Iterable = ()):
        if name in self._names:
            raise ValueError(f"Duplicate Caffe layer name {name!r}.")
        self._names.add(name)
        layer = self.net.layer.add(name=name, type=type_)
        layer.bottom.extend(bottoms)
        layer.top.append(name)
        layer.blobs.extend(_blob(b) for b in blobs)
        return layer

    def input(self, name: str, shape: Sequence[int]) -> str:
        self.layer(name, "Input", []).input_param.shape.add().dim.extend(shape)
        return name

    def conv(self, name: str, bottom: str, m: nn.Conv2d, transposed: bool = False) -> str:
        if (
            isinstance(m.padding, str)
            or len(set(m.padding)) > 1
            or len(set(m.kernel_size)) > 1
            or len(set(m.stride)) > 1
            or len(set(m.dilation)) > 1
        ):
            raise ExportError(f"Caffe export supports square kernels, strides, pads and dilations; {name} is {m}.")
        if transposed and any(m.output_padding):
            raise ExportError(f"Caffe's Deconvolution has no output_padding; {name} is {m}.")
        blobs = [m.weight] + ([m.bias] if m.bias is not None else [])
        p = self.layer(name, "Deconvolution" if transposed else "Convolution", [bottom], blobs).convolution_param
        p.num_output = m.out_channels
        p.bias_term = m.bias is not None
        p.kernel_size.append(m.kernel_size[0])
        p.stride.append(m.stride[0])
        p.pad.append(m.padding[0])
        p.dilation.append(m.dilation[0])
        p.group = m.groups
        return name

    def batch_norm(self, name: str, bottom: str, m) -> str:
        """Caffe's BatchNorm (running statistics, scale factor 1) then Scale (affine)."""
        bn = self.layer(f"{name}/bn", "BatchNorm", [bottom], [m.running_mean, m.running_var, np.ones(1)])
        bn.batch_norm_param.use_global_stats = True
        bn.batch_norm_param.eps = m.eps
        return self.scale(name, f"{name}/bn", m.weight, m.bias)

    def scale(self, name: str, bottom: str, scale, bias) -> str:
        """Per-channel ``x * scale + bias``."""
        self.layer(name, "Scale", [bottom], [scale, bias]).scale_param.bias_term = True
        return name

    def relu(self, name: str, bottom: str) -> str:
        self.layer(name, "ReLU", [bottom])
        return name

    def sigmoid(self, name: str, bottom: str) -> str:
        self.layer(name, "Sigmoid", [bottom])
        return name

    def max_pool(self, name: str, bottom: str, kernel: int, stride: int, pad: int) -> str:
        p = self.layer(name, "Pooling", [bottom]).pooling_param
        p.pool = p.MAX
        p.kernel_size, p.stride, p.pad = kernel, stride, pad
        return name

    def subsample(self, name: str, bottom: str, channels: int, stride: int) -> str:
        """Every ``stride``-th row and column: a 1x1 depthwise convolution of weight 1."""
        p = self.layer(name, "Convolution", [bottom], [np.ones((channels, 1, 1, 1))]).convolution_param
        p.num_output, p.bias_term, p.group = channels, False, channels
        p.kernel_size.append(1)
        p.stride.append(stride)
        return name

    def power(self, name: str, bottom: str, scale: float = 1.0, shift: float = 0.0) -> str:
        """``scale * x + shift``."""
        p = self.layer(name, "Power", [bottom]).power_param
        p.power, p.scale, p.shift = 1.0, scale, shift
        return name

    def eltwise(self, name: str, bottoms: Sequence[str], operation: str, coeffs: Sequence[float] = ()) -> str:
        p = self.layer(name, "Eltwise", bottoms).eltwise_param
        p.operation = getattr(p, operation)
        p.coeff.extend(coeffs)
        return name

    def concat(self, name: str, bottoms: Sequence[str]) -> str:
        """Concatenation along channels (Caffe's default axis 1)."""
        self.layer(name, "Concat", bottoms)
        return name


def _is_batch_norm(m: nn.Module) -> bool:
    return isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d))


def _module(b: CaffeNetBuilder, m: nn.Module, bottom: str, name: str) -> str:
    """One module of the backbone / upsampler / heads -> Caffe layers."""
    if isinstance(m, nn.Sequential):
        for child_name, child in m.named_children():
            bottom = _module(b, child, bottom, f"{name}.{child_name}")
        return bottom
    if isinstance(m, ConvHead):
        return _module(b, m.layers, bottom, f"{name}.layers")
    if isinstance(m, (nn.Identity, DropBlock)):  # DropBlock: the identity in eval mode
        return bottom
    if isinstance(m, SPP):
        pooled = [b.max_pool(f"{name}.pool{k}", bottom, k, 1, k // 2) for k in m.pool_sizes]
        return _module(b, m.fuse, b.concat(f"{name}.concat", [bottom] + pooled), f"{name}.fuse")
    if isinstance(m, CoordConv):
        raise ExportError(
            f"The Caffe exporter cannot express CoordConv ({name}): its coordinate channels depend on the input "
            "size. Train with MODEL.CENTERX.COORD_CONV False for Caffe, or export to ONNX / TensorRT."
        )
    if isinstance(m, nn.ConvTranspose2d):
        return b.conv(name, bottom, m, transposed=True)
    if isinstance(m, nn.Conv2d):
        return b.conv(name, bottom, m)
    if _is_batch_norm(m):
        return b.batch_norm(name, bottom, m)
    if isinstance(m, nn.ReLU):
        return b.relu(name, bottom)
    if isinstance(m, (BasicBlock, Bottleneck)):
        return _residual_block(b, m, bottom, name)
    raise ExportError(
        f"The Caffe exporter has no layer for {type(m).__name__} ({name}). It supports ResNet backbones "
        "and CenterNet with MODEL.CENTERNET.DEFORMABLE False."
    )


def _residual_block(b: CaffeNetBuilder, m, bottom: str, name: str) -> str:
    """torchvision's BasicBlock / Bottleneck: convs with BN and ReLU, the
    (downsampled) shortcut added, then ReLU."""
    convs = ["1", "2"] + (["3"] if isinstance(m, Bottleneck) else [])
    x = bottom
    for i, k in enumerate(convs):
        x = b.batch_norm(f"{name}.bn{k}", b.conv(f"{name}.conv{k}", x, getattr(m, f"conv{k}")), getattr(m, f"bn{k}"))
        if i < len(convs) - 1:
            x = b.relu(f"{name}.relu{k}", x)
    shortcut = bottom if m.downsample is None else _module(b, m.downsample, bottom, f"{name}.downsample")
    return b.relu(f"{name}.relu", b.eltwise(f"{name}.add", [x, shortcut], "SUM"))


def _resnet(b: CaffeNetBuilder, m: TorchvisionResNet, bottom: str, name: str) -> str:
    """Stem and four stages -> the stride-32 ``res5`` blob."""
    x = b.relu(f"{name}.relu", b.batch_norm(f"{name}.bn1", b.conv(f"{name}.conv1", bottom, m.conv1), m.bn1))
    pool = m.maxpool
    if (pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode) != (3, 2, 1, False):
        raise ExportError(f"Unexpected ResNet stem pooling {pool}.")
    x = b.max_pool(f"{name}.maxpool", x, kernel=3, stride=1, pad=1)
    x = b.subsample(f"{name}.maxpool/stride2", x, m.conv1.out_channels, 2)
    for i in range(1, 5):
        x = _module(b, getattr(m, f"layer{i}"), x, f"{name}.layer{i}")
    return x


def _peak_mask(b: CaffeNetBuilder, heat: str, name: str) -> str:
    """``peak_mask`` (3x3) of the scores blob ``heat``, with the same gain and stages."""
    gap = b.eltwise(f"{name}/gap", [b.max_pool(f"{name}/max", heat, 3, 1, 1), heat], "SUM", (1.0, -1.0))
    for k in range(1, PEAK_STAGES):
        t = b.power(f"{name}/gain{k}", gap, scale=PEAK_GAIN)
        over = b.relu(f"{name}/over{k}/relu", b.power(f"{name}/over{k}", t, shift=-1.0))
        gap = b.eltwise(f"{name}/clip{k}", [t, over], "SUM", (1.0, -1.0))
    keep = b.relu(f"{name}/keep/relu", b.power(f"{name}/keep", gap, scale=-PEAK_GAIN, shift=1.0))
    return b.eltwise(name, [heat, keep], "PROD")


def _centernet(b: CaffeNetBuilder, model: CenterNet, images: str):
    """Normalisation, ResNet, [SPP], upsampler, heads, sigmoid + peak masking."""
    if not isinstance(model.backbone, TorchvisionResNet) or model.upsampler.in_feature != "res5":
        raise ExportError(
            "The Caffe exporter supports CenterNet on the ResNet backbone "
            "(MODEL.BACKBONE.NAME build_torchvision_resnet_backbone)."
        )
    if not isinstance(model.upsampler, CenterNetUpsampler) or not isinstance(model.heads, CenterNetHeads):
        raise ExportError("The Caffe exporter supports CenterNet's own upsampler and heads.")
    std = model.pixel_std.flatten()
    x = b.scale("normalize", images, 1.0 / std, -model.pixel_mean.flatten() / std)
    x = _resnet(b, model.backbone, x, "backbone")
    x = _module(b, model.coord_conv, x, "coord_conv")
    x = _module(b, model.spp, x, "spp")
    x = _module(b, model.upsampler.layers, x, "upsampler.layers")
    logits = _module(b, model.heads.heatmap, x, "heads.heatmap")
    _peak_mask(b, b.sigmoid("heatmap_scores", logits), "heatmap")
    for head in ("wh", "offset"):
        conv = model.heads.get_submodule(head).layers
        body = _module(b, conv[:-1], x, f"heads.{head}.layers")
        b.conv(head, body, conv[-1])


def export_caffe(model: DeployModel, prefix: str, input_size: tuple[int, int], batch_size: int = 1):
    """Write ``{prefix}.prototxt`` (structure) and ``{prefix}.caffemodel`` (weights).

    Args:
        model: the wrapper (its ``raw`` flag is irrelevant: Caffe gets raw outputs).
        input_size: (H, W) of the Input layer; the batch is ``batch_size``.

    Returns:
        (prototxt path, caffemodel path). Raises :class:`ExportError` for models
        that standard Caffe cannot express.
    """
    net = model.model
    if not isinstance(net, CenterNet):
        raise ExportError(
            f"The Caffe exporter supports CenterNet; {type(net).__name__} needs layers standard Caffe lacks "
            "(TTFNet: bilinear upsampling). Export it to ONNX / TensorRT instead."
        )
    if model.training:
        raise ValueError("Export needs the model in eval mode (BatchNorm statistics are frozen into the net).")
    if model.flip_test:
        raise ExportError(
            "Standard Caffe has no layer that mirrors a blob, so flip test-time augmentation cannot be "
            "exported to it. Set EXPORT.FLIP_TEST False for Caffe, or export to ONNX / TensorRT."
        )
    b = CaffeNetBuilder(type(net).__name__)
    _centernet(b, net, b.input("images", (batch_size, 3, *input_size)))
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    prototxt, caffemodel = f"{prefix}.prototxt", f"{prefix}.caffemodel"
    with open(caffemodel, "wb") as f:
        f.write(b.net.SerializeToString())
    structure = caffe_pb.NetParameter()
    structure.CopyFrom(b.net)
    for layer in structure.layer:
        del layer.blobs[:]
    with open(prototxt, "w") as f:
        f.write(text_format.MessageToString(structure))
    logger.info(f"Wrote {prototxt} and {caffemodel} ({len(b.net.layer)} layers; outputs heatmap, wh, offset).")
    return prototxt, caffemodel
