"""End-to-end behaviour through detectron2's own machinery: trainer, checkpointer,
evaluator, predictor and train_net.py."""

import json
import os

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

import centerx

from tiny_models import tiny_train_cfg

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(REPO, "configs", "shapes", "centernet_r18_demo.yaml")


def tiny_cfg(output_dir, dataset, **overrides):
    """The shared tiny training run (tiny_models.tiny_train_cfg) at 96 px, batch 4, 4 iterations."""
    return tiny_train_cfg(
        output_dir, dataset, *[x for kv in overrides.items() for x in kv], size=96, batch=4, iters=4, seed=1
    )


def test_unknown_config_key_fails_clearly(tmp_path):
    """A typo in a user's YAML fails with detectron2's usual error naming the key."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(f'_BASE_: "{DEMO}"\nMODEL:\n  CENTERNET:\n    NUM_CLASSES_TYPO: 3\n')
    cfg = centerx.add_centerx_config(get_cfg())
    with pytest.raises(KeyError, match="NUM_CLASSES_TYPO"):
        cfg.merge_from_file(str(bad))


@pytest.mark.slow
def test_overfit_one_batch_loss_drops_10x():
    """Training on one fixed batch (no augmentation) drives the total loss down >= 10x."""
    torch.manual_seed(0)
    cfg = centerx.add_centerx_config(get_cfg())
    cfg.merge_from_file(DEMO)
    model = build_model(cfg)
    model.train()
    boxes = [
        torch.tensor([[8.0, 10.0, 40.0, 36.0], [50.0, 44.0, 90.0, 92.0]]),
        torch.tensor([[20.0, 20.0, 70.0, 60.0]]),
    ]
    classes = [torch.tensor([0, 2]), torch.tensor([3])]
    g = torch.Generator().manual_seed(0)
    batch = []
    for b, c in zip(boxes, classes):
        inst = Instances((96, 96), gt_boxes=Boxes(b), gt_classes=c)
        batch.append({"image": torch.randint(0, 256, (3, 96, 96), generator=g).float(), "instances": inst})
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(60):
        loss = sum(model(batch).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, losses[::10]


@pytest.mark.slow
def test_train_then_evaluate_with_coco_evaluator(tiny_shapes, tmp_path):
    """train_net.py's main trains on generated shapes, evaluates with COCOEvaluator, AP > 0.

    The model is trained and tested on the same 8 images so that a few hundred
    CPU iterations suffice: the point is that boxes come back in original-image
    coordinates through the whole pipeline (mapper, model, evaluator).
    """
    import train_net

    name, _ = tiny_shapes
    args = train_net.argument_parser().parse_args(
        [
            "--config-file",
            DEMO,
            "DATASETS.TRAIN",
            f"('{name}',)",
            "DATASETS.TEST",
            f"('{name}',)",
            "INPUT.TRAIN_SIZE",
            "96",
            "INPUT.MIN_SIZE_TEST",
            "96",
            "INPUT.MAX_SIZE_TEST",
            "96",
            "INPUT.SCALE_RANGE",
            "(0.9, 1.1)",
            "SOLVER.IMS_PER_BATCH",
            "8",
            "SOLVER.MAX_ITER",
            "150",
            "SOLVER.WARMUP_ITERS",
            "10",
            "SOLVER.STEPS",
            "()",
            "SOLVER.CHECKPOINT_PERIOD",
            "100000",
            "DATALOADER.NUM_WORKERS",
            "0",
            "OUTPUT_DIR",
            str(tmp_path),
            "SEED",
            "3",
        ]
    )
    train_net.main(args)
    with open(tmp_path / "metrics.json") as f:
        records = [json.loads(line) for line in f]
    ap = [r["bbox/AP"] for r in records if "bbox/AP" in r]
    assert ap and ap[-1] > 0, records[-1]
    assert os.path.isfile(tmp_path / "model_final.pth")


def test_evaluation_converts_again_when_the_converted_json_is_gone(tmp_path):
    """detectron2's evaluator records the COCO json it converts a dataset to; when
    that file's folder has been deleted (another run's output), the next
    evaluator converts again into its own folder instead of failing. A dataset's
    own json_file is never dropped."""
    from detectron2.data import MetadataCatalog
    from detectron2.structures import BoxMode

    from centerx.engine.evaluation import ReadableImagesCOCOEvaluator

    name = "eval_test_converted_json"
    dicts = [
        {
            "file_name": "x.png",
            "image_id": 7,
            "height": 32,
            "width": 32,
            "annotations": [{"bbox": [2, 3, 10, 12], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0}],
        }
    ]
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: dicts)
        MetadataCatalog.get(name).set(thing_classes=["a"])
    ReadableImagesCOCOEvaluator(name, [7], [], output_dir=str(tmp_path / "a"))
    first = tmp_path / "a" / f"{name}_coco_format.json"
    assert MetadataCatalog.get(name).json_file == str(first) and first.exists()
    first.unlink()
    evaluator = ReadableImagesCOCOEvaluator(name, [7], [], output_dir=str(tmp_path / "b"))
    second = tmp_path / "b" / f"{name}_coco_format.json"
    assert MetadataCatalog.get(name).json_file == str(second) and second.exists()
    assert evaluator._coco_api.getImgIds() == [7]

    own = "eval_test_own_json"
    if own not in DatasetCatalog.list():
        DatasetCatalog.register(own, lambda: dicts)
        MetadataCatalog.get(own).set(thing_classes=["a"], json_file=str(tmp_path / "gone.json"))
    with pytest.raises(FileNotFoundError):
        ReadableImagesCOCOEvaluator(own, [7], [], output_dir=str(tmp_path / "c"))


def test_checkpoint_round_trip_gives_identical_outputs(tiny_shapes, tmp_path):
    """DetectionCheckpointer save -> load into a freshly built model -> same detections."""
    name, _ = tiny_shapes
    cfg = tiny_cfg(tmp_path, name)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():  # make the heads non-trivial so outputs differ between random inits
        for p in model.heads.parameters():
            p.normal_(0, 0.05)
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("ckpt")
    torch.manual_seed(1)
    other = build_model(cfg).eval()
    image = {"image": torch.randint(0, 256, (3, 80, 96)).float(), "height": 160, "width": 192}
    with torch.no_grad():
        before = model([image])[0]["instances"]
        differs = other([image])[0]["instances"]
        DetectionCheckpointer(other).load(str(tmp_path / "ckpt.pth"))
        after = other([image])[0]["instances"]
    assert not torch.equal(before.scores, differs.scores)
    assert torch.equal(before.pred_boxes.tensor, after.pred_boxes.tensor)
    assert torch.equal(before.scores, after.scores)
    assert torch.equal(before.pred_classes, after.pred_classes)


def test_resume_continues_from_saved_iteration(tiny_shapes, tmp_path):
    """--resume picks up the last checkpoint's iteration and weights."""
    from centerx.engine import Trainer

    name, _ = tiny_shapes
    cfg = tiny_cfg(tmp_path, name, **{"SOLVER.MAX_ITER": "3", "TEST.EVALUATOR": "none"})
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    saved = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    assert (tmp_path / "last_checkpoint").read_text().strip() == "model_final.pth"

    cfg2 = tiny_cfg(tmp_path, name, **{"SOLVER.MAX_ITER": "5", "TEST.EVALUATOR": "none"})
    resumed = Trainer(cfg2)
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 3
    for k, v in resumed.model.state_dict().items():
        assert torch.equal(v, saved[k]), k
    resumed.train()
    assert resumed.iter == 5  # detectron2 leaves iter at MAX_ITER after the loop


