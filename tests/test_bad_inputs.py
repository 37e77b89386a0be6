"""Bad input stops early with a message that names the problem, or is skipped and
counted; it never crashes deep in a stack or silently trains / runs a wrong
model. One test (or parameter) per row of the table in docs/robustness.md."""

import io
import json
import logging
import os
import pickle
import re

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from package_layers import LEAF_HELPERS

import centerx
from centerx.checkpoint import (
    MissingWeightsError,
    StrictCheckpointer,
    UnsafeWeightsError,
    WeightsMismatchError,
    load_pickle,
    load_torch,
)
from centerx.data import CenterNetDatasetMapper
from centerx.data.datasets import generate_shapes, register_coco_json_datasets
from centerx.data.image_io import as_three_channels, read_image
from centerx.data.validation import DatasetError, readable_dataset_dicts, validate_datasets
from centerx.deploy import DeployModel, verify
from centerx.deploy.onnx_export import export_onnx
from centerx.deploy.verify import compare_detections, compare_raw
from centerx.engine import Predictor, load_weights_for_eval
from centerx.engine.checkpoint import remove_stale_temporary_files
from centerx.modeling.backbones.weights import read_weights_file

from project_scripts import load_script
from tiny_models import build, images, tiny_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, "configs", "shapes", "ttfnet_r18_demo.yaml")

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
def coco(images_, annotations, categories=None):
    return {
        "images": images_,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "thing"}] if categories is None else categories,
    }


GOOD_IMAGE = {"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}
GOOD_ANN = {"id": 7, "image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 10], "area": 200, "iscrowd": 0}


def register_json(tmp_path, name, content, raw=None):
    path = tmp_path / f"{name}.json"
    path.write_text(raw if raw is not None else json.dumps(content))
    register_coco_json_datasets([(name, str(path), str(tmp_path))])
    return str(path)


@pytest.fixture(scope="module")
def small_shapes(tmp_path_factory):
    """Six generated shapes images (64-80 px) in a folder of their own, so that
    tests can break some of the files."""
    root = tmp_path_factory.mktemp("shapes_bad")
    json_file = generate_shapes(str(root), "imgs", num_images=6, seed=11, min_size=64, max_size=80)
    return root, json_file


def copy_dataset(tmp_path, small_shapes, name, breaker=None):
    """A copy of the small shapes dataset registered as ``name``; ``breaker(folder,
    records)`` may damage files or records first."""
    import shutil

    root, json_file = small_shapes
    folder = tmp_path / name
    shutil.copytree(root / "imgs", folder)
    data = json.loads(open(json_file).read())
    if breaker:
        breaker(folder, data)
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data))
    register_coco_json_datasets([(name, str(path), str(folder))])
    return name, data


def demo_cfg(*opts):
    cfg = centerx.get_centerx_cfg()
    cfg.merge_from_file(DEMO)
    cfg.merge_from_list(list(opts))
    return cfg


