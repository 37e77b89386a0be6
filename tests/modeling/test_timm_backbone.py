"""Backbones from timm (centerx/modeling/backbones/timm.py), offline: every light
model offered builds at strides 4..32 with timm's own channel counts, runs forward
and backward, serves as CenterNet's and TTFNet's backbone, loads a weights file by
path and by URL (a local HTTP server) strictly, refuses another model's file, and
follows FREEZE_AT and BACKBONE_NORM."""

import glob
import io
import os

import pytest
import timm
import torch
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_model
from test_downloads import serve  # noqa: F401  (the local HTTP server fixture)

import centerx
from centerx.modeling.backbones import TimmBackbone

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def configured_backbones() -> list[str]:
    """Every MODEL.TIMM.NAME the shipped configs set (through their _BASE_ chains)."""
    names = set()
    for path in glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True):
        cfg = centerx.get_centerx_cfg()
        cfg.merge_from_file(path)
        if cfg.MODEL.BACKBONE.NAME == "build_timm_backbone":
            names.add(cfg.MODEL.TIMM.NAME)
    return sorted(names)


CONFIGURED = configured_backbones()
# the configs' backbones, light ImageNet ones a CPU detector would use, and a ResNet
NAMES = sorted(
    set(CONFIGURED) | {"mobilenetv3_small_100", "lcnet_050", "efficientnet_lite0", "ghostnet_100", "resnet18"}
)


def timm_channels(name):
    """timm's channel count of ``name`` at each stride 4, 8, 16, 32, from the full model's feature_info."""
    info = {level["reduction"]: level["num_chs"] for level in timm.create_model(name).feature_info}
    return [info[s] for s in (4, 8, 16, 32)]


