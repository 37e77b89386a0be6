"""Trust: no weight file runs code on any path, files that are not weights are named
for what they are, run folders are rewritten only by the run that owns them, and
the commands check their arguments before they work."""

import json
import logging
import os
import pickle
import re
import zipfile

import cv2
import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

import centerx
from centerx.checkpoint import NotWeightsFileError, UnsafeWeightsError, read_weights
from centerx.engine import Predictor

from project_scripts import load_script
from tiny_models import randomize_, tiny_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, "configs", "shapes", "centernet_r18_demo.yaml")
MARKER = "pwned_by_pickle"


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


@pytest.fixture
def crafted_pkl(tmp_path, monkeypatch):
    """A .pkl whose unpickling would create MARKER in the working folder (tmp_path)."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "weights.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {"conv1.weight": np.zeros(3)}, "__author__": "x", "x": _RunsCode()}, f, protocol=2)
    yield str(path)
    assert not (tmp_path / MARKER).exists(), "the crafted pickle ran its code"


@pytest.fixture
def centerx_log():
    """The messages logged under "centerx" (whose console handler does not propagate to pytest's)."""
    records = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logger = logging.getLogger("centerx")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def _demo_argv(dataset, *extra):
    return [
        "DATASETS.TEST",
        f"('{dataset}',)",
        "INPUT.MIN_SIZE_TEST",
        "64",
        "INPUT.MAX_SIZE_TEST",
        "64",
        "MODEL.DEVICE",
        "cpu",
        *extra,
    ]


def _image(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir(exist_ok=True)
    cv2.imwrite(str(folder / "x.png"), np.random.default_rng(0).integers(0, 256, (64, 80, 3), np.uint8))
    return folder


# --------------------------------------------------------------------------- the crafted pickle
def test_crafted_pickle_runs_nothing_through_predict(crafted_pkl, tiny_shapes, tmp_path, capsys):
    """./run.sh predict used to hand MODEL.WEIGHTS to detectron2's DefaultPredictor,
    whose checkpointer unpickled it unrestricted before centerX's loader saw it."""
    name, _ = tiny_shapes
    predict = load_script("demo", "predict")
    with pytest.raises(SystemExit) as info:
        predict.main(
            [
                "--config-file",
                DEMO,
                "--input",
                str(_image(tmp_path)),
                "--output",
                str(tmp_path / "out"),
                "MODEL.WEIGHTS",
                crafted_pkl,
                *_demo_argv(name),
            ]
        )
    assert info.value.code == 2
    assert "asks for posix.system" in capsys.readouterr().err


def test_crafted_pickle_runs_nothing_through_the_python_predictor(crafted_pkl):
    cfg = tiny_cfg("CenterNet", "MODEL.WEIGHTS", crafted_pkl)
    with pytest.raises(UnsafeWeightsError, match="asks for posix.system"):
        Predictor(cfg)


def test_crafted_pickle_runs_nothing_as_backbone_or_teacher_weights(crafted_pkl, tmp_path):
    with pytest.raises(UnsafeWeightsError):
        build_model(tiny_cfg("CenterNet", "MODEL.CENTERX.BACKBONE_WEIGHTS", crafted_pkl))
    teacher_cfg = tmp_path / "teacher.yaml"
    teacher_cfg.write_text(tiny_cfg("CenterNet").dump())
    cfg = tiny_cfg(
        "CenterNet",
        "MODEL.META_ARCHITECTURE",
        "Distiller",
        "MODEL.DISTILL.STUDENT_META_ARCHITECTURE",
        "CenterNet",
        "MODEL.DISTILL.TEACHERS",
        f"[('{teacher_cfg}', '{crafted_pkl}', (0, 1, 2))]",
        "DATASETS.TRAIN",
        "()",
        "DATASETS.TEST",
        "()",
    )
    with pytest.raises(Exception, match="asks for posix.system"):
        build_model(cfg)


def test_timm_backbone_weights_are_read_by_centerx_first(crafted_pkl, tmp_path):
    """MODEL.TIMM.WEIGHTS goes to timm's own loader only after centerX's reader has read
    it: a crafted pickle or torch file is refused as unsafe and a README as no weights
    file, each naming the key, where timm's loader stopped with torch's advice to retry
    with weights_only=False (or a bare UnpicklingError)."""
    from centerx.modeling.backbones import TimmBackbone

    crafted_pth = tmp_path / "weights.pth"
    torch.save({"conv_stem.weight": torch.zeros(1), "x": _RunsCode()}, crafted_pth)
    for path in (crafted_pkl, str(crafted_pth)):
        with pytest.raises(UnsafeWeightsError, match=rf"^MODEL.TIMM.WEIGHTS '{re.escape(path)}': Refusing") as info:
            TimmBackbone("mobilenetv3_small_100", weights=path)
        assert "weights_only" not in str(info.value)
    readme = tmp_path / "README.md"
    readme.write_text("# not weights\n")
    not_weights = r"^MODEL.TIMM.WEIGHTS '.*README.md': .* is not a weights file"
    with pytest.raises(NotWeightsFileError, match=not_weights) as info:
        TimmBackbone("mobilenetv3_small_100", weights=str(readme))
    assert "weights_only" not in str(info.value)


def test_crafted_pickle_runs_nothing_through_eval_and_export(crafted_pkl, tiny_shapes, tmp_path, centerx_log):
    import train_net

    name, _ = tiny_shapes
    args = train_net.argument_parser().parse_args(
        [
            "--config-file",
            DEMO,
            "--eval-only",
            "MODEL.WEIGHTS",
            crafted_pkl,
            "OUTPUT_DIR",
            str(tmp_path / "run"),
            *_demo_argv(name),
        ]
    )
    with pytest.raises(SystemExit, match="asks for posix.system"):
        train_net.main(args)
    export = load_script("speedup", "export")
    assert (
        export.main(
            [
                "--config-file",
                DEMO,
                "--format",
                "onnx",
                "--output",
                str(tmp_path / "deploy"),
                "MODEL.WEIGHTS",
                crafted_pkl,
            ]
        )
        == 2
    )
    assert any("asks for posix.system" in m for m in centerx_log)


# --------------------------------------------------------------------------- files that are not weights
def _zip_without_tensors(path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "hello")


@pytest.mark.parametrize(
    "name,write,what",
    [
        ("empty.pth", lambda p: open(p, "wb").close(), "an empty file"),
        ("page.pth", lambda p: open(p, "w").write("<!DOCTYPE html><html><body>Sign in</body></html>"), "an HTML page"),
        ("cfg.pth", lambda p: open(p, "w").write("_BASE_: Base.yaml\nMODEL:\n  WEIGHTS: ''\n"), "a YAML config"),
        ("archive.pth", _zip_without_tensors, "a zip archive without tensors"),
        ("cut.pth", lambda p: open(p, "wb").write(b"\x80\x02}q\x00(X"), "damaged, truncated"),
        ("cut.pkl", lambda p: open(p, "wb").write(b"\x80\x02}q\x00(X"), "damaged or truncated"),
        # text and bytes that are no pickle at all: PyTorch's weights-only loader reports an opcode it
        # does not take ("Unsupported operand 35"), which read as "could run code" before
        ("notes.pth", lambda p: open(p, "w").write("# my model\n\ntrained for 12 epochs\n"), "reads neither as"),
        ("noise.pth", lambda p: open(p, "wb").write(b"\x00\x01garbage\xff\xfe"), "reads neither as"),
    ],
)
def test_a_file_that_is_not_weights_is_named_for_what_it_is(tmp_path, name, write, what):
    path = str(tmp_path / name)
    write(path)
    with pytest.raises(NotWeightsFileError, match=what) as info:
        read_weights(path)
    assert "weights_only" not in str(info.value)


def test_a_pickle_with_an_opcode_the_loader_refuses_is_still_unsafe(tmp_path):
    """A well-formed pickle built with an opcode PyTorch's weights-only loader does not take
    (INST: "import os.system and call it") is refused as unsafe, not called a non-pickle."""
    path = tmp_path / "inst.pth"
    path.write_bytes(b"(S'echo hi'\nios\nsystem\np0\n.")
    with pytest.raises(UnsafeWeightsError, match="could run code"):
        read_weights(str(path))


def test_a_text_pickle_of_weights_still_loads(tmp_path):
    """Protocol-0 pickles (old Python 2 model-zoo files) are text: not refused as text."""
    path = str(tmp_path / "old.pkl")
    with open(path, "wb") as f:
        pickle.dump({"model": {"conv1.weight": [1.0, 2.0]}, "__author__": "py2"}, f, protocol=0)
    assert read_weights(path) == {"model": {"conv1.weight": [1.0, 2.0]}, "__author__": "py2"}


def test_predict_names_a_non_weights_file_and_a_404_url(tiny_shapes, tmp_path, capsys):
    import functools
    import http.server
    import threading

    name, _ = tiny_shapes
    page = tmp_path / "model.pth"
    page.write_text("<html><head><title>Download</title></head></html>")
    predict = load_script("demo", "predict")
    argv = ["--config-file", DEMO, "--input", str(_image(tmp_path)), "--output", str(tmp_path / "out")]
    with pytest.raises(SystemExit):
        predict.main(argv + ["MODEL.WEIGHTS", str(page), *_demo_argv(name)])
    assert "is an HTML page" in capsys.readouterr().err
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    )
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with pytest.raises(SystemExit):
            predict.main(
                argv + ["MODEL.WEIGHTS", f"http://127.0.0.1:{httpd.server_address[1]}/none.pth", *_demo_argv(name)]
            )
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert "HTTP 404" in capsys.readouterr().err


# --------------------------------------------------------------------------- run folders
def _fake_run(tmp_path, dataset):
    """A finished run's folder: its config.yaml and a model_final.pth of a random model."""
    run = tmp_path / "run"
    run.mkdir()
    cfg = centerx.get_centerx_cfg()
    cfg.merge_from_file(DEMO)
    cfg.merge_from_list(_demo_argv(dataset, "OUTPUT_DIR", str(run), "TEST.DETECTIONS_PER_IMAGE", "5"))
    (run / "config.yaml").write_text(cfg.dump())
    torch.manual_seed(0)
    DetectionCheckpointer(build_model(cfg), save_dir=str(run)).save("model_final")
    return run


def test_eval_writes_beside_the_run_not_over_its_config(tiny_shapes, tmp_path):
    """detectron2's default_setup wrote the eval's overrides into the training run's
    config.yaml; --eval-only now writes under OUTPUT_DIR/eval."""
    import train_net

    name, _ = tiny_shapes
    run = _fake_run(tmp_path, name)
    before = (run / "config.yaml").read_bytes()
    args = train_net.argument_parser().parse_args(
        [
            "--config-file",
            str(run / "config.yaml"),
            "--eval-only",
            "MODEL.WEIGHTS",
            str(run / "model_final.pth"),
            "TEST.FLIP_TEST",
            "True",
            "DATASETS.TRAIN",
            "('no_such_dataset_anywhere',)",
        ]
    )
    train_net.main(args)  # evaluates: the training set (unregistered here) is not validated or decoded
    assert (run / "config.yaml").read_bytes() == before
    saved = (run / "eval" / "config.yaml").read_text()
    assert "FLIP_TEST: true" in saved
    assert (run / "eval" / "inference").is_dir()


def test_training_into_a_finished_run_is_refused_unless_asked(tiny_shapes, tmp_path):
    import train_net

    name, _ = tiny_shapes
    run = _fake_run(tmp_path, name)
    argv = ["--config-file", DEMO, "OUTPUT_DIR", str(run), "DATASETS.TRAIN", f"('{name}',)", *_demo_argv(name)]
    with pytest.raises(SystemExit, match=r"already holds a training run \(model_final.pth.*--resume.*--overwrite"):
        train_net.prepare(train_net.argument_parser().parse_args(argv))
    for flag in ("--resume", "--overwrite"):
        train_net.prepare(train_net.argument_parser().parse_args([flag] + argv))


def test_resume_without_a_checkpoint_warns_that_the_run_starts_over(tiny_shapes, tmp_path, centerx_log):
    """--resume into a folder with no checkpoint (a mistyped OUTPUT_DIR) trained from
    iteration 0 with nothing on screen to say so; it now warns, and a folder with a run
    to continue does not."""
    import train_net

    name, _ = tiny_shapes
    run = _fake_run(tmp_path, name)  # its checkpointer wrote last_checkpoint
    for folder, warned in ((run, False), (tmp_path / "typo", True)):
        argv = ["--resume", "--config-file", DEMO, "OUTPUT_DIR", str(folder), "DATASETS.TRAIN", f"('{name}',)"]
        centerx_log.clear()
        train_net.prepare(train_net.argument_parser().parse_args([*argv, *_demo_argv(name)]))
        message = f"--resume: OUTPUT_DIR {folder} holds no checkpoint (no last_checkpoint file), so the run starts"
        assert any(m.startswith(message) for m in centerx_log) == warned, centerx_log


def test_training_saves_the_class_names_with_the_run(tiny_shapes, tmp_path):
    from detectron2.config import get_cfg

    import train_net

    name, _ = tiny_shapes
    args = train_net.argument_parser().parse_args(
        [
            "--config-file",
            DEMO,
            "DATASETS.TRAIN",
            f"('{name}',)",
            "DATASETS.TEST",
            "()",
            "INPUT.TRAIN_SIZE",
            "64",
            "SOLVER.IMS_PER_BATCH",
            "2",
            "SOLVER.MAX_ITER",
            "1",
            "SOLVER.WARMUP_ITERS",
            "0",
            "TEST.VIS_IMAGES",
            "0",
            "OUTPUT_DIR",
            str(tmp_path / "out"),
            "MODEL.DEVICE",
            "cpu",
        ]
    )
    train_net.main(args)
    saved = centerx.add_centerx_config(get_cfg())
    saved.merge_from_file(str(tmp_path / "out" / "config.yaml"))
    assert list(saved.MODEL.CENTERX.CLASS_NAMES) == ["circle", "rectangle", "triangle", "cross"]


# --------------------------------------------------------------------------- arguments checked before work
def test_config_base_cycle_is_named(tmp_path):
    import train_net

    (tmp_path / "a.yaml").write_text("_BASE_: b.yaml\n")
    (tmp_path / "b.yaml").write_text("_BASE_: a.yaml\n")
    args = train_net.argument_parser().parse_args(["--config-file", str(tmp_path / "a.yaml")])
    with pytest.raises(SystemExit, match=r"_BASE_ cycle: .*a.yaml -> .*b.yaml -> .*a.yaml"):
        train_net.load_run_config(args)
    (tmp_path / "latin.yaml").write_bytes(b"MODEL:\n  WEIGHTS: 'caf\xe9.pth'\n")
    args = train_net.argument_parser().parse_args(["--config-file", str(tmp_path / "latin.yaml")])
    with pytest.raises(SystemExit, match=r"latin.yaml' is not UTF-8 text: byte 0xe9 at line 2"):
        train_net.load_run_config(args)
    # a binary file (an exported model given as the config) is not sent to iconv
    (tmp_path / "model.onnx").write_bytes(b"\x08\x07\x12\x07pytorch\x1a\x052.9.0:\xab\x00\x00\x0a")
    args = train_net.argument_parser().parse_args(["--config-file", str(tmp_path / "model.onnx")])
    with pytest.raises(SystemExit, match=r"model.onnx' is a binary file, not text \(a model, weights or image file"):
        train_net.load_run_config(args)
    (tmp_path / "utf16.yaml").write_bytes("MODEL:\n  WEIGHTS: ''\n".encode("utf-16"))
    args = train_net.argument_parser().parse_args(["--config-file", str(tmp_path / "utf16.yaml")])
    with pytest.raises(SystemExit, match=r"utf16.yaml' is UTF-16 text: save it as UTF-8"):
        train_net.load_run_config(args)


@pytest.mark.parametrize(
    "extra,match",
    [
        (["--output", "{file}"], "is a file; --output takes a folder"),
        (["--output", "{out}", "--save-json", "{missing}/d.json"], "does not exist"),
        (["--output", "{out}", "--save-json", "{out}"], "is a folder; give a file name"),
        (["--output", "{out}", "--max-frames", "-1"], "--max-frames must be 0"),
        (
            ["--output", "{out}", "--runtime", "openvino", "--model", "{onnx}"],
            "runs a .xml .* run it with --runtime onnxruntime",
        ),
        (
            ["--output", "{out}", "--runtime", "onnxruntime", "--model", "{onnx}"],
            "the onnxruntime runtime cannot load it",
        ),
    ],
)
def test_predict_refuses_bad_arguments_before_any_work(tiny_shapes, tmp_path, capsys, extra, match):
    name, _ = tiny_shapes
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "m.onnx").write_bytes(b"x")
    (tmp_path / "unused.pth").write_bytes(b"x")
    (tmp_path / "out").mkdir()
    paths = {
        "file": tmp_path / "file.txt",
        "out": tmp_path / "out",
        "missing": tmp_path / "nowhere",
        "onnx": tmp_path / "m.onnx",
    }
    predict = load_script("demo", "predict")
    argv = ["--config-file", DEMO, "--input", str(_image(tmp_path))] + [e.format(**paths) for e in extra]
    with pytest.raises(SystemExit) as info:
        predict.main(argv + ["MODEL.WEIGHTS", str(tmp_path / "unused.pth"), *_demo_argv(name)])
    assert info.value.code == 2
    assert re.search(match, capsys.readouterr().err)