# --------------------------------------------------------------------------- #
# malformed COCO json: a DatasetError naming the file and the entry
# --------------------------------------------------------------------------- #
MALFORMED = {
    "bbox null": (coco([GOOD_IMAGE], [dict(GOOD_ANN, bbox=None)]), None, "annotations[0] (id 7)", "bbox None"),
    "bbox of 3 numbers": (coco([GOOD_IMAGE], [dict(GOOD_ANN, bbox=[1, 2, 3])]), None, "(id 7)", "4 numbers"),
    "no categories": (coco([GOOD_IMAGE], [GOOD_ANN], categories=[]), None, "'categories' is empty", ""),
    "not COCO": ({"items": []}, None, "not a COCO instances json", "'images'"),
    "no width / height": (coco([{"id": 1, "file_name": "a.jpg"}], []), None, "images[0] (id 1)", "'width'"),
    "empty file": (None, "", "the file is empty", ""),
    "invalid json": (None, '{"images": [', "not valid json", "line 1"),
    "unknown category": (coco([GOOD_IMAGE], [dict(GOOD_ANN, category_id=3)]), None, "(id 7)", "category_id 3"),
    "unknown image": (coco([GOOD_IMAGE], [dict(GOOD_ANN, image_id=2)]), None, "(id 7)", "image_id 2"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_coco_json_is_named(case, tmp_path):
    content, raw, where, what = MALFORMED[case]
    name = f"bad_json_{case.replace(' ', '_').replace('/', '')}"
    path = register_json(tmp_path, name, content, raw)
    with pytest.raises(DatasetError) as e:
        DatasetCatalog.get(name)
    message = str(e.value)
    assert path in message and f"'{name}'" in message and where in message and what in message, message


# --------------------------------------------------------------------------- #
# classes against the model, images, sizes
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("num_classes", [3, 40])
def test_num_classes_that_do_not_fit_are_refused_before_training(num_classes, small_shapes, tmp_path):
    name, _ = copy_dataset(tmp_path, small_shapes, f"classes_{num_classes}")
    cfg = demo_cfg(
        "DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", "()", "MODEL.TTFNET.NUM_CLASSES", str(num_classes)
    )
    with pytest.raises(
        DatasetError,
        match=rf"has 4 classes .* but MODEL.TTFNET.NUM_CLASSES is {num_classes}: "
        r"set MODEL.TTFNET.NUM_CLASSES 4",
    ):
        validate_datasets(cfg)


def test_train_net_stops_on_bad_data_or_weights_with_the_message_alone(tmp_path):
    """train_net.py: a dataset name that is not registered (the nearest names suggested), data
    that cannot train and a missing MODEL.WEIGHTS file end the run with their message
    (SystemExit), not a traceback of DatasetError / KeyError / FileNotFoundError."""
    import train_net

    def run(*opts):
        argv = ["--config-file", DEMO, "SOLVER.MAX_ITER", "1", "OUTPUT_DIR", str(tmp_path / "run"), *opts]
        train_net.main(train_net.argument_parser().parse_args(argv))

    with pytest.raises(SystemExit, match=r"Dataset 'shapes_trian' \(DATASETS.TRAIN / TEST\) is not registered; "
                       r"did you mean shapes_train"):  # fmt: skip
        run("DATASETS.TRAIN", "('shapes_trian',)")
    with pytest.raises(SystemExit, match=r"^Dataset 'shapes_train' has 4 classes .* set MODEL.TTFNET.NUM_CLASSES 4"):
        run("DATASETS.TEST", "()", "MODEL.TTFNET.NUM_CLASSES", "7")
    missing = str(tmp_path / "missing.pth")
    with pytest.raises(SystemExit, match=rf"^MODEL.WEIGHTS: weights file '{re.escape(missing)}' does not exist"):
        run("DATASETS.TEST", "()", "DATASETS.CHECK_IMAGES", "0", "MODEL.WEIGHTS", missing)
    nano = os.path.join(REPO, "configs", "shapes", "ttfnet_nano_demo.yaml")  # a timm backbone's weights file
    readme = os.path.join(REPO, "README.md")
    argv = ["--config-file", nano, "SOLVER.MAX_ITER", "1", "OUTPUT_DIR", str(tmp_path / "nano"), "DATASETS.TEST", "()",
            "DATASETS.CHECK_IMAGES", "0", "MODEL.TIMM.WEIGHTS", readme]  # fmt: skip
    with pytest.raises(SystemExit, match=rf"^MODEL.TIMM.WEIGHTS '{re.escape(readme)}': .* is not a weights file"):
        train_net.main(train_net.argument_parser().parse_args(argv))


def _break_files(folder, data):
    files = sorted(data["images"], key=lambda im: im["id"])
    os.remove(folder / files[0]["file_name"])  # missing
    (folder / files[1]["file_name"]).write_bytes(b"")  # zero bytes
    head = (folder / files[2]["file_name"]).read_bytes()[:200]
    (folder / files[2]["file_name"]).write_bytes(head)  # truncated


def test_missing_empty_and_truncated_images_are_skipped_and_counted(small_shapes, tmp_path, caplog):
    name, data = copy_dataset(tmp_path, small_shapes, "broken_files", _break_files)
    cfg = demo_cfg("DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", "()")
    with caplog.at_level(logging.INFO, logger="centerx.data.validation"):
        (report,) = validate_datasets(cfg)
    assert report.images == 6 and report.images_checked == 6 and len(report.unreadable) == 3
    assert "3 missing or unreadable, skipped in training and evaluation" in caplog.text
    dicts, skipped = readable_dataset_dicts(name)
    assert len(dicts) == 3 and len(skipped) == 3
    assert {os.path.basename(f) for f in skipped} == {
        im["file_name"] for im in sorted(data["images"], key=lambda im: im["id"])[:3]
    }


def test_only_unreadable_images_is_an_error(small_shapes, tmp_path):
    def break_all(folder, data):
        for im in data["images"]:
            os.remove(folder / im["file_name"])

    name, _ = copy_dataset(tmp_path, small_shapes, "all_missing", break_all)
    with pytest.raises(DatasetError, match="none of the 6 image files checked can be read"):
        validate_datasets(demo_cfg("DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", "()"))


def test_image_size_disagreeing_with_the_json_is_an_error(small_shapes, tmp_path):
    def lie(folder, data):
        data["images"][0]["width"] += 10

    name, data = copy_dataset(tmp_path, small_shapes, "wrong_size", lie)
    with pytest.raises(DatasetError, match=rf"{data['images'][0]['file_name']} is .* but its annotations say"):
        validate_datasets(demo_cfg("DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", "()"))


def test_check_images_samples_training_sets(small_shapes, tmp_path):
    """DATASETS.CHECK_IMAGES N decodes N training images (evenly spread), 0 none;
    test datasets are always checked in full."""
    name, _ = copy_dataset(tmp_path, small_shapes, "sampled")
    (train,) = validate_datasets(
        demo_cfg("DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", "()", "DATASETS.CHECK_IMAGES", "2")
    )
    assert train.images_checked == 2
    (train,) = validate_datasets(
        demo_cfg("DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", "()", "DATASETS.CHECK_IMAGES", "0")
    )
    assert train.images_checked == 0
    (test,) = validate_datasets(
        demo_cfg("DATASETS.TRAIN", "()", "DATASETS.TEST", f"('{name}',)", "DATASETS.CHECK_IMAGES", "0")
    )
    assert test.images_checked == 6


def test_training_then_evaluation_skip_the_same_unreadable_images(small_shapes, tmp_path):
    """The issue's reproduction: train and val listing images that cannot be read;
    the run finishes, the evaluation reports them skipped beside the AP."""
    import train_net

    name, _ = copy_dataset(tmp_path, small_shapes, "broken_run", _break_files)
    args = train_net.argument_parser().parse_args(
        [
            "--config-file",
            DEMO,
            "DATASETS.TRAIN",
            f"('{name}',)",
            "DATASETS.TEST",
            f"('{name}',)",
            "INPUT.TRAIN_SIZE",
            "64",
            "INPUT.MIN_SIZE_TEST",
            "64",
            "INPUT.MAX_SIZE_TEST",
            "64",
            "SOLVER.IMS_PER_BATCH",
            "2",
            "SOLVER.MAX_ITER",
            "3",
            "SOLVER.WARMUP_ITERS",
            "0",
            "SOLVER.CHECKPOINT_PERIOD",
            "100",
            "OUTPUT_DIR",
            str(tmp_path / "out"),
            "TEST.VIS_IMAGES",
            "0",
        ]
    )
    train_net.main(args)
    with open(tmp_path / "out" / "metrics.json") as f:
        final = [json.loads(line) for line in f if "bbox/AP" in line][-1]
    assert final["bbox/skipped images"] == 3.0
    assert np.isfinite(final["bbox/AP"])


# --------------------------------------------------------------------------- #
# boxes and images as the user meant them
# --------------------------------------------------------------------------- #
def test_invalid_boxes_are_skipped_under_their_own_reason(small_shapes, tmp_path):
    """Negative width, infinite width and NaN boxes are dropped before any
    transform and counted as such; the valid box keeps its coordinates."""
    root, json_file = small_shapes
    record = DatasetCatalog.get(copy_dataset(tmp_path, small_shapes, "boxes")[0])[0]
    h, w = record["height"], record["width"]
    record = dict(
        record,
        annotations=[
            {"bbox": [50, 30, -30, 20], "bbox_mode": 1, "category_id": 0},
            {"bbox": [5, 5, float("inf"), 10], "bbox_mode": 1, "category_id": 0},
            {"bbox": [5, 5, float("nan"), 10], "bbox_mode": 1, "category_id": 0},
            {"bbox": [10, 12, 20, 16], "bbox_mode": 1, "category_id": 2},
        ],
    )
    mapper = CenterNetDatasetMapper(
        demo_cfg(
            "INPUT.TRAIN_SIZE",
            "64",
            "INPUT.SCALE_RANGE",
            "(1.0, 1.0)",
            "INPUT.HFLIP_PROB",
            "0.0",
            "INPUT.COLOR_JITTER",
            "0.0",
        )
    )
    out = mapper(record)
    assert mapper.num_invalid_boxes == {"non-positive size": 1, "not finite": 2}
    assert out["instances"].gt_classes.tolist() == [2]
    scale = 64 / max(h, w)
    np.testing.assert_allclose(
        out["instances"].gt_boxes.tensor[0].numpy(), np.array([10, 12, 30, 28]) * scale, rtol=1e-5
    )


def test_16_bit_png_keeps_its_range(tmp_path):
    """A 16-bit greyscale PNG of values 0, 32896 and 65535 reads as 0, 128 and 255
    in every channel (detectron2's read_image makes it all white)."""
    values = np.array([[0, 32896, 65535]], dtype=np.uint16).repeat(4, axis=0)
    path = str(tmp_path / "deep.png")
    assert cv2.imwrite(path, values)
    image = read_image(path, "BGR")
    assert image.dtype == np.uint8 and image.shape == (4, 3, 3)
    assert image[0, :, 0].tolist() == [0, 128, 255] and (image == image[..., :1]).all()


def test_image_arrays_are_converted_or_refused():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert as_three_channels(grey).shape == (3, 4, 3) and (as_three_channels(grey)[..., 2] == grey).all()
    rgba = np.zeros((3, 4, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    assert as_three_channels(rgba).shape == (3, 4, 3) and as_three_channels(rgba).max() == 0
    for bad, message in [
        (np.zeros((0, 0, 3), np.uint8), "too small"),
        (np.zeros((1, 1, 3), np.uint8), "too small"),
        (np.zeros((4, 4, 2), np.uint8), "expected an H x W"),
        (np.full((4, 4, 3), 300, np.int32), "8-bit"),
        (np.zeros((4, 4, 3), np.float32), "8-bit"),
    ]:
        with pytest.raises(ValueError, match=message):
            as_three_channels(bad, "x.png")


@pytest.fixture(scope="module")
def predictor_weights(tmp_path_factory):
    """A randomised tiny TTFNet saved as a checkpoint, and its config."""
    model = build("TTFNet")
    path = str(tmp_path_factory.mktemp("predictor") / "model.pth")
    torch.save({"model": model.state_dict()}, path)
    cfg = tiny_cfg(
        "TTFNet",
        "MODEL.WEIGHTS",
        path,
        "INPUT.MIN_SIZE_TEST",
        "64",
        "INPUT.MAX_SIZE_TEST",
        "64",
        "INPUT.FORMAT",
        "BGR",
        "MODEL.TTFNET.SCORE_THRESH_TEST",
        "0.0",
    )
    return cfg


def test_predictor_takes_any_image_a_user_has(predictor_weights):
    """Greyscale 2-D and RGBA arrays give the detections of their 3-channel
    versions; a 2 x 900 strip is padded and its boxes stay inside it; 0 x 0
    and 1 x 1 are refused naming the image."""
    predictor = Predictor(predictor_weights)
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (48, 64), dtype=np.uint8)
    reference = predictor(np.repeat(grey[:, :, None], 3, axis=2))["instances"]
    got = predictor(grey)["instances"]
    torch.testing.assert_close(got.pred_boxes.tensor, reference.pred_boxes.tensor)
    rgba = np.concatenate([np.repeat(grey[:, :, None], 3, axis=2), np.full((48, 64, 1), 7, np.uint8)], axis=2)
    torch.testing.assert_close(predictor(rgba)["instances"].scores, reference.scores)
    strip = predictor(rng.integers(0, 256, (2, 900, 3), dtype=np.uint8))["instances"]
    assert strip.image_size == (2, 900) and len(strip) > 0
    boxes = strip.pred_boxes.tensor
    assert (boxes[:, [1, 3]] <= 2).all() and (boxes[:, [0, 2]] <= 900).all() and (boxes >= 0).all()
    for shape in [(0, 0, 3), (1, 1, 3)]:
        with pytest.raises(ValueError, match="tiny.png: .* too small"):
            predictor(np.zeros(shape, np.uint8), "tiny.png")


def test_demo_folder_skips_a_bad_image_and_goes_on(predictor_weights, tmp_path):
    demo = load_script("demo", "predict")
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.full((40, 50, 3), 90, np.uint8))
    cv2.imwrite(str(folder / "b.png"), np.full((1, 30, 3), 90, np.uint8))  # 1 pixel high
    cv2.imwrite(str(folder / "c.png"), np.full((30, 40, 3), 20, np.uint8))
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(predictor_weights.dump())
    summary = demo.run(["--config-file", str(cfg_file), "--input", str(folder), "--output", str(tmp_path / "out")])
    assert summary.images_written == 2 and summary.images_skipped == 1
    assert sorted(os.listdir(tmp_path / "out")) == ["a.png", "c.png"]


# --------------------------------------------------------------------------- #
# weights: strict where a wrong model would be silent, safe to read
# --------------------------------------------------------------------------- #
def test_no_weights_are_refused_unless_asked_for():
    cfg = tiny_cfg("CenterNet")
    model = build_model(cfg)
    with pytest.raises(MissingWeightsError, match="MODEL.WEIGHTS is empty.*--allow-random-weights"):
        load_weights_for_eval(cfg, model, "")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    load_weights_for_eval(cfg, model, "", allow_random=True)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("other", ["TTFNet", "classes"])
def test_checkpoint_of_another_model_is_refused_listing_the_keys(other, tmp_path):
    """A TTFNet checkpoint into a CenterNet, or a 5-class CenterNet checkpoint into
    a 3-class one: WeightsMismatchError naming missing / mis-shaped keys."""
    source = build("TTFNet") if other == "TTFNet" else build("CenterNet", "MODEL.CENTERNET.NUM_CLASSES", "5")
    path = str(tmp_path / "other.pth")
    torch.save({"model": source.state_dict()}, path)
    cfg = tiny_cfg("CenterNet")
    with pytest.raises(WeightsMismatchError) as e:
        load_weights_for_eval(cfg, build_model(cfg), path)
    message = str(e.value)
    if other == "TTFNet":
        assert " missing (upsampler.layers.0.weight" in message, message
    else:
        assert "mis-shaped" in message and "heads.heatmap.layers.2.weight (file (5," in message


def test_matching_checkpoint_loads_every_tensor(tmp_path):
    source = build("CenterNet", seed=3)
    path = str(tmp_path / "same.pth")
    torch.save({"model": source.state_dict()}, path)
    cfg = tiny_cfg("CenterNet")
    model = build_model(cfg)
    load_weights_for_eval(cfg, model, path)
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in model.state_dict().items())


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned_by_pickle",))


def test_crafted_pickle_is_refused_and_runs_nothing(tmp_path, monkeypatch):
    """A .pkl whose unpickling would call os.system is refused, by the backbone
    loader and by the checkpointer, and the command never runs."""
    monkeypatch.chdir(tmp_path)
    path = str(tmp_path / "weights.pkl")
    with open(path, "wb") as f:
        pickle.dump({"model": {"conv1.weight": np.zeros(3)}, "x": _RunsCode()}, f, protocol=2)
    with pytest.raises(UnsafeWeightsError, match=r"asks for posix.system|asks for os.system"):
        load_pickle(path)
    with pytest.raises(UnsafeWeightsError):
        read_weights_file(path)
    with pytest.raises(UnsafeWeightsError):
        StrictCheckpointer(build_model(tiny_cfg("CenterNet"))).load(path)
    assert not os.path.exists(tmp_path / "pwned_by_pickle")


def test_numpy_pickles_still_load(tmp_path):
    """A detectron2-style .pkl of numpy arrays (protocol 2, as the model zoo's)
    loads through the restricted unpickler."""
    path = str(tmp_path / "zoo.pkl")
    data = {
        "model": {"stem.conv1.weight": np.arange(6, dtype=np.float32).reshape(1, 2, 3)},
        "__author__": "me",
        "n": np.float64(2.5),
    }
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=2)
    loaded = load_pickle(path)
    assert loaded["__author__"] == "me" and loaded["n"] == 2.5
    np.testing.assert_array_equal(loaded["model"]["stem.conv1.weight"], data["model"]["stem.conv1.weight"])


