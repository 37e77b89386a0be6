"""A third detector, defined outside centerX in a user's project
(tests/user_project/toy_plugin.py, imported here as ``--import`` imports it),
goes through everything centerX does with its own two: training with
detectron2's trainer and COCO evaluation, a checkpoint that serves as a
Distiller's teacher, and ONNX export matched by onnxruntime; the project's
export format is offered by export.py, and a runtime registered in this file is
built by name. It is docs/extending.md's example: if centerX needed a table
edited elsewhere for a new detector, these tests could not pass. (The project
driven through the shipped commands as subprocesses: tests/config/test_plugins.py.)
"""

import json
import os

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

import centerx
from centerx.deploy import DeployModel
from centerx.deploy.verify import compare_detections
from centerx.plugins import import_modules

from project_scripts import load_script

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(REPO, "configs", "shapes", "centernet_r18_demo.yaml")


# the user's project, imported as every command imports it (--import / IMPORTS)
import_modules([os.path.join(REPO, "tests", "user_project", "toy_plugin.py")])


def toy_cfg(output_dir, dataset, *opts):
    cfg = centerx.add_centerx_config(get_cfg())
    cfg.merge_from_file(DEMO)
    cfg.merge_from_list(
        [
            "MODEL.META_ARCHITECTURE",
            "ToyNet",
            # its box head in float32 under bfloat16, as the CenterNet demo keeps CenterNet's
            "SOLVER.AMP.FP32_MODULES",
            "('heads.wh',)",
            "MODEL.TOYNET.NUM_CLASSES",
            "4",
            "MODEL.CENTERX.CHANNELS_LAST",
            "False",
            "DATASETS.TRAIN",
            f"('{dataset}',)",
            "DATASETS.TEST",
            f"('{dataset}',)",
            "INPUT.TRAIN_SIZE",
            "96",
            "INPUT.MIN_SIZE_TEST",
            "96",
            "INPUT.MAX_SIZE_TEST",
            "96",
            "SOLVER.IMS_PER_BATCH",
            "4",
            "SOLVER.MAX_ITER",
            "20",
            "SOLVER.WARMUP_ITERS",
            "0",
            "SOLVER.STEPS",
            "()",
            "SOLVER.CHECKPOINT_PERIOD",
            "100000",
            "DATALOADER.NUM_WORKERS",
            "0",
            "TEST.VIS_IMAGES",
            "0",
            "TEST.DETECTIONS_PER_IMAGE",
            "20",
            "OUTPUT_DIR",
            str(output_dir),
            "SEED",
            "1",
        ]
    )
    cfg.merge_from_list(list(opts))
    return cfg


@pytest.fixture(scope="module")
def trained_toy(tiny_shapes, tmp_path_factory):
    """ToyNet trained 20 iterations and evaluated by train_net.py: (output dir, metrics records)."""
    import train_net

    name, _ = tiny_shapes
    out = tmp_path_factory.mktemp("toynet")
    cfg = toy_cfg(out, name)
    cfg_file = out / "toy.yaml"
    cfg_file.write_text(cfg.dump())
    # train_net builds its config with add_centerx_config, which adds the keys of every
    # registered detector: importing the module that registers ToyNet is all it takes
    args = train_net.argument_parser().parse_args(["--config-file", str(cfg_file)])
    train_net.main(args)
    with open(out / "metrics.json") as f:
        records = [json.loads(line) for line in f]
    return out, records


@pytest.mark.slow
def test_toy_detector_trains_and_evaluates(trained_toy):
    out, records = trained_toy
    losses = [r["total_loss"] for r in records if "total_loss" in r]
    assert losses and all(np.isfinite(losses)), records
    assert any("bbox/AP" in r for r in records), records[-1]
    assert os.path.isfile(out / "model_final.pth") and os.path.isfile(out / "config.yaml")


@pytest.mark.slow
def test_toy_detector_teaches_a_toy_student(trained_toy, tiny_shapes, tmp_path):
    """A Distiller with a ToyNet student and the trained ToyNet as teacher: its
    loss_kd_t0_heatmap is DISTILL.WEIGHT x HEATMAP_WEIGHT x the mean squared
    difference of the two models' heatmap probabilities, computed here directly."""
    out, _ = trained_toy
    name, _ = tiny_shapes
    cfg = toy_cfg(
        tmp_path,
        name,
        "MODEL.META_ARCHITECTURE",
        "Distiller",
        "MODEL.DISTILL.STUDENT_META_ARCHITECTURE",
        "ToyNet",
        "MODEL.DISTILL.TEACHERS",
        f"[('{out / 'config.yaml'}', '{out / 'model_final.pth'}', ())]",
        "MODEL.DISTILL.WEIGHT",
        "3.0",
        "MODEL.DISTILL.HEATMAP_WEIGHT",
        "0.5",
    )
    distiller = build_model(cfg).train()
    g = torch.Generator().manual_seed(0)
    batch = [
        {
            "image": torch.randint(0, 256, (3, 96, 96), generator=g).float(),
            "instances": Instances(
                (96, 96), gt_boxes=Boxes(torch.tensor([[10.0, 12.0, 50.0, 40.0]])), gt_classes=torch.tensor([1])
            ),
        }
    ]
    losses = distiller(batch)
    assert set(losses) == {"loss_heatmap", "loss_wh", "loss_kd_t0_heatmap"}
    x = (batch[0]["image"][None] - distiller.student.pixel_mean) / distiller.student.pixel_std
    with torch.no_grad():
        s, t = distiller.student.predict(x)["heatmap"], distiller.teachers[0].predict(x)["heatmap"]
    expected = 3.0 * 0.5 * ((torch.sigmoid(s) - torch.sigmoid(t)) ** 2).mean()
    assert losses["loss_kd_t0_heatmap"].item() == pytest.approx(expected.item(), rel=1e-4)


