"""projects/demo/predict.py (image, folder, video) and the PredictionImages training hook
(predictions drawn into TensorBoard), with a tiny random-weight CenterNet-R18 on CPU."""

import json
import logging
import os
import types

import cv2
import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import convert_image_to_rgb
from detectron2.data.transforms import ResizeShortestEdge
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage, TensorboardXWriter
from tensorboard.backend.event_processing import event_accumulator

import centerx
from centerx.engine import PredictionImages

from project_scripts import load_script

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO_CONFIG = os.path.join(REPO, "configs", "shapes", "centernet_r18_demo.yaml")
# test-time resize: shorter side 48, longer side at most 80 (input pixels)
MIN_SIZE, MAX_SIZE = 48, 80


def _load_demo():
    return load_script("demo", "predict")


demo = _load_demo()


def _overrides(dataset):
    return [
        "DATASETS.TEST",
        f"('{dataset}',)",
        "INPUT.MIN_SIZE_TEST",
        str(MIN_SIZE),
        "INPUT.MAX_SIZE_TEST",
        str(MAX_SIZE),
        "TEST.DETECTIONS_PER_IMAGE",
        "5",
        "MODEL.DEVICE",
        "cpu",
    ]


def _tiny_cfg(dataset, *extra):
    cfg = centerx.add_centerx_config(get_cfg())
    cfg.merge_from_file(DEMO_CONFIG)
    cfg.merge_from_list(_overrides(dataset) + list(extra))
    return cfg


def _model_with_visible_boxes(cfg):
    """Random CenterNet whose every detection is 16 input pixels square (not a dot)."""
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():
        model.heads.wh.layers[-1].bias.fill_(4.0)
    return model


@pytest.fixture(scope="module")
def weights(tiny_shapes, tmp_path_factory):
    name, _ = tiny_shapes
    out = tmp_path_factory.mktemp("demo_weights")
    DetectionCheckpointer(_model_with_visible_boxes(_tiny_cfg(name)), save_dir=str(out)).save("tiny")
    return str(out / "tiny.pth")


def _argv(weights, dataset, input_path, output_dir, threshold):
    return [
        "--config-file",
        DEMO_CONFIG,
        "--input",
        str(input_path),
        "--output",
        str(output_dir),
        "--confidence-threshold",
        str(threshold),
        "MODEL.WEIGHTS",
        weights,
    ] + _overrides(dataset)


def _noise_image(h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _read_video(path):
    """(frames, fps) decoded with OpenCV."""
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames, fps


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_demo_single_png_draws_above_threshold_only(one_thread, tiny_shapes, weights, tmp_path):
    """Threshold 0: boxes drawn, same size. Threshold 1.01: the PNG comes back pixel-identical."""
    name, _ = tiny_shapes
    image = _noise_image(70, 100, seed=1)
    src = tmp_path / "in" / "noise.png"
    src.parent.mkdir()
    cv2.imwrite(str(src), image)

    summary = demo.run(_argv(weights, name, src, tmp_path / "drawn", 0))
    drawn = cv2.imread(str(tmp_path / "drawn" / "noise.png"))
    assert (summary.images_written, summary.images_skipped) == (1, 0)
    assert 0 < summary.detections <= 5  # at most TEST.DETECTIONS_PER_IMAGE
    assert drawn.shape == image.shape
    assert (drawn != image).any(axis=2).mean() > 0.05

    assert demo.main(_argv(weights, name, src, tmp_path / "plain", 1.01)) == 0
    assert np.array_equal(cv2.imread(str(tmp_path / "plain" / "noise.png")), image)


def test_demo_folder_skips_and_counts_unreadable_image(one_thread, tiny_shapes, weights, tmp_path):
    name, _ = tiny_shapes
    folder = tmp_path / "in"
    folder.mkdir()
    sizes = {"a.png": (64, 90), "b.jpg": (80, 72)}
    for file, (h, w) in sizes.items():
        cv2.imwrite(str(folder / file), _noise_image(h, w, seed=h))
    (folder / "broken.jpg").write_bytes(b"not a jpeg at all")
    (folder / "notes.txt").write_text("ignored: not an image extension")
    (folder / "sub").mkdir()

    records = _Records()
    logging.getLogger("centerx.predict").addHandler(records)
    try:
        summary = demo.run(_argv(weights, name, folder, tmp_path / "out", 0.0))
    finally:
        logging.getLogger("centerx.predict").removeHandler(records)

    assert (summary.images_written, summary.images_skipped) == (2, 1)
    assert sorted(os.listdir(tmp_path / "out")) == ["a.png", "b.jpg"]
    for file, (h, w) in sizes.items():
        assert cv2.imread(str(tmp_path / "out" / file)).shape == (h, w, 3)
    assert any("broken.jpg" in m and "skipped" in m for m in records.messages), records.messages
    assert any("2 images, 1 unreadable skipped" in m for m in records.messages), records.messages


def test_demo_video_keeps_frames_size_and_fps(one_thread, tiny_shapes, weights, tmp_path):
    """5 MJPG frames in; the same number, size and fps out; boxes only at threshold 0,
    and at 1.01 exactly what a plain re-encode of the input decodes to."""
    name, _ = tiny_shapes
    src = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(src), cv2.VideoWriter_fourcc(*"MJPG"), 7.0, (96, 64))
    assert writer.isOpened()
    for i in range(5):
        writer.write(_noise_image(64, 96, seed=10 + i))
    writer.release()
    frames_in, _ = _read_video(src)
    assert len(frames_in) == 5

    summary = demo.run(_argv(weights, name, src, tmp_path / "drawn", 0))
    (drawn_file,) = os.listdir(tmp_path / "drawn")
    assert drawn_file in ("clip.mp4", "clip.avi")
    drawn, fps = _read_video(tmp_path / "drawn" / drawn_file)
    assert summary.frames_written == 5 and len(drawn) == 5
    assert fps == pytest.approx(7.0)
    assert all(f.shape == (64, 96, 3) for f in drawn)

    demo.run(_argv(weights, name, src, tmp_path / "plain", 1.01))
    plain, _ = _read_video(tmp_path / "plain" / drawn_file)
    reencode_writer, reencode_file = demo.open_video_writer(str(tmp_path / "reencode"), 7.0, (96, 64))
    for frame in frames_in:
        reencode_writer.write(frame)
    reencode_writer.release()
    reencoded, _ = _read_video(reencode_file)
    assert len(plain) == len(reencoded) == 5
    assert all(np.array_equal(p, r) for p, r in zip(plain, reencoded))
    assert all((d.astype(int) - r).any() for d, r in zip(drawn, reencoded))


