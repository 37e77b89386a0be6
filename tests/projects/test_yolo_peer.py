"""projects/benchmarks/yolo_peer.py without Ultralytics (CI does not install it): the
conversion to YOLO's layout on a hand-built COCO json, the scoring of YOLO-style
detections with pycocotools, and the message for a missing YOLO environment."""

import json
import os

import cv2
import numpy as np
import pytest

from project_scripts import load_script

peer = load_script("benchmarks", "yolo_peer")

# one 200 x 100 image; category 7 is YOLO class 1 (categories ordered by id: 3, 7)
COCO_JSON = {
    "images": [{"id": 42, "file_name": "a.png", "width": 200, "height": 100}],
    "categories": [{"id": 7, "name": "square"}, {"id": 3, "name": "circle"}],
    "annotations": [
        {"id": 1, "image_id": 42, "category_id": 7, "bbox": [20, 10, 40, 30], "area": 1200, "iscrowd": 0},
        {"id": 2, "image_id": 42, "category_id": 3, "bbox": [100, 50, 50, 40], "area": 2000, "iscrowd": 0},
        {"id": 3, "image_id": 42, "category_id": 3, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 1},
    ],
}


@pytest.fixture
def dataset(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), np.zeros((100, 200, 3), np.uint8))
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(COCO_JSON))
    return str(path), str(images)


def test_conversion_writes_yolo_labels_and_links(dataset, tmp_path):
    json_file, images = dataset
    out = tmp_path / "out"
    args = peer.parse_args(["--train-json", json_file, "--train-images", images, "--val-json", json_file,
                            "--val-images", images, "--output", str(out)])  # fmt: skip
    data = peer.convert(args)
    # cx = (20 + 40/2) / 200, cy = (10 + 30/2) / 100, w = 40/200, h = 30/100; then (100 + 25) / 200, ...;
    # the crowd box is left out
    lines = (out / "data" / "labels" / "val" / "42.txt").read_text().splitlines()
    assert lines == ["1 0.200000 0.250000 0.200000 0.300000", "0 0.625000 0.700000 0.250000 0.400000"]
    link = out / "data" / "images" / "train" / "42.png"
    assert link.is_symlink() and os.path.samefile(link, os.path.join(images, "a.png"))
    text = open(data).read()
    assert 'names:\n  0: "circle"\n  1: "square"\n' in text and "train: images/train" in text


def test_scoring_maps_ids_back_and_follows_the_boxes(dataset, tmp_path):
    json_file, _ = dataset
    # YOLO's save_json: image_id the file stem, category_id its class index, bbox x, y, w, h
    exact = [
        {"image_id": "42", "category_id": 1, "bbox": [20, 10, 40, 30], "score": 0.9},
        {"image_id": "42", "category_id": 0, "bbox": [100, 50, 50, 40], "score": 0.8},
    ]
    shifted = [dict(d, bbox=[d["bbox"][0] + d["bbox"][2] / 2, *d["bbox"][1:]]) for d in exact]
    found = {}
    for name, detections in (("exact", exact), ("shifted", shifted), ("none", [])):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(detections))
        found[name] = peer.score(str(path), json_file)
    assert found["exact"]["AP"] == pytest.approx(100.0)
    assert found["shifted"]["AP50"] == pytest.approx(0.0)  # IoU 1/3 with its ground truth
    assert found["none"] == dict.fromkeys(peer.METRICS, 0.0)
    # Ultralytics 8.4 counts a non-COCO dataset's classes from 1 in save_json
    one_based = tmp_path / "one_based.json"
    one_based.write_text(json.dumps([dict(d, category_id=d["category_id"] + 1, image_id=42) for d in exact]))
    assert peer.score(str(one_based), json_file)["AP"] == pytest.approx(100.0)
    with pytest.raises(SystemExit, match="cannot tell whether they count from 0 or 1"):
        peer.class_index_base([2, 3], 5)
    with pytest.raises(SystemExit, match="not 5 classes"):
        peer.class_index_base([0, 5], 5)


def test_a_missing_yolo_environment_is_a_clear_message(dataset, tmp_path):
    json_file, images = dataset
    argv = ["--train-json", json_file, "--train-images", images, "--val-json", json_file, "--val-images", images,
            "--output", str(tmp_path / "out"), "--yolo-venv", str(tmp_path / "no-venv")]  # fmt: skip
    with pytest.raises(SystemExit, match=r"No YOLO environment at .*no-venv .*pip install ultralytics"):
        peer.main(argv)


def test_relative_paths_reach_yolo_from_its_own_working_directory(dataset, tmp_path, monkeypatch):
    """yolo runs inside --output: a relative --output (as in docs/benchmarks.md) must still
    give it a data.yaml it can open. A stand-in ``yolo`` fails unless its data= file exists."""
    json_file, images = dataset
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    fake = venv / "bin" / "yolo"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do case "$a" in data=*) test -f "${a#data=}" || exit 3;; esac; done\n')
    fake.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    argv = ["--train-json", json_file, "--train-images", images, "--val-json", json_file, "--val-images", images,
            "--output", "out/e8", "--yolo-venv", "venv", "--steps", "convert", "train", "--epochs", "1"]  # fmt: skip
    result = peer.main(argv)
    assert result["epochs"] == 1 and result["train_s"] >= 0
    assert json.loads((tmp_path / "out" / "e8" / "result.json").read_text())["epochs"] == 1
    # a failing later step keeps what the train step measured
    (tmp_path / "out" / "e8" / "result.json").unlink()
    with pytest.raises(SystemExit, match=r"YOLO's val wrote no detections file .*val/predictions.json"):
        peer.main(argv[:-5] + ["--steps", "train", "score", "--epochs", "1"])
    assert json.loads((tmp_path / "out" / "e8" / "result.json").read_text())["train_s"] >= 0


def test_a_missing_input_is_refused_before_yolo_runs(dataset, tmp_path, capsys):
    """A json or image folder the asked steps read, when it does not exist, is refused by
    name before anything runs (the convert step ended in a FileNotFoundError traceback);
    one that only a step not asked reads is not needed."""
    json_file, images = dataset
    missing = str(tmp_path / "absent.json")
    argv = ["--train-json", missing, "--train-images", images, "--val-json", json_file, "--val-images", images,
            "--output", str(tmp_path / "out")]  # fmt: skip
    with pytest.raises(SystemExit):
        peer.parse_args([*argv, "--steps", "convert"])
    assert f"--train-json {missing} does not exist (the convert step reads it)" in capsys.readouterr().err
    assert peer.parse_args([*argv, "--steps", "score"]).train_json == missing
    with pytest.raises(SystemExit):
        peer.parse_args([*argv, "--steps", "train", "--imgsz", "250"])
    assert "--imgsz a positive multiple of 32" in capsys.readouterr().err