def test_pth_with_objects_is_refused(tmp_path):
    path = str(tmp_path / "obj.pth")
    torch.save({"model": {}, "thing": io.StringIO("x")}, path)
    with pytest.raises(UnsafeWeightsError, match=r"asks for _io\.StringIO") as info:
        load_torch(path)
    assert "weights_only" not in str(info.value)  # torch's advice to switch the safety off is not repeated


# --------------------------------------------------------------------------- #
# export: agreement checks, small inputs
# --------------------------------------------------------------------------- #
def _dets(boxes, scores, classes):
    return {"boxes": np.array(boxes, float), "scores": np.array(scores, float), "classes": np.array(classes)}


def test_detection_agreement_matches_ties_and_misses():
    ref = _dets([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], [0.9, 0.5, 0.4], [0, 1, 1])
    same = _dets([[20, 20, 30, 30.2], [0, 0, 10, 10], [40, 40, 50, 50]], [0.5004, 0.9, 0.4], [1, 0, 1])
    a = compare_detections(same, ref, box_px=0.5, score=1e-3, tie=1e-3)
    assert (a.total, a.matched, a.ties, a.misses, a.ok) == (3, 3, 0, 0, True)
    tie = _dets([[0, 0, 10, 10], [24, 20, 34, 30], [40, 40, 50, 50]], [0.9, 0.5002, 0.4], [0, 1, 1])
    a = compare_detections(tie, ref, box_px=0.5, score=1e-3, tie=1e-3)
    assert (a.matched, a.ties, a.misses, a.ok) == (2, 1, 0, True)
    wrong = _dets([[0, 0, 10, 10], [24, 20, 34, 30], [40, 40, 50, 50]], [0.9, 0.3, 0.4], [0, 1, 1])
    a = compare_detections(wrong, ref, box_px=0.5, score=1e-3, tie=1e-3)
    assert (a.matched, a.misses, a.ok) == (2, 1, False) and "1 MISSING" in str(a)


