"""One inference path: predict runs PyTorch through the registered ``pytorch``
runtime, with the letterbox, decode and mapping back of every exported runtime,
so on the same images ``predict --runtime pytorch``, ``onnxruntime``,
``torchscript`` and ``openvino`` give the same detections (within the FP32
tolerance the exporters check: centerx.deploy.verify.FP32_TOLERANCE),
``./run.sh evaluate`` gives the same AP with PyTorch and with the exported file,
and ``./run.sh eval`` finds the same detections where its resizing and the
runtimes' letterbox agree."""

import json
import os

import cv2
import numpy as np
import pytest
from detectron2.checkpoint import DetectionCheckpointer

import centerx
from centerx.data.datasets import SHAPES_CLASSES, generate_shapes
from centerx.deploy.verify import FP32_TOLERANCE, compare_detections

from project_scripts import load_script
from tiny_models import SIZE, build, tiny_cfg

# runtime -> the exported file it reads (export.py's names)
EXPORTED = {"onnxruntime": "model.onnx", "torchscript": "model.ts", "openvino": "model.xml"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_shapes):
    """A tiny CenterNet with many distinct peaks, its config and checkpoint, and
    its ONNX, TorchScript and OpenVINO exports."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    name, _ = tiny_shapes
    out = tmp_path_factory.mktemp("one_path")
    # the dataset's classes, so every runtime's class ids map to the dataset's category ids alike
    opts = ["MODEL.CENTERNET.NUM_CLASSES", str(len(SHAPES_CLASSES)), "MODEL.CENTERNET.SCORE_THRESH_TEST", "0.05"]
    cfg = tiny_cfg("CenterNet", "DATASETS.TEST", f"('{name}',)", *opts)
    DetectionCheckpointer(build("CenterNet", *opts, seed=4), save_dir=str(out)).save("model")
    cfg.MODEL.WEIGHTS = str(out / "model.pth")
    (out / "config.yaml").write_text(cfg.dump())
    export = load_script("speedup", "export")
    argv = ["--config-file", str(out / "config.yaml"), "--format", "onnx", "torchscript", "openvino"]
    assert export.main([*argv, "--output", str(out / "deploy")]) == 0
    return out, name


def images(folder):
    """Three images of different shapes (letterboxed differently), written as PNG."""
    rng = np.random.default_rng(11)
    folder.mkdir()
    for i, (h, w) in enumerate(((96, 160), (128, 128), (140, 90))):
        cv2.imwrite(str(folder / f"{i}.png"), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    return folder


def detections(json_file):
    """{image id: boxes [M, 4] x1 y1 x2 y2, scores [M], classes [M]} from COCO results."""
    found = {}
    for r in json.loads(json_file.read_text()):
        x, y, w, h = r["bbox"]
        found.setdefault(r["image_id"], []).append(([x, y, x + w, y + h], r["score"], r["category_id"]))
    return {
        i: {
            "boxes": np.array([d[0] for d in dets], np.float32),
            "scores": np.array([d[1] for d in dets], np.float32),
            "classes": np.array([d[2] for d in dets], np.int64),
        }
        for i, dets in found.items()
    }


def test_predict_gives_the_same_detections_with_every_runtime(exported, tmp_path):
    out, _ = exported
    folder = images(tmp_path / "images")
    predict = load_script("demo", "predict")
    found = {}
    for runtime in ("pytorch", *EXPORTED):
        target = ["--config-file", str(out / "config.yaml")]
        if runtime != "pytorch":
            target = ["--model", str(out / "deploy" / EXPORTED[runtime]), "--runtime", runtime]
        result = tmp_path / f"{runtime}.json"
        predict.run([*target, "--input", str(folder), "--save-json", str(result), "--confidence-threshold", "0.0"])
        found[runtime] = detections(result)
    reference = found["pytorch"]
    assert sorted(reference) == [0, 1, 2] and sum(len(d["scores"]) for d in reference.values()) > 15
    for runtime in EXPORTED:
        assert sorted(found[runtime]) == sorted(reference), runtime
        for image_id, ref in reference.items():
            agreement = compare_detections(found[runtime][image_id], ref, **FP32_TOLERANCE)
            assert agreement.misses == 0 and agreement.matched > 0, (runtime, image_id, agreement)


def test_evaluate_gives_the_same_ap_with_pytorch_and_the_exported_file(exported):
    out, name = exported
    evaluate = load_script("speedup", "evaluate")
    with_pytorch = evaluate.main(["--config-file", str(out / "config.yaml"), "--runtime", "pytorch"])
    with_onnx = evaluate.main(["--model", str(out / "deploy" / "model.onnx")])
    assert with_pytorch["AP"] == pytest.approx(with_onnx["AP"], abs=0.05)
    assert with_pytorch["AP50"] == pytest.approx(with_onnx["AP50"], abs=0.05)


def test_eval_gives_the_detections_of_predict_where_their_resizing_agrees(exported, tmp_path):
    """``./run.sh eval`` (train_net --eval-only, detectron2's evaluator) resizes the
    shortest edge to INPUT.MIN_SIZE_TEST, the runtimes letterbox to EXPORT.INPUT_SIZE;
    on images already at that size both leave the pixels alone, and then eval's
    detections are those of predict with PyTorch and with the exported ONNX file."""
    import train_net

    out, _ = exported
    root = tmp_path / "square"
    json_file = generate_shapes(str(root), "val", num_images=3, seed=3, min_size=SIZE[0], max_size=SIZE[0])
    name = "one_path_square_val"
    centerx.register_coco_json_datasets([(name, json_file, str(root / "val"))])
    size = ["INPUT.MIN_SIZE_TEST", str(SIZE[0]), "INPUT.MAX_SIZE_TEST", str(SIZE[0])]
    args = train_net.argument_parser().parse_args(
        ["--config-file", str(out / "config.yaml"), "--eval-only", "DATASETS.TEST", f"('{name}',)", *size]
        + ["OUTPUT_DIR", str(tmp_path / "run"), "TEST.VIS_IMAGES", "0"]
    )
    train_net.main(args)
    file_of = {im["id"]: im["file_name"] for im in json.loads(open(json_file).read())["images"]}
    results = tmp_path / "run" / "eval" / "inference" / "coco_instances_results.json"
    by_eval = {file_of[i]: d for i, d in detections(results).items()}
    predict = load_script("demo", "predict")
    for target in (
        ["--config-file", str(out / "config.yaml")],
        ["--model", str(out / "deploy" / "model.onnx"), "--runtime", "onnxruntime"],
    ):
        result = tmp_path / "predict.json"
        predict.run([*target, "--input", str(root / "val"), "--save-json", str(result), "--confidence-threshold", "0"])
        names = {r["image_id"]: r["file_name"] for r in json.loads(result.read_text())}
        by_predict = {os.path.basename(names[i]): d for i, d in detections(result).items()}
        assert sorted(by_predict) == sorted(by_eval) and len(by_eval) == 3, target
        for image, ref in by_eval.items():
            agreement = compare_detections(by_predict[image], ref, **FP32_TOLERANCE)
            assert agreement.misses == 0 and agreement.matched == len(ref["scores"]) > 0, (target, image, agreement)
