"""Mixed precision: SOLVER.AMP.FP32_MODULES keeps the named parts of a model in
float32 under autocast (and nothing else), with the state dict unchanged."""
import pytest
import torch

from centerx.engine.amp import keep_in_float32

from tiny_models import build, images


def _conv_output_dtypes(model, batch):
    """{module name: dtype of its output} of every Conv2d in one forward under bfloat16 autocast."""
    seen, handles = {}, []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Conv2d):
            handles.append(module.register_forward_hook(
                lambda m, a, out, name=name: seen.__setitem__(name, out.dtype)))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model.predict(batch)
    for h in handles:
        h.remove()
    return seen


@pytest.mark.parametrize("arch", ["CenterNet", "TTFNet"])
def test_named_parts_run_in_float32_under_autocast_and_the_rest_in_bfloat16(arch):
    model = build(arch)
    batch = images(1, 64, 64)
    before = _conv_output_dtypes(model, batch)
    assert set(before.values()) == {torch.bfloat16}  # autocast reaches every conv without the hooks
    keys = list(model.state_dict())
    assert keep_in_float32(model, ["heads"]) == ["heads"]
    after = _conv_output_dtypes(model, batch)
    assert {n: d for n, d in after.items() if n.startswith("heads.")} == \
        {n: torch.float32 for n in after if n.startswith("heads.")}
    assert {d for n, d in after.items() if not n.startswith("heads.")} == {torch.bfloat16}
    assert list(model.state_dict()) == keys
    with torch.no_grad():  # outside autocast nothing changes: the hooks only turn autocast off
        torch.testing.assert_close(model.predict(batch)["heatmap"], build(arch).predict(batch)["heatmap"])


def test_unknown_part_is_named_with_the_models_parts():
    with pytest.raises(ValueError, match=r"\['head'\] are not submodules of .* its parts are \[.*'heads'"):
        keep_in_float32(build("TTFNet"), ["head"])


@pytest.mark.parametrize("arch", ["CenterNet", "TTFNet"])
def test_every_part_the_precision_experiment_names_exists(arch):
    """projects/precision/precision.py's parts name real modules of both detectors."""
    from project_scripts import load_script

    script = load_script("precision", "precision")
    for part, modules in script.PARTS.items():
        assert keep_in_float32(build(arch), modules[arch.lower()]) == list(modules[arch.lower()]), part
    assert script.setting_overrides("bf16-fp32-heatmap+box", arch.lower())[-1] == \
        script.PARTS["heatmap"][arch.lower()] + script.PARTS["box"][arch.lower()]