def test_default_predictor_returns_instances_for_numpy_image(tiny_shapes, tmp_path):
    """detectron2's DefaultPredictor: numpy HxWx3 BGR image in, Instances in its size out.

    Every predicted box is made 16 input pixels square; the 120x200 image is resized
    to 58x96 for the model (longer side 96), so unclipped boxes come back
    16 * 200 / 96 wide and 16 * 120 / 58 high in original pixels.
    """
    name, _ = tiny_shapes
    cfg = tiny_cfg(tmp_path, name, **{"MODEL.CENTERNET.SCORE_THRESH_TEST": "0.0"})
    predictor = DefaultPredictor(cfg)
    with torch.no_grad():
        predictor.model.heads.wh.layers[-1].bias.fill_(4.0)
    image = np.random.default_rng(0).integers(0, 256, (120, 200, 3), dtype=np.uint8)
    out = predictor(image)["instances"]
    assert isinstance(out, Instances)
    assert out.image_size == (120, 200)
    assert 0 < len(out) <= cfg.TEST.DETECTIONS_PER_IMAGE
    boxes = out.pred_boxes.tensor
    inside = (boxes[:, 0] > 0.5) & (boxes[:, 1] > 0.5) & (boxes[:, 2] < 199.5) & (boxes[:, 3] < 119.5)
    assert inside.any()
    w = boxes[inside, 2] - boxes[inside, 0]
    h = boxes[inside, 3] - boxes[inside, 1]
    assert torch.allclose(w, torch.full_like(w, 16 * 200 / 96), atol=1e-3)
    assert torch.allclose(h, torch.full_like(h, 16 * 120 / 58), atol=1e-3)