def test_raw_agreement_needs_the_regression_maps_too():
    heat = np.zeros((1, 1, 4, 4))
    heat[0, 0, 1, 1], heat[0, 0, 3, 2] = 0.8, 0.6
    wh = np.ones((1, 2, 4, 4))
    assert compare_raw({"heatmap": heat, "wh": wh}, {"heatmap": heat, "wh": wh}).ok
    moved = heat.copy()
    moved[0, 0, 1, 1], moved[0, 0, 1, 2] = 0.0, 0.8
    a = compare_raw({"heatmap": moved, "wh": wh}, {"heatmap": heat, "wh": wh})
    assert (a.matched, a.ties, a.ok) == (1, 1, True)
    bad_wh = wh.copy()
    bad_wh[0, 1, 3, 2] = 3.0
    a = compare_raw({"heatmap": heat, "wh": bad_wh}, {"heatmap": heat, "wh": wh})
    assert (a.matched, a.misses, a.ok) == (1, 1, False)


def test_export_exits_3_when_the_runtime_disagrees(tmp_path, monkeypatch):
    cli = load_script("speedup", "export")
    model = build("CenterNet")
    weights = str(tmp_path / "m.pth")
    torch.save({"model": model.state_dict()}, weights)
    argv = [
        "--config-file",
        os.path.join(REPO, "configs", "shapes", "centernet_r18_demo.yaml"),
        "--format",
        "onnx",
        "--output",
        str(tmp_path),
        "EXPORT.INPUT_SIZE",
        "(64, 64)",
        "MODEL.CENTERNET.NUM_CLASSES",
        "3",
        "MODEL.CENTERNET.UPSAMPLE_CHANNELS",
        "[64, 32, 32]",
        "MODEL.CENTERNET.HEAD_CHANNELS",
        "16",
        "TEST.DETECTIONS_PER_IMAGE",
        "10",
        "MODEL.WEIGHTS",
        weights,
    ]
    assert cli.main(argv) == 0
    real = verify.compare_detections

    def shifted(outputs, reference, **kw):
        return real(dict(outputs, boxes=np.asarray(outputs["boxes"]) + 3), reference, **kw)

    monkeypatch.setattr(verify, "compare_detections", shifted)
    assert cli.main(argv) == 3