def _flags(argv, *flags):
    """``argv`` of _argv with ``flags`` before its KEY VALUE overrides."""
    return argv[:8] + list(flags) + argv[8:]


def _folder(tmp_path, count=5):
    """``count`` 56 x 72 noise images (one size: a batch pads none of them)."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(count):
        cv2.imwrite(str(folder / f"{i}.png"), _noise_image(56, 72, seed=30 + i))
    return folder


def test_batches_give_the_same_detections_as_one_by_one_and_json_is_coco_results(
    one_thread, tiny_shapes, weights, tmp_path
):
    """--batch 3 over 5 images finds what --batch 1 finds; --save-json
    holds them as COCO results: image_id the image's index, bbox x, y, w, h."""
    name, _ = tiny_shapes
    folder = _folder(tmp_path)
    results = {}
    for batch in (1, 3):
        path = tmp_path / f"b{batch}.json"
        demo.run(
            _flags(
                _argv(weights, name, folder, tmp_path / f"out{batch}", 0.0),
                "--batch",
                str(batch),
                "--save-json",
                str(path),
            )
        )
        results[batch] = json.loads(path.read_text())
    assert 10 < len(results[1]) <= 5 * 5 and len(results[3]) == len(results[1])  # at most 5 per image

    def key(r):
        return r["image_id"], r["category_id"], round(r["score"], 3)

    for a, b in zip(sorted(results[1], key=key), sorted(results[3], key=key)):
        assert (a["image_id"], a["category_id"], a["file_name"]) == (b["image_id"], b["category_id"], b["file_name"])
        assert a["score"] == pytest.approx(b["score"], abs=1e-4)
        np.testing.assert_allclose(a["bbox"], b["bbox"], atol=0.05)
    assert sorted({r["image_id"] for r in results[1]}) == list(range(5))
    assert all(os.path.basename(r["file_name"]) == f"{r['image_id']}.png" for r in results[1])
    assert all(len(r["bbox"]) == 4 and r["bbox"][2] > 0 and r["bbox"][3] > 0 for r in results[1])


