"""Checkpoints written by earlier releases still load.

``tests/fixtures/state_dict_72ca759.json`` records, for tiny CenterNet / TTFNet
models with every structural option (CoordConv, SPP, DCN, IoU-aware heads), the
name and shape of every state-dict entry as the code at commit 72ca759 wrote
them (``write_manifest`` run in a checkout of that commit). A checkpoint with
exactly those entries, in detectron2's format, must load strictly into the
model today's code builds from the same config, every value landing in the
parameter of the same name.
"""

import json
import os

import pytest
import torch
from detectron2.modeling import build_model

from centerx.checkpoint import StrictCheckpointer

from tiny_models import tiny_cfg

MANIFEST = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "state_dict_72ca759.json"
)


def write_manifest(path, cases):
    """{name: (meta-architecture, config overrides)} -> json of each model's state-dict shapes."""
    out = {}
    for name, (arch, opts) in cases.items():
        model = build_model(tiny_cfg(arch, *opts))
        out[name] = {
            "meta_architecture": arch,
            "opts": list(opts),
            "state_dict": {k: list(v.shape) for k, v in model.state_dict().items()},
        }
    with open(path, "w") as f:
        json.dump({"models": out}, f, indent=1, sort_keys=True)


with open(MANIFEST) as f:
    MODELS = json.load(f)["models"]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_checkpoint_of_an_earlier_release_loads_strictly(name, tmp_path):
    entry = MODELS[name]
    g = torch.Generator().manual_seed(0)
    old = {k: torch.randn(shape, generator=g) if shape else torch.tensor(7) for k, shape in entry["state_dict"].items()}
    path = tmp_path / "old.pth"
    torch.save({"model": old, "iteration": 99}, path)
    model = build_model(tiny_cfg(entry["meta_architecture"], *entry["opts"]))
    StrictCheckpointer(model).load(str(path))
    now = model.state_dict()
    assert sorted(now) == sorted(old)
    for key, value in old.items():
        torch.testing.assert_close(now[key].to(value.dtype), value, msg=key)


def test_a_checkpoint_with_other_shortcut_kernels_is_refused_with_the_key_to_set(tmp_path):
    """A TTFNet saved with 3x3 shortcuts (the nano configs before 0.2.1) loaded into one
    built with SHORTCUT_KERNEL_SIZE 1: refused, naming every shortcut conv whose kernel
    alone differs and the key that sets it."""
    from detectron2.checkpoint import DetectionCheckpointer

    from centerx.checkpoint import WeightsMismatchError

    DetectionCheckpointer(build_model(tiny_cfg("TTFNet")), save_dir=str(tmp_path)).save("k3")
    model = build_model(tiny_cfg("TTFNet", "MODEL.TTFNET.SHORTCUT_KERNEL_SIZE", "1"))
    with pytest.raises(WeightsMismatchError) as refused:
        StrictCheckpointer(model).load(str(tmp_path / "k3.pth"))
    message = str(refused.value)
    shortcut_convs = sorted(
        k for k, v in model.state_dict().items() if k.startswith("upsampler.shortcuts.") and v.dim() == 4
    )
    assert shortcut_convs and f"kernel size differs for {len(shortcut_convs)} conv weights" in message
    assert all(k in message for k in shortcut_convs) and "MODEL.TTFNET.SHORTCUT_KERNEL_SIZE" in message