def test_dataset_registered_from_config_is_loadable(tiny_shapes):
    """DATASETS.COCO_JSON entries become ordinary detectron2 datasets."""
    name, json_file = tiny_shapes
    with open(json_file) as f:
        coco = json.load(f)
    dicts = DatasetCatalog.get(name)
    assert len(dicts) == len(coco["images"])
    assert sum(len(d["annotations"]) for d in dicts) == len(coco["annotations"])


@pytest.mark.parametrize("name", ["ADAM", "ADAMW"])
def test_adam_steps_equal_torch_reference(name):
    """SOLVER.OPTIMIZER ADAM / ADAMW: build_optimizer's (fused) optimizer takes the
    same three steps as torch's per-parameter implementation with the same
    settings, to float rounding."""
    from centerx.engine import build_optimizer

    cfg = centerx.add_centerx_config(get_cfg())
    cfg.merge_from_list(
        [
            "SOLVER.OPTIMIZER",
            name,
            "SOLVER.BASE_LR",
            "0.01",
            "SOLVER.WEIGHT_DECAY",
            "0.01",
            "SOLVER.WEIGHT_DECAY_NORM",
            "0.01",
        ]
    )
    torch.manual_seed(0)

    # no bias right before the BatchNorm: its gradient is rounding noise, which Adam scales up to lr-sized steps
    def net():
        return torch.nn.Sequential(
            torch.nn.Conv2d(3, 4, 3, bias=False), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1)
        )

    a, b = net(), net()
    b.load_state_dict(a.state_dict())
    opt_a = build_optimizer(cfg, a)
    assert all(g.get("fused") for g in opt_a.param_groups)
    reference = {"ADAM": torch.optim.Adam, "ADAMW": torch.optim.AdamW}[name]
    opt_b = reference(b.parameters(), lr=0.01, weight_decay=0.01, foreach=False)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    for _ in range(3):
        for model, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["SGD", "ADAM"])