@pytest.mark.parametrize("arch", ["CenterNet", "TTFNet"])
def test_onnx_graph_runs_on_inputs_with_fewer_cells_than_k(arch, tmp_path):
    """A 1-class model with K = 100 on a 32 x 32 input (64 cells): ONNX Runtime
    returns 100 rows, the first ones PyTorch's detections, the rest score 0."""
    ort = pytest.importorskip("onnxruntime")
    key = arch.upper()
    model = build(arch, f"MODEL.{key}.NUM_CLASSES", "1", "TEST.DETECTIONS_PER_IMAGE", "100")
    deploy = DeployModel(model).eval()
    path = str(tmp_path / "small.onnx")
    export_onnx(deploy, path, (64, 64))
    x = images(1, 32, 32, seed=4)
    with torch.no_grad():
        ref = deploy(x)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    out = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"images": x.numpy()})))
    assert out["scores"].shape == (1, 100) and ref["scores"].shape == (1, 100)
    assert (out["scores"][0, 64:] == 0).all()
    np.testing.assert_allclose(out["scores"], ref["scores"].numpy(), atol=1e-5)
    live = ref["scores"][0] > 0
    np.testing.assert_allclose(out["boxes"][0][live.numpy()], ref["boxes"][0][live].numpy(), atol=1e-3)


