"""TorchScript and OpenVINO exports: each graph, run in its own runtime (torch.jit.load,
OpenVINO's CPU plugin) on inputs of another size than the traced one, finds the
detections (or the peaks and regression maps) PyTorch finds."""

import numpy as np
import pytest
import torch

from centerx.deploy import DeployModel, exporters
from centerx.deploy.exporters import export
from centerx.deploy.runtimes import build_runtime
from centerx.deploy.verify import FP32_TOLERANCE, compare_detections, compare_raw
from centerx.deploy.wrapper import build_deploy_model

from tiny_models import SIZE, randomize_, tiny_cfg

pytestmark = pytest.mark.slow


def exported(arch, fmt, raw, tmp_path):
    from detectron2.modeling import build_model

    cfg = tiny_cfg(arch)
    model = randomize_(build_model(cfg), seed=11).eval()
    weights = tmp_path / "w.pth"
    torch.save({"model": model.state_dict()}, weights)
    cfg.merge_from_list(["MODEL.WEIGHTS", str(weights)])
    path = export(cfg, fmt, str(tmp_path / "out"), raw=raw or None)
    return cfg, DeployModel(model, raw=raw).eval(), path


@pytest.mark.parametrize("fmt", ["torchscript", "openvino"])
@pytest.mark.parametrize("arch", ["CenterNet", "TTFNet"])
def test_decoded_graph_matches_pytorch(fmt, arch, tmp_path):
    if fmt == "openvino":
        pytest.importorskip("openvino")
    cfg, reference_model, path = exported(arch, fmt, False, tmp_path)
    runtime = build_runtime(fmt, cfg, path)
    images = torch.rand(2, 3, SIZE[0] + 32, SIZE[1] - 32, generator=torch.Generator().manual_seed(5)) * 255
    with torch.no_grad():
        reference = {k: v.numpy() for k, v in reference_model(images).items()}
    outputs = runtime.run(images.numpy())
    assert set(outputs) == {"boxes", "scores", "classes"}
    agreement = compare_detections(outputs, reference, **FP32_TOLERANCE)
    assert agreement.total > 10 and agreement.ok_for_trained_model(), agreement


@pytest.mark.parametrize("fmt", ["torchscript", "openvino"])
def test_raw_graph_matches_pytorch(fmt, tmp_path):
    if fmt == "openvino":
        pytest.importorskip("openvino")
    cfg, reference_model, path = exported("TTFNet", fmt, True, tmp_path)
    runtime = build_runtime(fmt, cfg, path)
    images = torch.rand(1, 3, *SIZE, generator=torch.Generator().manual_seed(6)) * 255
    with torch.no_grad():
        reference = {k: v.numpy() for k, v in reference_model(images).items()}
    outputs = runtime.run(images.numpy())
    assert sorted(outputs) == ["heatmap", "ltrb"]
    agreement = compare_raw(outputs, reference, FP32_TOLERANCE["score"])
    assert agreement.total > 10 and agreement.ok_for_trained_model(), agreement
    # and the runtime decodes the raw graph itself
    dets = runtime([np.full((SIZE[0], SIZE[1], 3), 100, np.uint8)])
    assert set(dets[0]) == {"boxes", "scores", "classes"}


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "openvino"])
def test_a_random_model_is_checked_against_the_model_written(fmt, tmp_path, monkeypatch):
    """--allow-random-weights (the latency benchmarks): the file is checked against
    the very model it was made from; a second random initialisation differs (the
    OpenVINO export of COCO-sized random models failed its check on that)."""
    pytest.importorskip({"onnx": "onnxruntime", "torchscript": "torch", "openvino": "openvino"}[fmt])
    built = []

    def build_once(*args, **kwargs):
        built.append(build_deploy_model(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(exporters, "build_deploy_model", build_once)
    cfg = tiny_cfg("TTFNet")
    path = export(cfg, fmt, str(tmp_path), allow_random=True)
    assert len(built) == 1
    images = torch.rand(1, 3, *SIZE, generator=torch.Generator().manual_seed(7)) * 255
    with torch.no_grad():
        reference = {k: v.numpy() for k, v in built[0](images).items()}
    agreement = compare_detections(
        build_runtime(exporters.get_exporter(fmt).runtime, cfg, path).run(images.numpy()), reference, **FP32_TOLERANCE
    )
    assert agreement.total == 10 and agreement.ok, agreement  # K = 10 detections, all found
