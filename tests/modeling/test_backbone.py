"""Backbone, local weight loading, upsampler, deformable conv and heads.

Weight files are built in the test from torchvision's own ResNet-18 (random
weights) and renamed to detectron2's naming with an independent mapping.
"""

import logging
import pickle
import re

import pytest
import torch
import torch.nn.functional as F
import torchvision
from detectron2.layers import ShapeSpec
from torch import nn

from centerx.modeling.backbones.resnet import TorchvisionResNet
from centerx.modeling.backbones.weights import load_backbone_weights
from centerx.modeling.deform_conv import ModulatedDeformConv2d
from centerx.modeling.heads import CenterNetHeads
from centerx.modeling.necks.centernet_upsampler import CenterNetUpsampler, bilinear_init_

pytestmark = pytest.mark.usefixtures("one_thread")


def random_resnet18_state(seed=0):
    """torchvision ResNet-18 state dict (names and shapes from torchvision itself)
    with every float tensor random, so a tensor left at its default init cannot
    pass for a loaded one."""
    with torch.device("meta"):
        shapes = {k: (v.shape, v.is_floating_point()) for k, v in torchvision.models.resnet18().state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, (shape, is_float) in shapes.items():
        if not is_float:
            out[k] = torch.tensor(7)  # num_batches_tracked
        elif k.endswith("running_var"):
            out[k] = torch.rand(shape, generator=g) + 0.5
        else:
            out[k] = torch.randn(shape, generator=g)
    return out


@pytest.fixture(scope="module")
def r18_state():
    return random_resnet18_state()


def torchvision_to_d2(name):
    """torchvision ResNet name -> detectron2 name, written independently of the code under test."""
    if name.startswith("conv1."):
        return "stem.conv1." + name[len("conv1.") :]
    if name.startswith("bn1."):
        return "stem.conv1.norm." + name[len("bn1.") :]
    m = re.match(r"layer(\d)\.(\d+)\.(.*)", name)
    if not m:
        return name
    stage, block, rest = int(m.group(1)) + 1, m.group(2), m.group(3)
    prefix = f"res{stage}.{block}."
    for k in (1, 2, 3):
        if rest.startswith(f"conv{k}."):
            return prefix + rest
        if rest.startswith(f"bn{k}."):
            return prefix + f"conv{k}.norm." + rest[len(f"bn{k}.") :]
    if rest.startswith("downsample.0."):
        return prefix + "shortcut." + rest[len("downsample.0.") :]
    if rest.startswith("downsample.1."):
        return prefix + "shortcut.norm." + rest[len("downsample.1.") :]
    return name


# --------------------------------------------------------------------------- #
# TorchvisionResNet
# --------------------------------------------------------------------------- #
def test_resnet18_output_shapes_strides_channels():
    """64x64 input -> res2..res5 of 64/128/256/512 channels at strides 4/8/16/32,
    and output_shape() says the same."""
    net = TorchvisionResNet(18).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 3, 64, 64))
    expected = {"res2": (64, 4), "res3": (128, 8), "res4": (256, 16), "res5": (512, 32)}
    assert list(out) == list(expected)
    for name, (ch, s) in expected.items():
        assert tuple(out[name].shape) == (1, ch, 64 // s, 64 // s)
        assert net.output_shape()[name].channels == ch and net.output_shape()[name].stride == s
    assert net.size_divisibility == 32


def test_resnet18_matches_torchvision_forward(r18_state):
    """With the same weights, res5 equals torchvision's ResNet-18 before avgpool."""
    state = r18_state
    ref = torchvision.models.resnet18()
    ref.load_state_dict(state)
    ref.eval()
    net = TorchvisionResNet(18).eval()
    net.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")})
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        body = nn.Sequential(*list(ref.children())[:-2])
        torch.testing.assert_close(net(x)["res5"], body(x))


def test_resnet_invalid_depth():
    """Unsupported depths are rejected with a ValueError naming the key."""
    with pytest.raises(ValueError, match="MODEL.RESNETS.DEPTH"):
        TorchvisionResNet(19)


# --------------------------------------------------------------------------- #
# load_backbone_weights
# --------------------------------------------------------------------------- #
def test_load_torchvision_pth(tmp_path, r18_state):
    """A torchvision .pth loads every backbone tensor unchanged; fc.* is reported as
    unexpected and nothing is missing."""
    state = r18_state
    path = tmp_path / "r18.pth"
    torch.save(state, path)
    net = TorchvisionResNet(18)
    report = load_backbone_weights(net, str(path))
    own = net.state_dict()
    for k, v in own.items():
        assert torch.equal(v, state[k]), k
    assert sorted(report["unexpected"]) == ["fc.bias", "fc.weight"]
    assert report["missing"] == [] and report["mismatched"] == []
    assert len(report["loaded"]) == len(own)


def test_load_torchvision_pth_with_dataparallel_prefix(tmp_path, r18_state):
    """A {"state_dict": {"module.<name>": ...}} checkpoint loads the same tensors."""
    state = r18_state
    path = tmp_path / "r18_dp.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, path)
    net = TorchvisionResNet(18)
    load_backbone_weights(net, str(path))
    assert torch.equal(net.layer3[1].conv2.weight, state["layer3.1.conv2.weight"])
    assert torch.equal(net.bn1.running_var, state["bn1.running_var"])


def test_load_detectron2_pkl(tmp_path, r18_state):
    """A detectron2-named .pkl ({"model": {name: ndarray}}) lands every tensor in
    the right torchvision parameter."""
    state = r18_state
    d2 = {
        torchvision_to_d2(k): v.numpy()
        for k, v in state.items()
        if not k.startswith("fc.") and not k.endswith("num_batches_tracked")
    }
    assert "res2.0.conv1.norm.weight" in d2 and "res3.0.shortcut.norm.running_mean" in d2
    assert "stem.conv1.weight" in d2 and "stem.conv1.norm.bias" in d2
    path = tmp_path / "r18.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": d2, "__author__": "torchvision", "matching_heuristics": True}, f)
    net = TorchvisionResNet(18)
    report = load_backbone_weights(net, str(path))
    for k, v in net.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(v, state[k]), k
    assert report["missing"] == [] and report["unexpected"] == [] and report["mismatched"] == []
    assert torch.equal(net.layer4[0].downsample[1].weight, state["layer4.0.downsample.1.weight"])