# --------------------------------------------------------------------------- #
# config and command line
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    "opts, message",
    [
        (["INPUT.TRAIN_SIZE", "0"], "INPUT.TRAIN_SIZE must be a positive multiple of 32"),
        (["SOLVER.MAX_ITER", "0"], "SOLVER.MAX_ITER must be at least 1 to train"),
        # these three crashed inside detectron2 / torch (batch sampler, lr scheduler's division, DataLoader)
        (["SOLVER.IMS_PER_BATCH", "0"], "SOLVER.IMS_PER_BATCH must be at least 1 .* got 0"),
        (["SOLVER.BASE_LR", "0.0"], "SOLVER.BASE_LR must be positive .* got 0.0"),
        (["DATALOADER.NUM_WORKERS", "-1"], "DATALOADER.NUM_WORKERS must be 0 .* got -1"),
    ],
)
def test_config_values_that_cannot_train_are_named(opts, message):
    with pytest.raises(ValueError, match=message):
        centerx.check_config(demo_cfg(*opts))


def test_train_net_names_a_value_that_cannot_train_without_a_traceback(tmp_path):
    import train_net

    argv = ["--config-file", DEMO, "INPUT.TRAIN_SIZE", "300", "OUTPUT_DIR", str(tmp_path)]
    with pytest.raises(SystemExit, match=r"^INPUT.TRAIN_SIZE must be a positive multiple of 32 .* got 300"):
        train_net.load_run_config(train_net.argument_parser().parse_args(argv))


def test_batch_that_cannot_be_rescaled_says_what_to_set():
    cfg = centerx.get_centerx_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "Base-TTFNet.yaml"))
    cfg.merge_from_list(["SOLVER.IMS_PER_BATCH", "2"])
    with pytest.raises(
        ValueError,
        match=r"SOLVER.IMS_PER_BATCH 2 cannot be rescaled from "
        r"SOLVER.REFERENCE_WORLD_SIZE 8 .* SOLVER.REFERENCE_WORLD_SIZE 0",
    ):
        centerx.check_config(cfg, world_size=1)
    cfg.merge_from_list(["SOLVER.REFERENCE_WORLD_SIZE", "0"])
    centerx.check_config(cfg, world_size=1)
    # not rescaled, the batch must split over the processes (detectron2 asserts it deep in the loader)
    with pytest.raises(ValueError, match=r"SOLVER.IMS_PER_BATCH 2 .* does not split over the 4 processes"):
        centerx.check_config(cfg, world_size=4)
    centerx.check_config(cfg, world_size=2)