@pytest.mark.parametrize("name", NAMES)
def test_a_timm_backbone_gives_strides_4_to_32_and_trains(name, one_thread):
    backbone = TimmBackbone(name)
    shapes = backbone.output_shape()
    assert list(shapes) == ["res2", "res3", "res4", "res5"]
    assert [shapes[k].stride for k in shapes] == [4, 8, 16, 32]
    assert [shapes[k].channels for k in shapes] == timm_channels(name)
    out = backbone(torch.randn(2, 3, 64, 96))
    assert [tuple(v.shape) for v in out.values()] == [
        (2, c, 64 // s, 96 // s) for c, s in zip(timm_channels(name), (4, 8, 16, 32))
    ]
    sum(v.mean() for v in out.values()).backward()
    assert all(p.grad is not None for p in backbone.parameters() if p.requires_grad)


def detector_cfg(arch, *opts):
    cfg = centerx.get_centerx_cfg()
    cfg.merge_from_file(f"configs/shapes/{arch.lower()}_r18_demo.yaml")
    cfg.merge_from_list(
        [
            "MODEL.BACKBONE.NAME",
            "build_timm_backbone",
            "MODEL.TIMM.NAME",
            "lcnet_050",
            "MODEL.DEVICE",
            "cpu",
            "MODEL.CENTERX.CHANNELS_LAST",
            False,
            *opts,
        ]
    )
    return cfg


@pytest.mark.parametrize("arch", ["CenterNet", "TTFNet"])
def test_the_detectors_take_a_timm_backbone(arch, one_thread, monkeypatch):
    monkeypatch.chdir(centerx.__path__[0] + "/..")
    model = build_model(detector_cfg(arch, f"MODEL.{arch.upper()}.DEFORMABLE", False)).eval()
    with torch.no_grad():
        maps = model.predict(torch.randn(1, 3, 128, 128))
    assert maps[model.class_map].shape == (1, 4, 32, 32)


def saved_weights(name, seed):
    """The full timm model's state dict (classifier included), as a user's .pth holds it."""
    torch.manual_seed(seed)
    return timm.create_model(name).state_dict()


def test_the_configs_name_timm_backbones():
    assert {"dla34", "lcnet_075"} <= set(CONFIGURED)


@pytest.mark.parametrize("name", ["mobilenetv3_small_100", *CONFIGURED])
def test_weights_by_path_and_by_url_are_loaded_exactly(name, tmp_path, serve):  # noqa: F811
    state = saved_weights(name, seed=3)
    path = tmp_path / "mine.pth"
    torch.save(state, path)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    url, _ = serve({"/mine.pth": buffer.getvalue()})
    for weights in (str(path), f"{url}/mine.pth"):
        backbone = TimmBackbone(name, weights=weights)
        own = backbone.body.state_dict()
        assert own and all(torch.equal(v, state[k]) for k, v in own.items()), weights


def test_another_models_weights_are_refused(tmp_path):
    path = tmp_path / "lcnet.pth"
    torch.save(saved_weights("lcnet_050", seed=1), path)
    with pytest.raises(ValueError, match="MODEL.TIMM.WEIGHTS .* does not fit the timm model 'mobilenetv3_small_100'"):
        TimmBackbone("mobilenetv3_small_100", weights=str(path))
    with pytest.raises(FileNotFoundError, match="MODEL.TIMM.WEIGHTS"):
        TimmBackbone("mobilenetv3_small_100", weights=str(tmp_path / "absent.pth"))
    with pytest.raises(ValueError, match="'mobilenetv3_smal' is not a timm model"):
        TimmBackbone("mobilenetv3_smal")


def test_timm_hub_weights_offline_name_the_key_and_a_local_file(tmp_path, monkeypatch):
    """MODEL.TIMM.WEIGHTS "timm" where timm's hub cannot be reached (here: huggingface_hub
    offline, an empty cache): a WeightsDownloadError naming the key and what to give
    instead, where huggingface_hub's own error named neither."""
    import huggingface_hub.constants

    from centerx.checkpoint import WeightsDownloadError

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(WeightsDownloadError, match=r"^MODEL.TIMM.WEIGHTS 'timm': timm's pretrained weights of "
                       r"'mobilenetv3_small_100' could not be fetched .* give a local path or URL"):  # fmt: skip
        TimmBackbone("mobilenetv3_small_100", weights="timm")


def test_freeze_at_and_frozen_batchnorm(tmp_path):
    name = "resnet18"  # stem conv1 / bn1, then layer1..layer4 at strides 4..32
    path = tmp_path / "r18.pth"
    torch.save(saved_weights(name, seed=2), path)
    frozen = TimmBackbone(name, weights=str(path), freeze_at=2)
    trainable = {n.split(".")[0] for n, p in frozen.body.named_parameters() if p.requires_grad}
    fixed = {n.split(".")[0] for n, p in frozen.body.named_parameters() if not p.requires_grad}
    assert fixed == {"conv1", "layer1"} and trainable == {"layer2", "layer3", "layer4"}
    assert isinstance(frozen.body.bn1, FrozenBatchNorm2d) and isinstance(frozen.body.layer1[0].bn1, FrozenBatchNorm2d)
    assert isinstance(frozen.body.layer2[0].bn1, torch.nn.BatchNorm2d)
    # randomly initialised: nothing frozen, whatever FREEZE_AT says
    assert all(p.requires_grad for p in TimmBackbone(name, freeze_at=2).parameters())
    everything = TimmBackbone(name, norm="FrozenBN")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in everything.modules())


def test_act_layer_replaces_the_models_activation(one_thread):
    """MODEL.TIMM.ACT_LAYER relu on LCNet: no hard-swish left (its squeeze-excite gates keep
    their hard-sigmoid), a ReLU wherever one was, the same parameters; an unknown name and a
    model whose builder takes no activation are refused by name."""

    def kinds(backbone):
        return [type(m).__name__ for m in backbone.modules()]

    own, relu = TimmBackbone("lcnet_050"), TimmBackbone("lcnet_050", act_layer="relu")
    assert "Hardswish" in kinds(own) and "Hardswish" not in kinds(relu)
    assert kinds(relu).count("ReLU") == kinds(own).count("Hardswish") + kinds(own).count("ReLU")
    assert kinds(relu).count("Hardsigmoid") == kinds(own).count("Hardsigmoid") > 0
    assert {k: v.shape for k, v in relu.state_dict().items()} == {k: v.shape for k, v in own.state_dict().items()}
    x = torch.randn(1, 3, 64, 64)
    assert all((v >= 0).all() for v in relu(x).values()), "each level ends in a ReLU"
    with pytest.raises(ValueError, match="ACT_LAYER 'swishy' is not a timm activation name"):
        TimmBackbone("lcnet_050", act_layer="swishy")
    with pytest.raises(ValueError, match="timm model 'dla34' does not take another activation"):
        TimmBackbone("dla34", act_layer="relu")