def test_missing_weights_file_names_the_config_key(tmp_path):
    """A missing file is a FileNotFoundError that tells the user which key to fix."""
    with pytest.raises(FileNotFoundError, match="MODEL.CENTERX.BACKBONE_WEIGHTS"):
        load_backbone_weights(nn.Conv2d(3, 4, 1), str(tmp_path / "nope.pth"))


def test_optional_weights_that_cannot_be_read_leave_random_init_with_a_warning(tmp_path):
    """MODEL.CENTERX.BACKBONE_WEIGHTS_OPTIONAL: an unreachable file (here a missing one, as
    an offline machine sees the recipes' URL) is a warning and random initialisation; a
    file that is read but fits nothing still stops; without the key the missing file stops."""
    from detectron2.modeling import build_backbone

    import centerx

    class Messages(logging.Handler):
        def __init__(self):
            super().__init__(logging.WARNING)
            self.text = ""

        def emit(self, record):
            self.text += record.getMessage()

    cfg = centerx.get_centerx_cfg()
    cfg.merge_from_list(
        [
            "MODEL.BACKBONE.NAME",
            "build_torchvision_resnet_backbone",
            "MODEL.RESNETS.DEPTH",
            "18",
            "MODEL.CENTERX.BACKBONE_WEIGHTS",
            str(tmp_path / "nope.pth"),
        ]
    )
    with pytest.raises(FileNotFoundError, match="MODEL.CENTERX.BACKBONE_WEIGHTS"):
        build_backbone(cfg, ShapeSpec(channels=3))
    cfg.MODEL.CENTERX.BACKBONE_WEIGHTS_OPTIONAL = True
    torch.manual_seed(0)
    messages, module_logger = Messages(), logging.getLogger("centerx.modeling.backbones.weights")
    module_logger.addHandler(messages)
    try:
        optional = build_backbone(cfg, ShapeSpec(channels=3))
    finally:
        module_logger.removeHandler(messages)
    cfg.MODEL.CENTERX.BACKBONE_WEIGHTS = ""
    torch.manual_seed(0)
    plain = build_backbone(cfg, ShapeSpec(channels=3))
    for (k, a), (_, b) in zip(optional.state_dict().items(), plain.state_dict().items()):
        assert torch.equal(a, b), k
    assert "starts from random initialisation (MODEL.CENTERX.BACKBONE_WEIGHTS_OPTIONAL is True)" in messages.text
    other = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.randn(3, 3)}, other)
    cfg.MODEL.CENTERX.BACKBONE_WEIGHTS = str(other)
    with pytest.raises(ValueError, match="No tensor of"):
        build_backbone(cfg, ShapeSpec(channels=3))