def test_device_defaults_to_the_machines():
    # a Base config sets no device: a CPU-only machine runs it on the CPU, not into "no NVIDIA driver"
    cfg = centerx.get_centerx_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "Base-TTFNet.yaml"))
    assert cfg.MODEL.DEVICE == ("cuda" if torch.cuda.is_available() else "cpu")
    centerx.check_config(cfg, world_size=8)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_asked_on_a_machine_without_it_is_refused_before_building(device):
    with pytest.raises(ValueError, match=rf"MODEL.DEVICE is '{device}' but torch sees no CUDA GPU.*MODEL.DEVICE cpu"):
        centerx.check_config(demo_cfg("MODEL.DEVICE", device))
    from centerx.deploy.runtimes import TorchRuntime

    with pytest.raises(ValueError, match="torch sees no CUDA GPU"):
        TorchRuntime(demo_cfg("MODEL.DEVICE", device), allow_random=True)


def test_device_that_is_no_device_is_named():
    with pytest.raises(ValueError, match=r"MODEL.DEVICE 'gpu0' is not a device name"):
        centerx.check_config(demo_cfg("MODEL.DEVICE", "gpu0"))


def test_flag_after_the_overrides_is_explained():
    import train_net

    args = train_net.argument_parser().parse_args(["--config-file", DEMO, "SOLVER.MAX_ITER", "5", "--resume"])
    with pytest.raises(SystemExit, match="--resume came after the KEY VALUE overrides"):
        train_net.load_run_config(args)


def test_overrides_yacs_would_stop_on_are_refused_with_what_to_do():
    """KEY VALUE overrides that yacs stops on with a bare traceback (AssertionError:
    Non-existent key) are refused by load_config, naming the word: a misspelt key with its
    nearest keys, a key without a value; a valid override still merges."""
    from centerx.config import ConfigOverrideError, load_config

    with pytest.raises(ConfigOverrideError, match=r"MODEL.TTFNET.NUM_CLASES \(among the KEY VALUE overrides\) "
                       r"is not a config key; did you mean MODEL.TTFNET.NUM_CLASSES"):  # fmt: skip
        load_config(DEMO, ["MODEL.TTFNET.NUM_CLASES", "3"])
    unknown = r"^MODEL.XYZ \(among the KEY VALUE overrides\) is not a config key\. docs"  # no key near it
    with pytest.raises(ConfigOverrideError, match=unknown):
        load_config(DEMO, ["SOLVER.MAX_ITER", "5", "MODEL.XYZ", "1"])
    with pytest.raises(ConfigOverrideError, match="come in pairs, but the last key, SOLVER.MAX_ITER, has no value"):
        load_config(DEMO, ["MODEL.TTFNET.NUM_CLASSES", "3", "SOLVER.MAX_ITER"])
    assert load_config(DEMO, ["MODEL.TTFNET.NUM_CLASSES", "3"]).MODEL.TTFNET.NUM_CLASSES == 3


def test_a_misspelt_key_in_a_config_file_names_the_file_and_the_nearest_keys(tmp_path):
    """A YAML key the config does not have: train_net.py says which key, in which file, and
    the nearest keys, instead of yacs' KeyError traceback."""
    import train_net

    typo = tmp_path / "typo.yaml"
    typo.write_text(f'_BASE_: "{DEMO}"\nMODEL:\n  TTFNET:\n    NUM_CLASES: 3\n')
    args = train_net.argument_parser().parse_args(["--config-file", str(typo)])
    with pytest.raises(SystemExit, match=r"MODEL.TTFNET.NUM_CLASES \(set in .*typo.yaml or a _BASE_ it names\) "
                       r"is not a config key; did you mean MODEL.TTFNET.NUM_CLASSES"):  # fmt: skip
        train_net.load_run_config(args)


def test_a_flag_after_the_overrides_is_explained_by_every_command():
    """export.py (a flag after MODEL.WEIGHTS read as a config key, which ended in yacs'
    AssertionError) gets the same message as train_net.py, before anything is built."""
    export = load_script("speedup", "export")
    args = export.parse_args(["--config-file", DEMO, "--format", "onnx", "--output", "out", "MODEL.WEIGHTS", "w.pth",
                              "--calibration-dataset", "shapes_val"])  # fmt: skip
    assert args.opts[-2:] == ["--calibration-dataset", "shapes_val"]  # argparse's REMAINDER took it
    with pytest.raises(SystemExit, match="--calibration-dataset came after the KEY VALUE overrides"):
        export.setup(args)


def test_stale_temporary_checkpoints_are_removed(tmp_path):
    for name in ("model_0000009.pth.tmp-123", "last_checkpoint.tmp-123", "model_0000009.pth", "other.tmp-1"):
        (tmp_path / name).write_bytes(b"x")
    removed = remove_stale_temporary_files(str(tmp_path))
    assert sorted(os.path.basename(p) for p in removed) == ["last_checkpoint.tmp-123", "model_0000009.pth.tmp-123"]
    assert sorted(os.listdir(tmp_path)) == ["model_0000009.pth", "other.tmp-1"]