def test_exported_runtime_and_heatmap_overlay(one_thread, tiny_shapes, weights, tmp_path, capsys):
    """--runtime onnxruntime runs an exported file through the same command; --heatmap
    (pytorch) changes the drawn image; --heatmap with an exported runtime is refused."""
    from centerx.deploy.exporters import export

    name, _ = tiny_shapes
    folder = _folder(tmp_path, count=2)
    cfg = _tiny_cfg(name, "MODEL.WEIGHTS", weights, "EXPORT.INPUT_SIZE", "(96, 96)")
    onnx_file = export(cfg, "onnx", str(tmp_path / "deploy"))
    argv = _argv(weights, name, folder, tmp_path / "onnx", 0.0) + ["EXPORT.INPUT_SIZE", "(96, 96)"]
    summary = demo.run(
        _flags(argv, "--runtime", "onnxruntime", "--model", onnx_file, "--save-json", str(tmp_path / "o.json"))
    )
    assert summary.images_written == 2 and summary.detections == 10
    plain = demo.run(_argv(weights, name, folder, tmp_path / "plain", 1.01))
    demo.run(_flags(_argv(weights, name, folder, tmp_path / "heat", 1.01), "--heatmap"))
    assert plain.images_written == 2
    for f in ("0.png", "1.png"):
        a, b = cv2.imread(str(tmp_path / "plain" / f)), cv2.imread(str(tmp_path / "heat" / f))
        assert a.shape == b.shape and (a != b).any()
    with pytest.raises(SystemExit):
        demo.run(_flags(argv, "--runtime", "onnxruntime", "--model", onnx_file, "--heatmap"))
    assert "--heatmap needs --runtime pytorch" in capsys.readouterr().err


def test_max_frames_and_a_missing_camera(one_thread, tiny_shapes, weights, tmp_path):
    name, _ = tiny_shapes
    src = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(src), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (64, 48))
    for i in range(6):
        writer.write(_noise_image(48, 64, seed=50 + i))
    writer.release()
    summary = demo.run(_flags(_argv(weights, name, src, tmp_path / "out", 0.5), "--max-frames", "4", "--batch", "3"))
    assert summary.frames_written == 4
    with pytest.raises(SystemExit, match="Cannot open camera 57"):
        demo.run(_argv(weights, name, "57", tmp_path / "cam", 0.5))


@pytest.mark.parametrize("case", ["missing", "empty_folder", "not_media", "no_weights", "output_is_input"])
def test_demo_bad_command_lines_exit_2(tiny_shapes, weights, tmp_path, case, capsys):
    name, _ = tiny_shapes
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "a.png"), _noise_image(64, 64, seed=0))
    argv = {
        "missing": _argv(weights, name, tmp_path / "nope.jpg", tmp_path / "out", 0.3),
        "empty_folder": _argv(weights, name, tmp_path / "empty", tmp_path / "out", 0.3),
        "not_media": _argv(weights, name, tmp_path / "notes.txt", tmp_path / "out", 0.3),
        "no_weights": _argv(str(tmp_path / "absent.pth"), name, tmp_path / "in", tmp_path / "out", 0.3),
        "output_is_input": _argv(weights, name, tmp_path / "in", tmp_path / "in", 0.3),
    }[case]
    with pytest.raises(SystemExit) as exc:
        demo.main(argv)
    assert exc.value.code == 2
    expected = {
        "missing": "no such file or folder",
        "empty_folder": "holds no",
        "not_media": "not an image",
        "no_weights": "MODEL.WEIGHTS",
        "output_is_input": "overwrite",
    }[case]
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_demo_only_unreadable_image_returns_1(tiny_shapes, weights, tmp_path):
    name, _ = tiny_shapes
    src = tmp_path / "in" / "broken.png"
    src.parent.mkdir()
    src.write_bytes(b"\x89PNG truncated")
    assert demo.main(_argv(weights, name, src, tmp_path / "out", 0.3)) == 1
    assert os.listdir(tmp_path / "out") == []


def _fake_trainer(model, iteration, max_iter):
    return types.SimpleNamespace(model=model, iter=iteration, max_iter=max_iter)


def _tensorboard_images(log_dir):
    """{tag: [(step, (H, W, 3) RGB uint8)]} read back from the event file(s) in ``log_dir``."""
    acc = event_accumulator.EventAccumulator(str(log_dir), size_guidance={event_accumulator.IMAGES: 0})
    acc.Reload()
    out = {}
    for tag in acc.Tags()["images"]:
        out[tag] = []
        for event in acc.Images(tag):
            bgr = cv2.imdecode(np.frombuffer(event.encoded_image_string, np.uint8), cv2.IMREAD_COLOR)
            assert bgr.shape[:2] == (event.height, event.width)
            out[tag].append((event.step, bgr[:, :, ::-1]))
    return out, acc.Tags()["scalars"]


def _run_hook(hook, log_dir):
    """Iterations 0..9 with period 5: drawn after iteration 4 and after training (step 9)."""
    writer = TensorboardXWriter(str(log_dir))
    with EventStorage(0) as storage:
        for it in range(10):
            storage.iter = hook.trainer.iter = it
            storage.put_scalar("loss", 1.0)
            hook.after_step()
        hook.trainer.iter = 10  # as detectron2 leaves it after the loop
        hook.after_train()
        writer.write()
    writer.close()
    return _tensorboard_images(log_dir)