def test_full_model_gradient_clipping_scales_all_gradients_by_one_factor(name):
    """SOLVER.CLIP_GRADIENTS.CLIP_TYPE full_model: gradients 3 on a 2x2 weight and 4 on
    a bias of 2 have joint norm sqrt(4 * 9 + 2 * 16) = sqrt(68); clipped to 1 every
    gradient is divided by sqrt(68), across both parameter groups (the bias has 2x
    lr). detectron2's per-parameter "norm" would divide the weight's by 6 and the
    bias's by sqrt(32) instead. SGD at lr 1 without momentum then moves each
    parameter by its lr times its clipped gradient."""
    from centerx.engine import build_optimizer

    cfg = centerx.add_centerx_config(get_cfg())
    cfg.merge_from_list(
        [
            "SOLVER.OPTIMIZER",
            name,
            "SOLVER.BASE_LR",
            "1.0",
            "SOLVER.MOMENTUM",
            "0.0",
            "SOLVER.WEIGHT_DECAY",
            "0.0",
            "SOLVER.BIAS_LR_FACTOR",
            "2.0",
            "SOLVER.CLIP_GRADIENTS.ENABLED",
            "True",
            "SOLVER.CLIP_GRADIENTS.CLIP_TYPE",
            "full_model",
            "SOLVER.CLIP_GRADIENTS.CLIP_VALUE",
            "1.0",
        ]
    )
    model = torch.nn.Linear(2, 2)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = build_optimizer(cfg, model)
    assert len(optimizer.param_groups) == 2
    model.weight.grad = torch.full((2, 2), 3.0)
    model.bias.grad = torch.full((2,), 4.0)
    optimizer.step()
    scale = 1 / 68**0.5
    torch.testing.assert_close(model.weight.grad, torch.full((2, 2), 3.0 * scale))
    torch.testing.assert_close(model.bias.grad, torch.full((2,), 4.0 * scale))
    if name == "SGD":
        torch.testing.assert_close(model.weight.detach(), before[0] - 3.0 * scale)
        torch.testing.assert_close(model.bias.detach(), before[1] - 2.0 * 4.0 * scale)

    cfg.merge_from_list(["SOLVER.CLIP_GRADIENTS.CLIP_VALUE", "100.0"])
    optimizer = build_optimizer(cfg, model)
    model.weight.grad = torch.full((2, 2), 3.0)
    optimizer.step()
    torch.testing.assert_close(model.weight.grad, torch.full((2, 2), 3.0))


def test_full_model_gradient_clipping_sees_unscaled_gradients_under_grad_scaler(monkeypatch):
    """Under float16 AMP, GradScaler multiplies the loss by its scale (1024 here) and
    would hand a fused Adam the scaled gradients; the full-model clip must measure
    the true ones: a gradient 3 on 4 weights and 4 on 2 biases has norm sqrt(68)."""
    from centerx.engine import build_optimizer

    cfg = centerx.add_centerx_config(get_cfg())
    cfg.merge_from_list(
        [
            "SOLVER.OPTIMIZER",
            "ADAM",
            "SOLVER.CLIP_GRADIENTS.ENABLED",
            "True",
            "SOLVER.CLIP_GRADIENTS.CLIP_TYPE",
            "full_model",
            "SOLVER.CLIP_GRADIENTS.CLIP_VALUE",
            "1.0",
        ]
    )
    model = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(cfg, model)
    seen = []
    clip = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda params, *a: seen.append(clip(params, *a)))
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    loss = (model.weight * 3.0).sum() + (model.bias * 4.0).sum()
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    assert len(seen) == 1
    torch.testing.assert_close(seen[0], torch.tensor(68**0.5))


def test_bad_gradient_clipping_settings_are_named():
    from centerx.engine import build_optimizer

    cfg = centerx.add_centerx_config(get_cfg())
    cfg.merge_from_list(["SOLVER.CLIP_GRADIENTS.ENABLED", "True", "SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "global"])
    with pytest.raises(ValueError, match="SOLVER.CLIP_GRADIENTS.CLIP_TYPE='global' is not one of"):
        build_optimizer(cfg, torch.nn.Linear(2, 2))
    cfg.merge_from_list(["SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "full_model", "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", "0.0"])
    with pytest.raises(ValueError, match="CLIP_VALUE must be positive"):
        build_optimizer(cfg, torch.nn.Linear(2, 2))