def test_predict_takes_class_names_from_the_model_config(tiny_shapes, tmp_path):
    """The test json gone: predict still runs, naming classes from MODEL.CENTERX.CLASS_NAMES."""
    name, _ = tiny_shapes
    run = _fake_run(tmp_path, name)
    centerx.register_coco_json_datasets([("t_gone_json", str(tmp_path / "gone.json"), str(tmp_path))])
    predict = load_script("demo", "predict")
    cfg = centerx.get_centerx_cfg()
    cfg.merge_from_file(DEMO)
    cfg.MODEL.CENTERX.CLASS_NAMES = ("ring", "box", "wedge")
    names, _ = predict.dataset_metadata(cfg)
    assert names == ["ring", "box", "wedge"]
    summary = predict.run(
        [
            "--config-file",
            DEMO,
            "--input",
            str(_image(tmp_path)),
            "--output",
            str(tmp_path / "drawn"),
            "MODEL.WEIGHTS",
            str(run / "model_final.pth"),
            "MODEL.CENTERX.CLASS_NAMES",
            "('ring', 'box', 'wedge')",
            *_demo_argv("t_gone_json"),
        ]
    )
    assert summary.images_written == 1


@pytest.mark.parametrize("flag", ["--images", "--batch", "--reps"])
def test_benchmark_refuses_zero_counts(flag, capsys):
    formats = load_script("speedup", "benchmark")
    with pytest.raises(SystemExit) as info:
        formats.main(["--config-file", DEMO, flag, "0", "MODEL.WEIGHTS", "x.pth"])
    assert info.value.code == 2 and f"{flag} must be at least 1, got 0" in capsys.readouterr().err