def test_a_config_value_that_cannot_work_ends_every_command_with_its_message(tmp_path):
    """A value a key cannot take, found where the model, the trainer or the datasets are
    built (the module that uses it checks it: ConfigValueError), ends train_net.py,
    export.py, evaluate.py, predict.py, check_data.py and benchmark.py with the message
    alone (SystemExit), not a traceback; it was a ValueError traceback in all but
    evaluate / predict, which printed the model-building ones as usage errors."""
    import train_net

    def train(*opts):
        argv = ["--config-file", DEMO, "SOLVER.MAX_ITER", "1", "OUTPUT_DIR", str(tmp_path / "run"),
                "DATASETS.TEST", "()", "DATASETS.CHECK_IMAGES", "0", *opts]  # fmt: skip
        train_net.main(train_net.argument_parser().parse_args(argv))

    kernel = r"^MODEL.TTFNET.SHORTCUT_KERNEL_SIZE must be 1 or 3; got 5\.$"
    with pytest.raises(SystemExit, match=kernel):  # building the model
        train("MODEL.TTFNET.SHORTCUT_KERNEL_SIZE", "5")
    with pytest.raises(SystemExit, match=r"^MODEL_EMA.DECAY must be in \[0, 1\), got 2\.0\.$"):  # the trainer
        train("MODEL_EMA.ENABLED", "True", "MODEL_EMA.DECAY", "2.0")
    sampler = r"^INPUT.TRAIN_SIZES need DATALOADER.SAMPLER_TRAIN 'ResumableTrainingSampler', got 'TrainingSampler'\.$"
    with pytest.raises(SystemExit, match=sampler):  # the training loader
        train("INPUT.TRAIN_SIZES", "(256, 288)", "DATALOADER.SAMPLER_TRAIN", "TrainingSampler")
    export = load_script("speedup", "export")
    with pytest.raises(SystemExit, match=kernel):
        export.main(["--config-file", DEMO, "--format", "onnx", "--allow-random-weights",
                     "--output", str(tmp_path / "deploy"), "MODEL.TTFNET.SHORTCUT_KERNEL_SIZE", "5"])  # fmt: skip
    assert not (tmp_path / "deploy" / "model.onnx").exists()

    (tmp_path / "w.pth").write_bytes(b"not read: the datasets come first")
    bad_json = ["MODEL.WEIGHTS", str(tmp_path / "w.pth"), "DATASETS.COCO_JSON", "[('mine',)]"]  # registering datasets
    triple = r"^DATASETS.COCO_JSON\[0\] must be a \(name, json_file, image_root\) triple of non-empty strings"
    commands = {
        "evaluate": lambda: load_script("speedup", "evaluate").main(["--config-file", DEMO, *bad_json]),
        "predict": lambda: load_script("demo", "predict").run(
            ["--config-file", DEMO, "--input", str(tmp_path), "--output", str(tmp_path / "drawn"), *bad_json]
        ),
        "check_data": lambda: load_script("data", "check_data").main(["--config-file", DEMO, *bad_json]),
        "benchmark": lambda: load_script("speedup", "benchmark").main(
            ["--config-file", DEMO, "--output", str(tmp_path / "bench"), *bad_json]
        ),
    }
    for command in commands.values():
        with pytest.raises(SystemExit, match=triple):
            command()


def test_errors_that_name_a_config_key_are_config_value_errors():
    """Every ``raise ValueError(...)`` in the layers that may import the config
    (docs/design.md) whose message starts with a config key (a dotted path from one of
    the config's own top-level keys, or ``{where}`` / ``{key}`` / ``{what}`` standing
    for one) raises ConfigValueError instead, so that the commands print it alone."""
    import ast

    roots = "|".join(sorted(centerx.get_centerx_cfg().keys(), key=len, reverse=True))
    key = re.compile(rf"^({roots})(\.[A-Z0-9_\[\]{{}}a-z]+)*[ =:'\[]|^\{{(where|key|what)\}}")
    plain = []
    for folder, _, files in os.walk(os.path.join(REPO, "centerx")):
        for file in files:
            path = os.path.join(folder, file)
            top = os.path.relpath(path, os.path.join(REPO, "centerx")).split(os.sep)[0].removesuffix(".py")
            if not file.endswith(".py") or top in LEAF_HELPERS:
                continue
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read(), path)
            for node in ast.walk(tree):
                if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and node.exc.args):
                    continue
                text = node.exc.args[0]
                while isinstance(text, ast.BinOp):
                    text = text.left
                if isinstance(text, ast.JoinedStr) and text.values:
                    part = text.values[0]
                    text = part.value if isinstance(part, ast.Constant) else "{" + ast.unparse(part.value) + "}"
                elif isinstance(text, ast.Constant):
                    text = text.value
                if isinstance(text, str) and key.match(text) and getattr(node.exc.func, "id", "") == "ValueError":
                    plain.append(f"{os.path.relpath(path, REPO)}:{node.lineno} {text[:60]!r}")
    assert not plain, "raise ConfigValueError for these:\n" + "\n".join(plain)
