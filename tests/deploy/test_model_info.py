"""Exported files describe themselves: class names, input size, normalisation,
threshold, architecture, version and the deployment config travel inside them."""

import json

import onnx
import pytest

from centerx.deploy.model_info import (
    ModelInfoError,
    config_from_model_file,
    describe_model,
    load_model_config,
    read_model_info,
    write_sidecar,
)
from centerx.deploy.onnx_export import export_onnx
from centerx.deploy.runtimes import runtime_for_file
from centerx.deploy.wrapper import DeployModel

from tiny_models import SIZE, build, tiny_cfg

pytestmark = pytest.mark.usefixtures("one_thread")


def test_onnx_export_carries_its_config_and_a_config_is_rebuilt_from_it(tmp_path):
    cfg = tiny_cfg(
        "CenterNet",
        "MODEL.CENTERX.CLASS_NAMES",
        "('cat', 'dog', 'bird')",
        "MODEL.PIXEL_STD",
        "[1.0, 2.0, 3.0]",
        "MODEL.CENTERNET.SCORE_THRESH_TEST",
        "0.05",
    )
    path = str(tmp_path / "model.onnx")
    export_onnx(DeployModel(build("CenterNet")).eval(), path, SIZE, metadata=describe_model(cfg))
    props = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert json.loads(props["class_names"]) == ["cat", "dog", "bird"]
    assert json.loads(props["input_size"]) == list(SIZE) and json.loads(props["pixel_std"]) == [1.0, 2.0, 3.0]
    assert (props["architecture"], props["num_classes"], props["score_threshold"]) == ("CenterNet", "3", "0.05")
    assert read_model_info(path)["centerx_version"] == props["centerx_version"]
    rebuilt = config_from_model_file(path, ["TEST.DETECTIONS_PER_IMAGE", "7"])
    assert rebuilt.MODEL.CENTERX.CLASS_NAMES == ("cat", "dog", "bird")
    assert rebuilt.MODEL.CENTERNET.NUM_CLASSES == 3 and tuple(rebuilt.EXPORT.INPUT_SIZE) == SIZE
    assert list(rebuilt.MODEL.PIXEL_STD) == [1.0, 2.0, 3.0] and rebuilt.TEST.DETECTIONS_PER_IMAGE == 7
    # a mistyped override is the override's error, not "cannot read it as a .onnx model"
    with pytest.raises(ValueError, match=r"^TEST.DETECTIONS_PER_IMAGES \(among the KEY VALUE overrides\) is not a"):
        load_model_config(model=path, opts=["TEST.DETECTIONS_PER_IMAGES", "7"])


def test_a_file_without_properties_asks_for_its_config(tmp_path):
    path = str(tmp_path / "old.onnx")
    export_onnx(DeployModel(build("CenterNet")).eval(), path, SIZE)
    assert read_model_info(path) is None
    with pytest.raises(ModelInfoError, match=r"old.onnx carries no centerX config .* --config-file"):
        config_from_model_file(path)


def test_formats_without_a_place_for_properties_keep_them_beside_the_file(tmp_path):
    prototxt = tmp_path / "model.prototxt"
    prototxt.write_text("name: 'x'\n")
    info = describe_model(tiny_cfg("TTFNet", "MODEL.CENTERX.CLASS_NAMES", "('a', 'b', 'c')"), raw=True)
    assert write_sidecar(str(prototxt), info) == str(prototxt) + ".centerx.json"
    assert read_model_info(str(prototxt)) == info and info["outputs"] == "raw"
    assert config_from_model_file(str(prototxt)).MODEL.TTFNET.NUM_CLASSES == 3


@pytest.mark.parametrize(
    "path, runtime",
    [
        ("m.onnx", "onnxruntime"),
        ("M_INT8.ONNX", "onnxruntime"),
        ("m.xml", "openvino"),
        ("m.ts", "torchscript"),
        ("m.prototxt", "caffe"),
        ("m_fp32.engine", "tensorrt"),
    ],
)
def test_the_runtime_comes_from_the_file_ending(path, runtime):
    assert runtime_for_file(path) == runtime


def test_a_checkpoint_given_as_model_is_pointed_to_model_weights():
    with pytest.raises(ValueError, match=r"No runtime reads a '.pth' file .* MODEL.WEIGHTS"):
        runtime_for_file("output/run/model_final.pth")


def test_export_takes_several_formats_then_the_overrides(capsys):
    from project_scripts import load_script

    export = load_script("speedup", "export")
    args = export.parse_args(["--config-file", "c.yaml", "--format", "onnx", "openvino", "MODEL.WEIGHTS", "w.pth"])
    assert (args.format, args.opts) == (["onnx", "openvino"], ["MODEL.WEIGHTS", "w.pth"])
    with pytest.raises(SystemExit):
        export.parse_args(["--config-file", "c.yaml", "--format", "onnx", "onnxx", "MODEL.WEIGHTS", "w.pth"])
    error = capsys.readouterr().err  # (other tests may have registered formats of their own)
    assert "--format: unknown onnxx; registered formats: caffe, " in error and " onnx-int8, openvino, " in error


def test_open_exported_runs_a_file_with_nothing_else(tmp_path):
    import numpy as np

    from centerx.deploy.model_info import open_exported
    from centerx.deploy.runtimes import OnnxRuntime

    cfg = tiny_cfg("TTFNet", "MODEL.CENTERX.CLASS_NAMES", "('a', 'b', 'c')", "MODEL.TTFNET.SCORE_THRESH_TEST", "0.0")
    path = str(tmp_path / "model.onnx")
    export_onnx(DeployModel(build("TTFNet")).eval(), path, SIZE, metadata=describe_model(cfg))
    image = np.random.default_rng(0).integers(0, 255, (100, 140, 3), dtype=np.uint8)
    alone = open_exported(path)
    assert isinstance(alone, OnnxRuntime)
    got, want = alone([image])[0], OnnxRuntime(cfg, path)([image])[0]
    assert len(want["scores"]) > 0
    for key in ("boxes", "scores", "classes"):
        np.testing.assert_array_equal(got[key], want[key])