def test_benchmark_without_weights_suggests_no_flag_it_lacks():
    formats = load_script("speedup", "benchmark")
    with pytest.raises(SystemExit, match="MODEL.WEIGHTS is empty") as info:
        formats.main(["--config-file", DEMO])
    assert "--allow-random-weights" not in str(info.value)


def _with_a_missing_image(tiny_shapes, tmp_path, index: int, name: str) -> None:
    """Register ``name``: the tiny shapes set with image ``index`` pointing at a file that does not exist."""
    _, json_file = tiny_shapes
    data = json.loads(open(json_file).read())
    data["images"][index]["file_name"] = "missing.png"
    broken = tmp_path / f"{name}.json"
    broken.write_text(json.dumps(data))
    image_root = os.path.join(os.path.dirname(os.path.dirname(json_file)), "tiny")
    centerx.register_coco_json_datasets([(name, str(broken), image_root)])


def _tiny_model_files(tmp_path, num_classes=4, heat_bias=None):
    """(config file, weights file) of a tiny random TTFNet; ``heat_bias`` (class,
    value) makes one class score high everywhere."""
    cfg = tiny_cfg("TTFNet", "MODEL.TTFNET.NUM_CLASSES", str(num_classes))
    model = randomize_(build_model(cfg), seed=2)
    if heat_bias is not None:
        with torch.no_grad():
            model.heads.heatmap.layers[-1].bias[heat_bias[0]] = heat_bias[1]
    weights = tmp_path / "w.pth"
    torch.save({"model": model.state_dict()}, weights)
    config = tmp_path / "tiny.yaml"
    config.write_text(cfg.dump())
    return str(config), str(weights)