@pytest.mark.slow
def test_toy_detector_exports_to_onnx_and_onnxruntime_agrees(trained_toy, tmp_path):
    """The trained ToyNet's config with non-trivial random weights (many distinct
    peaks), exported raw and decoded; onnxruntime finds the detections PyTorch finds."""
    ort = pytest.importorskip("onnxruntime")
    from centerx.deploy.onnx_export import export_onnx

    from tiny_models import randomize_

    out, _ = trained_toy
    cfg = centerx.add_centerx_config(get_cfg())
    cfg.merge_from_file(str(out / "config.yaml"))
    model = randomize_(build_model(cfg)).eval()
    raw_path, path = str(tmp_path / "raw.onnx"), str(tmp_path / "toy.onnx")
    assert export_onnx(DeployModel(model, raw=True).eval(), raw_path, (96, 96)) == ["heatmap", "wh"]
    assert export_onnx(DeployModel(model).eval(), path, (96, 96)) == ["boxes", "scores", "classes"]
    images = torch.randint(0, 256, (2, 3, 96, 128), generator=torch.Generator().manual_seed(3)).float()
    with torch.no_grad():
        reference = DeployModel(model).eval()(images)
    got = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"images": images.numpy()})
    for i in range(2):
        # detections near the K-th score may swap places with the first one left out
        floor = float(reference["scores"][i, -1]) + 1e-3
        agreement = compare_detections(
            dict(zip(("boxes", "scores", "classes"), (o[i] for o in got))),
            {k: v[i].numpy() for k, v in reference.items()},
            score_floor=floor,
            box_px=0.05,
        )
        assert agreement.total > 5 and agreement.misses == 0, agreement


# --------------------------------------------------------------------------- #
# a new export format and a new runtime, registered here alone
# --------------------------------------------------------------------------- #
from centerx.deploy.runtimes import RUNTIME_REGISTRY, Runtime, build_runtime  # noqa: E402


@RUNTIME_REGISTRY.register()
class ConstantRuntime(Runtime):
    """Always one detection: class 1, score 0.9, the middle half of the letterboxed input."""

    name = "constant"
    model_file = ".txt (ignored)"

    @classmethod
    def from_file(cls, cfg, model_path):
        return cls(cfg)

    def run(self, batch):
        n, _, h, w = batch.shape
        box = np.array([w / 4, h / 4, 3 * w / 4, 3 * h / 4], dtype=np.float32)
        return {
            "boxes": np.tile(box, (n, 1, 1)),
            "scores": np.full((n, 1), 0.9, np.float32),
            "classes": np.ones((n, 1), np.int64),
        }


def test_registered_export_format_is_offered_and_written_by_export_py(tmp_path):
    cli = load_script("speedup", "export")
    argv = [
        "--config-file",
        os.path.join(REPO, "configs", "shapes", "centernet_r18_demo.yaml"),
        "--format",
        "npz-weights",
        "--output",
        str(tmp_path),
        "--allow-random-weights",
        "EXPORT.INPUT_SIZE",
        "(64, 64)",
    ]
    with pytest.raises(SystemExit, match="--fp16 applies to --format tensorrt, not npz-weights"):
        cli.main(argv[:4] + ["--fp16"] + argv[4:])
    assert cli.main(argv) == 0
    archive = np.load(tmp_path / "weights.npz")
    cfg = centerx.get_centerx_cfg()
    cfg.merge_from_file(argv[1])
    assert sorted(archive.files) == sorted(build_model(cfg).state_dict())


def test_registered_runtime_is_built_by_name_and_maps_back_to_image_pixels(tmp_path):
    """The base class letterboxes a 100 x 200 image into the 64 x 64 input at the top
    left (scale 0.32, the image fills rows 0-32), so the runtime's box (16, 16, 48, 48)
    in input pixels is (50, 50, 150, 150) in the image, clipped to its 100 rows."""
    cfg = centerx.get_centerx_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "shapes", "centernet_r18_demo.yaml"))
    cfg.merge_from_list(["EXPORT.INPUT_SIZE", "(64, 64)"])
    runtime = build_runtime("constant", cfg, str(tmp_path / "ignored.txt"))
    with pytest.raises(ValueError, match="needs the exported model file"):
        build_runtime("constant", cfg)
    (det,) = runtime([np.zeros((100, 200, 3), np.uint8)])
    np.testing.assert_allclose(det["boxes"], [[50.0, 50.0, 150.0, 100.0]], atol=1e-4)
    assert det["classes"].tolist() == [1] and det["scores"].tolist() == pytest.approx([0.9])