def test_weights_file_without_matching_key(tmp_path):
    """A file none of whose tensors fits the backbone is a ValueError, not a silent
    random init."""
    path = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.randn(3, 3), "decoder.bias": torch.randn(3)}, path)
    with pytest.raises(ValueError):
        load_backbone_weights(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)), str(path))


def test_shape_mismatch_is_reported_not_fatal(tmp_path, r18_state):
    """A tensor of the wrong shape is reported as mismatched (and missing), left at
    its init, and the other tensors still load."""
    state = dict(r18_state)
    state["conv1.weight"] = torch.randn(64, 3, 3, 3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    net = TorchvisionResNet(18)
    before = net.conv1.weight.detach().clone()
    report = load_backbone_weights(net, str(path))
    assert len(report["mismatched"]) == 1 and report["mismatched"][0].startswith("conv1.weight")
    assert "conv1.weight" in report["missing"]
    assert torch.equal(net.conv1.weight, before)
    assert torch.equal(net.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])


# --------------------------------------------------------------------------- #
# upsampler, deformable conv, heads
# --------------------------------------------------------------------------- #
def test_bilinear_init_matches_interpolate():
    """ConvTranspose2d(C, C, 4, 2, 1) after bilinear_init_ equals
    F.interpolate(x2, bilinear, align_corners=False) per channel on interior cells
    (borders differ: zero padding vs edge clamping)."""
    C = 3
    up = nn.ConvTranspose2d(C, C, 4, stride=2, padding=1, bias=False)
    bilinear_init_(up)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, C, 6, 7, generator=g)
    with torch.no_grad():
        got = up(x)
    ref = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    assert got.shape == ref.shape == (2, C, 12, 14)
    torch.testing.assert_close(got[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1])
    assert not torch.allclose(got[..., 0, :], ref[..., 0, :])  # the border really differs


def test_upsampler_shape():
    """res5 [1, 512, 4, 4] (stride 32) -> [1, 64, 32, 32] (stride 4); the shallower
    feature the backbone also gives is not read."""
    shapes = {"res4": ShapeSpec(channels=256, stride=16), "res5": ShapeSpec(channels=512, stride=32)}
    neck = CenterNetUpsampler(shapes).eval()
    with torch.no_grad():
        out = neck({"res4": torch.randn(1, 256, 8, 8), "res5": torch.randn(1, 512, 4, 4)})
    assert tuple(out.shape) == (1, 64, 32, 32)
    assert (neck.in_feature, neck.out_channels, neck.out_stride) == ("res5", 64, 4)


def test_deformable_upsampler_shape():
    """The deformable variant maps the same shapes and really uses modulated DCN."""
    neck = CenterNetUpsampler({"c": ShapeSpec(channels=32, stride=32)}, channels=(16, 8, 4), deformable=True).eval()
    assert sum(isinstance(m, ModulatedDeformConv2d) for m in neck.modules()) == 3
    with torch.no_grad():
        out = neck({"c": torch.randn(1, 32, 3, 5)})
    assert tuple(out.shape) == (1, 4, 24, 40)


@pytest.mark.parametrize("bias", [False, True])
def test_deform_conv_zero_offsets_is_half_plain_conv(bias):
    """At init (zero offsets, mask sigmoid(0) = 0.5) the modulated DCN equals a plain
    conv with the same weight times 0.5 (plus the unmasked bias)."""
    g = torch.Generator().manual_seed(1)
    dcn = ModulatedDeformConv2d(4, 5, 3, padding=1, bias=bias)
    if bias:
        with torch.no_grad():
            dcn.bias.copy_(torch.randn(5, generator=g))
    x = torch.randn(2, 4, 7, 6, generator=g)
    with torch.no_grad():
        got = dcn(x)
        expected = 0.5 * F.conv2d(x, dcn.weight, padding=1)
        if bias:
            expected = expected + dcn.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_heads_init_and_shapes():
    """On a zero input the heads output their last biases: heatmap -2.19 (CenterNet's),
    wh and offset 0; shapes [N, C, H, W], [N, 2, H, W], [N, 2, H, W]."""
    heads = CenterNetHeads(16, num_classes=5, hidden_channels=8)
    with torch.no_grad():
        out = heads(torch.zeros(2, 16, 6, 7))
    assert tuple(out["heatmap"].shape) == (2, 5, 6, 7)
    assert tuple(out["wh"].shape) == (2, 2, 6, 7) and tuple(out["offset"].shape) == (2, 2, 6, 7)
    assert torch.allclose(out["heatmap"], torch.full_like(out["heatmap"], -2.19))
    assert (out["wh"] == 0).all() and (out["offset"] == 0).all()
    convs = [m for m in heads.heatmap.modules() if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(3, 3), (1, 1)]