def test_benchmark_skips_a_missing_image_and_exits_1_when_a_row_fails(tiny_shapes, tmp_path, centerx_log):
    """A row that fails (tensorrt without an NVIDIA GPU) used to leave exit code 0;
    a missing image used to fail every row."""
    _with_a_missing_image(tiny_shapes, tmp_path, 0, "t_bench_missing")
    config, weights = _tiny_model_files(tmp_path)
    cli = load_script("speedup", "benchmark")
    code = cli.main(
        [
            "--config-file",
            config,
            "--formats",
            "pytorch",
            "tensorrt",
            "--reps",
            "1",
            "--warmup",
            "0",
            "--images",
            "2",
            "--ap-images",
            "0",
            "--threads",
            "1",
            "--output",
            str(tmp_path / "b"),
            "MODEL.WEIGHTS",
            weights,
            "DATASETS.TEST",
            "('t_bench_missing',)",
        ]
    )
    assert code == 1
    text = "\n".join(centerx_log)
    assert "1 unreadable images skipped for timing" in text
    assert "1 of 2 formats failed (tensorrt)" in text and str(tmp_path / "b" / "table.md") in text
    rows = [line for line in (tmp_path / "b" / "table.md").read_text().splitlines() if line.startswith("| ")]
    assert any(r.startswith("| pytorch") and "failed" not in r for r in rows)