def test_model_args_reach_the_timm_builder(one_thread):
    """MODEL.TIMM.MODEL_ARGS: a ResNet-18 at other widths and depths has the channels and
    blocks asked for (counted on the module), in a detector built from the config too;
    malformed, reserved, repeated and unknown arguments are refused by name."""
    args = centerx.modeling.backbones.timm.parse_model_args(
        ["channels=(24, 48, 96, 192)", "stem_type=deep", " stem_width = 16", "layers=(1, 1, 2, 1)", "zero_init_last=0"]
    )
    assert args == {
        "channels": (24, 48, 96, 192),
        "stem_type": "deep",
        "stem_width": 16,
        "layers": (1, 1, 2, 1),
        "zero_init_last": 0,
    }
    backbone = TimmBackbone("resnet18", model_args=args)
    assert [s.channels for s in backbone.output_shape().values()] == [24, 48, 96, 192]
    assert [m.out_channels for m in backbone.body.conv1 if isinstance(m, torch.nn.Conv2d)] == [16, 16, 32]
    assert [len(getattr(backbone.body, f"layer{i}")) for i in (1, 2, 3, 4)] == [1, 1, 2, 1]
    out = backbone(torch.randn(1, 3, 64, 64))
    assert [tuple(v.shape) for v in out.values()] == [(1, 24, 16, 16), (1, 48, 8, 8), (1, 96, 4, 4), (1, 192, 2, 2)]

    cfg = detector_cfg(
        "TTFNet",
        "MODEL.TIMM.NAME",
        "resnet18",
        "MODEL.TIMM.MODEL_ARGS",
        ["channels=(16, 32, 64, 128)", "layers=(1, 1, 1, 1)"],
    )
    model = build_model(cfg)
    assert [s.channels for s in model.backbone.output_shape().values()] == [16, 32, 64, 128]

    parse = centerx.modeling.backbones.timm.parse_model_args
    with pytest.raises(ValueError, match="item 'stem_width' is not 'name=value'"):
        parse(["stem_width"])
    with pytest.raises(ValueError, match="may not set 'act_layer': set MODEL.TIMM.ACT_LAYER"):
        parse(["act_layer=relu"])
    with pytest.raises(ValueError, match="may not set 'pretrained': set MODEL.TIMM.WEIGHTS"):
        parse(["pretrained=True"])
    with pytest.raises(ValueError, match=r"'\(24, 48' is neither a Python literal nor a plain name"):
        parse(["channels=(24, 48"])
    with pytest.raises(ValueError, match="sets 'stem_width' twice"):
        parse(["stem_width=16", "stem_width=24"])
    with pytest.raises(ValueError, match="MODEL.TIMM.MODEL_ARGS: the timm model 'resnet18' does not take widths"):
        TimmBackbone("resnet18", model_args={"widths": (1, 2)})
    with pytest.raises(ValueError, match="may not set 'features_only'"):
        TimmBackbone("resnet18", model_args={"features_only": False})


def test_weights_of_the_models_own_shape_only(tmp_path):
    """ResNet-18's own weights do not fit a ResNet-18 slimmed by MODEL.TIMM.MODEL_ARGS (refused,
    naming the arguments); the slimmed model's weights load into it exactly."""
    full, slim = tmp_path / "r18.pth", tmp_path / "r18_slim.pth"
    torch.save(saved_weights("resnet18", seed=1), full)
    args = {"channels": (16, 32, 64, 128)}
    torch.save(timm.create_model("resnet18", **args).state_dict(), slim)
    with pytest.raises(ValueError, match=r"built with MODEL.TIMM.MODEL_ARGS \{'channels': \(16, 32, 64, 128\)\}"):
        TimmBackbone("resnet18", weights=str(full), model_args=args)
    state = torch.load(slim)
    loaded = TimmBackbone("resnet18", weights=str(slim), model_args=args).body.state_dict()
    assert loaded and all(torch.equal(v, state[k]) for k, v in loaded.items())