def test_prediction_images_reach_tensorboard(one_thread, tiny_shapes, tmp_path):
    """3 images, at step 4 (period 5) and 9 (after training), test-time size, boxes drawn
    at threshold 0 and none at 1.01; the model is unwrapped and left in training mode."""
    name, _ = tiny_shapes
    dicts = DatasetCatalog.get(name)[:3]
    expected = {
        f"predictions/{i}_{os.path.basename(d['file_name'])}": ResizeShortestEdge.get_output_shape(
            d["height"], d["width"], MIN_SIZE, MAX_SIZE
        )
        for i, d in enumerate(dicts)
    }
    images = {}
    for thresh in ("0.0", "1.01"):
        cfg = _tiny_cfg(name, "TEST.VIS_IMAGES", "3", "TEST.VIS_SCORE_THRESH", thresh)
        model = _model_with_visible_boxes(cfg).train()
        hook = PredictionImages(cfg, period=5)
        hook.trainer = _fake_trainer(torch.nn.DataParallel(model), 0, 10)
        images[thresh], scalars = _run_hook(hook, tmp_path / thresh)
        assert model.training
        assert scalars == ["loss"]
        assert sorted(images[thresh]) == sorted(expected)
        for tag, size in expected.items():
            assert [step for step, _ in images[thresh][tag]] == [4, 9]
            assert all(img.shape == size + (3,) for _, img in images[thresh][tag])

    mapper_cfg = _tiny_cfg(name)
    plain_hook = PredictionImages(mapper_cfg, period=0)
    for i, d in enumerate(dicts):
        tag = f"predictions/{i}_{os.path.basename(d['file_name'])}"
        plain = convert_image_to_rgb(plain_hook._mapper(d)["image"].permute(1, 2, 0), mapper_cfg.INPUT.FORMAT)
        assert np.array_equal(images["1.01"][tag][0][1], plain)
        assert not np.array_equal(images["0.0"][tag][0][1], plain)


def test_prediction_images_written_to_files_after_training(one_thread, tiny_shapes, tmp_path):
    """With a save_dir, the drawings of the last evaluation (after training) are
    also PNG files there, pixel for pixel the images TensorBoard gets at step 9,
    and nothing is written at the periodic drawings before."""
    name, _ = tiny_shapes
    cfg = _tiny_cfg(name, "TEST.VIS_IMAGES", "2", "TEST.VIS_SCORE_THRESH", "0.0")
    hook = PredictionImages(cfg, period=5, save_dir=str(tmp_path / "predictions"))
    hook.trainer = _fake_trainer(_model_with_visible_boxes(cfg), 0, 10)
    images, _ = _run_hook(hook, tmp_path / "tb")
    files = sorted(os.listdir(tmp_path / "predictions"))
    dicts = DatasetCatalog.get(name)[:2]
    stems = [f"{i}_{os.path.splitext(os.path.basename(d['file_name']))[0]}" for i, d in enumerate(dicts)]
    assert files == sorted(f"{stem}.png" for stem in stems)
    for i, d in enumerate(dicts):
        written = cv2.imread(str(tmp_path / "predictions" / f"{stems[i]}.png"))[:, :, ::-1]
        step, last = images[f"predictions/{i}_{os.path.basename(d['file_name'])}"][-1]
        assert step == 9 and np.array_equal(written, last)


def test_prediction_images_off_or_unreadable(one_thread, tiny_shapes, tmp_path):
    """VIS_IMAGES 0 or no test dataset: no image, scalars still written. An unreadable
    test image is skipped, the others are drawn."""
    name, _ = tiny_shapes
    for i, extra in enumerate([("TEST.VIS_IMAGES", "0"), ("DATASETS.TEST", "()")]):
        cfg = _tiny_cfg(name, *extra)
        hook = PredictionImages(cfg, period=5)
        hook.trainer = _fake_trainer(_model_with_visible_boxes(_tiny_cfg(name)), 0, 10)
        images, scalars = _run_hook(hook, tmp_path / str(i))
        assert images == {} and scalars == ["loss"]

    partly = "test_vis_partly_missing"
    if partly not in DatasetCatalog:
        good = DatasetCatalog.get(name)[0]
        missing = dict(good, file_name=str(tmp_path / "gone.jpg"))
        DatasetCatalog.register(partly, lambda: [missing, good])
        MetadataCatalog.get(partly).set(thing_classes=MetadataCatalog.get(name).thing_classes)
    cfg = _tiny_cfg(partly, "TEST.VIS_IMAGES", "2")
    hook = PredictionImages(cfg, period=0)
    hook.trainer = _fake_trainer(_model_with_visible_boxes(cfg), 9, 10)
    with EventStorage(9):
        assert hook.put_images() == 1


def test_prediction_images_rejects_negative_count(tiny_shapes):
    name, _ = tiny_shapes
    with pytest.raises(ValueError, match="TEST.VIS_IMAGES"):
        PredictionImages(_tiny_cfg(name, "TEST.VIS_IMAGES", "-1"), period=0)