@pytest.mark.slow
def test_predict_refuses_a_model_file_of_another_class_count(tmp_path, capsys):
    """An ONNX graph of 4 classes run with a 3-class config: refused before any image
    (the class count is in the file's metadata); a file without that metadata stops
    at the first class index the config cannot have, not with an index error while
    drawing."""
    import onnx

    config4, weights = _tiny_model_files(tmp_path, num_classes=4, heat_bias=(3, 6.0))
    export = load_script("speedup", "export")
    assert (
        export.main(
            [
                "--config-file",
                config4,
                "--format",
                "onnx",
                "--output",
                str(tmp_path / "deploy"),
                "MODEL.WEIGHTS",
                weights,
            ]
        )
        == 0
    )
    onnx_file = tmp_path / "deploy" / "model.onnx"
    config3 = tmp_path / "three.yaml"
    config3.write_text(tiny_cfg("TTFNet").dump())
    predict = load_script("demo", "predict")
    argv = [
        "--config-file",
        str(config3),
        "--input",
        str(_image(tmp_path)),
        "--output",
        str(tmp_path / "out"),
        "--runtime",
        "onnxruntime",
        "--model",
        str(onnx_file),
        "MODEL.WEIGHTS",
        weights,
        "DATASETS.TEST",
        "()",
    ]
    with pytest.raises(SystemExit) as info:
        predict.main(argv)
    assert info.value.code == 2
    assert "was exported with 4 classes, but the config has 3 (MODEL.TTFNET.NUM_CLASSES)" in capsys.readouterr().err
    assert not (tmp_path / "out" / "x.png").exists()
    model = onnx.load(str(onnx_file))
    del model.metadata_props[:]
    onnx.save(model, str(onnx_file))
    with pytest.raises(
        SystemExit,
        match=r"outputs class index 3, but the config's model has 3 classes "
        r"\(MODEL.TTFNET.NUM_CLASSES 3\)",
    ):
        predict.main(argv)


def test_coco_json_that_is_not_utf8_or_has_a_bom_is_named(tmp_path):
    from centerx.data.validation import DatasetError, check_coco_json
    from centerx.text_files import TextFileError

    latin = tmp_path / "latin.json"
    latin.write_bytes(b'{"images": [], "annotations": [], "categories": [{"id": 1, "name": "caf\xe9"}]}')
    with pytest.raises(TextFileError, match=r"COCO json '.*latin.json' is not UTF-8 text: byte 0xe9 at line 1"):
        check_coco_json(str(latin), "mine")
    bom = tmp_path / "bom.json"
    bom.write_bytes(b'\xef\xbb\xbf{"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}')
    with pytest.raises(DatasetError, match="byte-order mark, which pycocotools cannot read"):
        check_coco_json(str(bom), "mine")


def test_check_data_counts_missing_image_files(tiny_shapes, tmp_path, capsys):
    _with_a_missing_image(tiny_shapes, tmp_path, 1, "t_check_missing")
    cli = load_script("data", "check_data")
    assert (
        cli.main(
            ["--config-file", DEMO, "--datasets", "t_check_missing", "--images", "0", "--output", str(tmp_path / "c")]
        )
        == 0
    )
    assert "missing image files: 1 of 8" in capsys.readouterr().out
    assert json.loads((tmp_path / "c" / "t_check_missing" / "stats.json").read_text())["missing_image_files"] == 1


def test_check_data_refuses_a_negative_image_count(capsys):
    """--images -1 drew nothing and said "0 images" as if asked for none."""
    with pytest.raises(SystemExit):
        load_script("data", "check_data").parse_args(["--config-file", DEMO, "--images", "-1"])
    assert "--images must be 0 (statistics only) or more, got -1" in capsys.readouterr().err
