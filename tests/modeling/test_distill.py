"""Multi-teacher distillation (docs/distillation.md): losses, the Distiller wrapper, class
mapping, validation, checkpoints and label-free training.

Expected loss values are recomputed here in numpy from the same output maps
(sigmoid, 3x3 local maxima by explicit neighbourhood comparison, weighted sums)
or worked out by hand for constructed maps.
"""

import os

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog, get_detection_dataset_dicts
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

import centerx
from centerx.data.datasets import generate_shapes
from centerx.engine import Trainer, build_optimizer
from centerx.modeling.losses.distillation import (
    centernet_distillation_losses,
    heatmap_distillation_loss,
    quality_focal_distillation_loss,
    ttfnet_distillation_losses,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CENTERNET_DEMO = os.path.join(REPO, "configs", "shapes", "centernet_r18_demo.yaml")
TTFNET_DEMO = os.path.join(REPO, "configs", "shapes", "ttfnet_r18_demo.yaml")
SMALL = {
    "CenterNet": ["MODEL.CENTERNET.UPSAMPLE_CHANNELS", "[32, 16, 16]", "MODEL.CENTERNET.HEAD_CHANNELS", "16"],
    "TTFNet": [
        "MODEL.TTFNET.UPSAMPLE_CHANNELS",
        "[32, 16, 16]",
        "MODEL.TTFNET.HEATMAP_HEAD_CHANNELS",
        "16",
        "MODEL.TTFNET.BOX_HEAD_CHANNELS",
        "16",
    ],
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", autouse=True)
def class_split_datasets():
    """Metadata-only datasets naming the classes of two class-split teachers."""
    for name, classes in (
        ("kd_test_pair_a", ["rectangle", "circle"]),
        ("kd_test_pair_b", ["cross", "ellipse", "triangle"]),
    ):
        if name not in DatasetCatalog.list():
            DatasetCatalog.register(name, list)
            MetadataCatalog.get(name).set(thing_classes=classes)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_peak_weight(heat_logits):
    """max over classes of sigmoid heat where it equals its 3x3 neighbourhood max (numpy loops)."""
    p = sigmoid(heat_logits.astype(np.float64))
    B, C, H, W = p.shape
    w = np.zeros((B, H, W))
    for b in range(B):
        for c in range(C):
            for y in range(H):
                for x in range(W):
                    window = p[b, c, max(0, y - 1) : y + 2, max(0, x - 1) : x + 2]
                    if p[b, c, y, x] >= window.max():
                        w[b, y, x] = max(w[b, y, x], p[b, c, y, x])
    return w


def plain_cfg(arch="CenterNet", *opts):
    cfg = centerx.add_centerx_config(get_cfg())
    cfg.merge_from_file(CENTERNET_DEMO if arch == "CenterNet" else TTFNET_DEMO)
    cfg.merge_from_list(
        SMALL[arch]
        + ["INPUT.TRAIN_SIZE", "64", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64", "SEED", "1"]
        + list(opts)
    )
    return cfg


def perturb_heads(model, seed, std=0.05):
    """Make a freshly initialised model's outputs non-trivial (and different per seed)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.heads.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)


def save_teacher(tmp_path, tag, cfg, seed=0):
    """Build, perturb and save a teacher; returns (config file, weights file, model)."""
    torch.manual_seed(seed)
    model = build_model(cfg)
    perturb_heads(model, seed)
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save(tag)
    config_file = tmp_path / f"{tag}.yaml"
    config_file.write_text(cfg.dump())
    return str(config_file), str(tmp_path / f"{tag}.pth"), model


def distill_cfg(teachers, arch="CenterNet", *opts):
    cfg = plain_cfg(
        arch, "MODEL.META_ARCHITECTURE", "Distiller", "MODEL.DISTILL.STUDENT_META_ARCHITECTURE", arch, *opts
    )
    cfg.MODEL.DISTILL.TEACHERS = [tuple(t) for t in teachers]
    return cfg


def batch(n=2, size=64, seed=0, labeled=True):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        inst = Instances(
            (size, size),
            gt_boxes=Boxes(torch.tensor([[4.0 + i, 6.0, 40.0, 30.0 + i]])),
            gt_classes=torch.tensor([i % 4]),
        )
        out.append({"image": torch.randint(0, 256, (3, size, size), generator=g).float(), "instances": inst})
    return out


def bn_eval(model):
    """Batch norm in eval mode, so a student computes exactly what an identical teacher does."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


# --------------------------------------------------------------------------- #
# loss functions against independent numbers
# --------------------------------------------------------------------------- #
def test_heatmap_loss_is_mse_of_probabilities():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 3, 5, 6, generator=g) * 3, torch.randn(2, 3, 5, 6, generator=g) * 3
    expected = np.mean((sigmoid(s.numpy().astype(np.float64)) - sigmoid(t.numpy().astype(np.float64))) ** 2)
    assert heatmap_distillation_loss(s, t).item() == pytest.approx(expected, rel=1e-5)
    assert heatmap_distillation_loss(t, t).item() == 0.0


def test_quality_focal_heatmap_loss_against_numpy():
    """sum of |t - p|^2 * BCE(p, t) over cells / max(1, teacher peak mass), in float64
    numpy with the peaks found by loops; 0 for equal maps; a teacher with no
    confident peak divides by 1."""
    g = torch.Generator().manual_seed(4)
    s, t = torch.randn(2, 3, 5, 6, generator=g) * 3, torch.randn(2, 3, 5, 6, generator=g) * 3
    p, q = sigmoid(s.numpy().astype(np.float64)), sigmoid(t.numpy().astype(np.float64))
    bce = -(q * np.log(p) + (1 - q) * np.log(1 - p))
    mass = np_peak_weight(t.numpy()).sum()
    assert mass > 1.0
    expected = (np.abs(q - p) ** 2 * bce).sum() / mass
    assert quality_focal_distillation_loss(s, t).item() == pytest.approx(expected, rel=1e-5)
    assert quality_focal_distillation_loss(t, t).item() == 0.0
    faint = torch.full((1, 1, 4, 4), -8.0)  # peak mass 16 * sigmoid(-8) < 1
    q = sigmoid(-8.0)
    p = sigmoid(s[:1, :1, :4, :4].numpy().astype(np.float64))
    expected = (np.abs(q - p) ** 2 * -(q * np.log(p) + (1 - q) * np.log(1 - p))).sum()
    assert quality_focal_distillation_loss(s[:1, :1, :4, :4], faint).item() == pytest.approx(expected, rel=1e-5)


def test_centernet_size_offset_losses_are_weighted_by_teacher_peaks():
    """sum_cells w |s - t| / sum w with w from the numpy peak reference; zero for
    equal maps and linear in the student's deviation."""
    g = torch.Generator().manual_seed(1)
    heat = torch.full((2, 2, 8, 8), -6.0)
    heat[0, 0, 2, 3], heat[0, 0, 2, 4] = 2.0, 1.0  # a peak and a lower neighbour (no peak)
    heat[0, 1, 2, 3] = 3.0  # the same cell peaks higher in class 1
    heat[1, 1, 6, 1] = 0.0
    heat += torch.rand(heat.shape, generator=g) * 0.5
    teacher = {
        "heatmap": heat,
        "wh": torch.rand(2, 2, 8, 8, generator=g) * 5,
        "offset": torch.rand(2, 2, 8, 8, generator=g),
    }
    delta = torch.randn(2, 2, 8, 8, generator=g)
    w = np_peak_weight(heat.numpy())
    for k in (0.0, 1.0, 2.0):
        student = {"heatmap": heat, "wh": teacher["wh"] + k * delta, "offset": teacher["offset"] - k * delta}
        out = centernet_distillation_losses(student, teacher)
        expected = (w[:, None] * np.abs(k * delta.numpy())).sum() / w.sum()
        assert out["wh"].item() == pytest.approx(expected, rel=1e-5, abs=1e-12)
        assert out["offset"].item() == pytest.approx(expected, rel=1e-5, abs=1e-12)
        assert out["heatmap"].item() == 0.0


def test_ttfnet_box_loss_is_giou_at_teacher_peaks():
    """One teacher box (8x8 px around cell (2, 2), stride 4); the student's box is
    twice as wide to the right: IoU 64/128, enclosure = union, loss 1 - 0.5.
    Cells where the teacher box is empty carry no weight."""
    heat = torch.full((1, 1, 5, 5), -4.0)
    heat[0, 0, 2, 2] = 1.0
    t_ltrb = torch.zeros(1, 4, 5, 5)
    t_ltrb[0, :, 2, 2] = torch.tensor([4.0, 4.0, 4.0, 4.0])
    s_ltrb = t_ltrb.clone()
    s_ltrb[0, :, 2, 2] = torch.tensor([4.0, 4.0, 12.0, 4.0])
    s_ltrb[0, :, 0, 0] = 50.0  # a background cell: the teacher's box there is empty
    teacher = {"heatmap": heat, "ltrb": t_ltrb}
    out = ttfnet_distillation_losses({"heatmap": heat, "ltrb": s_ltrb}, teacher, 4)
    assert out["box"].item() == pytest.approx(0.5, rel=1e-6)
    assert ttfnet_distillation_losses(teacher, teacher, 4)["box"].item() == 0.0


# --------------------------------------------------------------------------- #
# the wrapper
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("arch", ["CenterNet", "TTFNet"])
def test_losses_vanish_for_identical_student_and_grow_with_divergence(tmp_path, arch):
    teacher = save_teacher(tmp_path, "t", plain_cfg(arch))
    model = build_model(distill_cfg([teacher[:2] + ((),)], arch))
    DetectionCheckpointer(model).load(teacher[1])  # the student starts as the teacher
    model.train()
    bn_eval(model.student)
    data = batch()
    base = {k: p.clone() for k, p in model.student.heads.named_parameters()}
    noise = {k: torch.randn(p.shape, generator=torch.Generator().manual_seed(3)) for k, p in base.items()}
    history = []
    for eps in (0.0, 0.005, 0.02, 0.08):
        with torch.no_grad():
            for k, p in model.student.heads.named_parameters():
                p.copy_(base[k] + eps * noise[k])
            history.append({k: v.item() for k, v in model(data).items() if k.startswith("loss_kd")})
    heads = {"CenterNet": ["heatmap", "wh", "offset"], "TTFNet": ["heatmap", "box"]}[arch]
    assert sorted(history[0]) == sorted(f"loss_kd_t0_{h}" for h in heads)
    assert all(v == pytest.approx(0.0, abs=1e-7) for v in history[0].values()), history[0]
    for name in history[0]:
        values = [h[name] for h in history]
        assert all(a < b for a, b in zip(values, values[1:])), (name, values)


@pytest.mark.parametrize("arch", ["CenterNet", "TTFNet"])
def test_losses_stay_fp32_under_autocast(tmp_path, arch):
    """Mixed precision (what AMPTrainer wraps the forward in): student and
    teacher convolutions run in FP16, every loss, the KD terms included, comes
    out finite in FP32 and close to the FP32 forward's."""
    teacher = save_teacher(tmp_path, "t", plain_cfg(arch))
    model = build_model(distill_cfg([teacher[:2] + ((),)], arch)).train()
    perturb_heads(model.student, seed=5)
    data = batch()
    reference = model(data)
    with torch.autocast("cpu", dtype=torch.float16):
        losses = model(data)
    assert sorted(losses) == sorted(reference) and any(k.startswith("loss_kd") for k in losses)
    for k, v in losses.items():
        assert v.dtype == torch.float32 and torch.isfinite(v), k
        assert torch.isclose(v, reference[k], rtol=5e-2, atol=1e-3), (k, float(v), float(reference[k]))


def test_heatmap_loss_key_replaces_the_students_heatmap_term(tmp_path):
    """MODEL.DISTILL.HEATMAP_LOSS "quality_focal": loss_kd_t0_heatmap is that
    function of the taught channels times WEIGHT * HEATMAP_WEIGHT; the other
    terms stay the student's; an unknown name is refused before teachers load."""
    teacher = save_teacher(tmp_path, "t", plain_cfg("TTFNet"))
    plain = build_model(distill_cfg([teacher[:2] + ((),)], "TTFNet")).train()
    focal = build_model(
        distill_cfg(
            [teacher[:2] + ((),)],
            "TTFNet",
            "MODEL.DISTILL.HEATMAP_LOSS",
            "quality_focal",
            "MODEL.DISTILL.HEATMAP_WEIGHT",
            "0.5",
        )
    ).train()
    focal.student.load_state_dict(plain.student.state_dict())
    perturb_heads(plain.student, seed=3)
    perturb_heads(focal.student, seed=3)
    data = batch()
    images = focal.student.preprocess_image(data).tensor
    outputs = focal.student.predict(images)
    losses = focal.distillation_losses(outputs, data, images)
    expected = quality_focal_distillation_loss(outputs["heatmap"], focal.teachers[0].predict(images)["heatmap"])
    assert float(losses["loss_kd_t0_heatmap"]) == pytest.approx(float(expected) * 10.0 * 0.5, rel=1e-5)
    reference = plain.distillation_losses(plain.student.predict(images), data, images)
    assert float(losses["loss_kd_t0_box"]) == pytest.approx(float(reference["loss_kd_t0_box"]), rel=1e-5)
    assert float(losses["loss_kd_t0_heatmap"]) != pytest.approx(float(reference["loss_kd_t0_heatmap"]) * 0.5)
    with pytest.raises(ValueError, match="HEATMAP_LOSS='kl'"):
        build_model(distill_cfg([teacher[:2] + ((),)], "TTFNet", "MODEL.DISTILL.HEATMAP_LOSS", "kl"))


def test_gradients_reach_only_the_student_and_teachers_stay_bit_identical(tmp_path):
    t_cfg, t_pth, _ = save_teacher(tmp_path, "t", plain_cfg())
    cfg = distill_cfg([(t_cfg, t_pth, ())], "CenterNet", "SOLVER.BASE_LR", "0.01")
    model = build_model(cfg)
    model.train()
    assert not any(t.training for t in model.teachers.modules())
    optimizer = build_optimizer(cfg, model)
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert in_optimizer == {id(p) for p in model.student.parameters()}
    before_teacher = {k: v.clone() for k, v in model.teachers.state_dict().items()}
    before_student = {k: v.clone() for k, v in model.student.state_dict().items()}
    for step in range(3):
        losses = model(batch(seed=step))
        optimizer.zero_grad()
        sum(losses.values()).backward()
        assert all(p.grad is None for p in model.teachers.parameters())
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.student.heads.parameters())
        optimizer.step()
    after_teacher = model.teachers.state_dict()
    assert all(torch.equal(v, after_teacher[k]) for k, v in before_teacher.items())
    assert any(not torch.equal(v, model.student.state_dict()[k]) for k, v in before_student.items())


def test_class_names_come_from_the_config_and_no_dataset_is_loaded(tmp_path):
    """MODEL.CENTERX.CLASS_NAMES name a model's classes where its datasets' metadata
    has none (a COCO json not read yet); building the Distiller reads metadata only
    and loads no dataset (this one's loader raises)."""

    def refuse():
        raise AssertionError("a dataset was loaded while building the model")

    if "kd_test_unloadable" not in DatasetCatalog.list():
        DatasetCatalog.register("kd_test_unloadable", refuse)
    unloadable = ["DATASETS.TEST", "('kd_test_unloadable',)", "DATASETS.TRAIN", "('kd_test_unloadable',)"]
    student_names = ["MODEL.CENTERX.CLASS_NAMES", "('circle', 'rectangle', 'triangle', 'cross')"]
    named = save_teacher(
        tmp_path,
        "named",
        plain_cfg(
            "CenterNet",
            "MODEL.CENTERNET.NUM_CLASSES",
            "2",
            "MODEL.CENTERX.CLASS_NAMES",
            "('cross', 'circle')",
            *unloadable,
        ),
    )
    model = build_model(
        distill_cfg([(named[0], named[1], ("circle", "cross"))], "CenterNet", *unloadable, *student_names)
    )
    assert [(link.student_classes, link.teacher_channels) for link in model.links] == [((0, 3), (1, 0))]

    nameless = save_teacher(
        tmp_path, "nameless", plain_cfg("CenterNet", "MODEL.CENTERNET.NUM_CLASSES", "2", *unloadable)
    )
    with pytest.raises(ValueError, match=r"teacher's config sets no MODEL.CENTERX.CLASS_NAMES"):
        build_model(
            distill_cfg([(nameless[0], nameless[1], ("circle", "cross"))], "CenterNet", *unloadable, *student_names)
        )
    miscounted = save_teacher(
        tmp_path,
        "miscounted",
        plain_cfg("CenterNet", "MODEL.CENTERNET.NUM_CLASSES", "2", "MODEL.CENTERX.CLASS_NAMES", "('a', 'b', 'c')"),
    )
    with pytest.raises(ValueError, match=r"teacher's class names \['a', 'b', 'c'\] number 3 while its model has 2"):
        build_model(distill_cfg([(miscounted[0], miscounted[1], ("a",))], "CenterNet", *student_names))
    model = build_model(distill_cfg([(nameless[0], nameless[1], (0, 3))], "CenterNet", *unloadable))
    assert [(link.student_classes, link.teacher_channels) for link in model.links] == [((0, 3), (0, 1))]


def test_class_names_map_two_teachers_onto_one_student(tmp_path):
    """Teacher a (classes rectangle, circle) teaches circle and rectangle; teacher b
    (cross, ellipse, triangle) teaches triangle and cross; the student has the
    shapes classes. Each teacher's heatmap loss uses exactly its channel pairs."""
    a_cfg = plain_cfg("CenterNet", "MODEL.CENTERNET.NUM_CLASSES", "2", "DATASETS.TEST", "('kd_test_pair_a',)")
    b_cfg = plain_cfg("CenterNet", "MODEL.CENTERNET.NUM_CLASSES", "3", "DATASETS.TEST", "('kd_test_pair_b',)")
    a = save_teacher(tmp_path, "a", a_cfg, seed=1)
    b = save_teacher(tmp_path, "b", b_cfg, seed=2)
    model = build_model(distill_cfg([(a[0], a[1], ("circle", "rectangle")), (b[0], b[1], ("triangle", "cross"))]))
    links = [(link.student_classes, link.teacher_channels) for link in model.links]
    assert links == [((0, 1), (1, 0)), ((2, 3), (2, 0))]

    model.train()
    data = batch()
    images = model.student.preprocess_image(data).tensor
    outputs = model.student.predict(images)
    losses = model.distillation_losses(outputs, data, images)
    s = outputs["heatmap"].detach().numpy().astype(np.float64)
    pairs_of = {"t0": [(0, 1), (1, 0)], "t1": [(2, 2), (3, 0)]}  # (student class, teacher channel)
    for (tag, pairs), teacher in zip(pairs_of.items(), model.teachers):
        t = teacher.predict(images)["heatmap"].detach().numpy().astype(np.float64)
        expected = np.mean([(sigmoid(s[:, i]) - sigmoid(t[:, j])) ** 2 for i, j in pairs]) * 10.0
        assert losses[f"loss_kd_{tag}_heatmap"].item() == pytest.approx(expected, rel=1e-5)

    idx = build_model(distill_cfg([(a[0], a[1], (3, 1))]))
    assert (idx.links[0].student_classes, idx.links[0].teacher_channels) == ((3, 1), (0, 1))


def test_teacher_with_other_channel_order_and_normalisation_is_fed_its_own_input(tmp_path):
    """A BGR teacher with mean/std reversed and std doubled, whose first conv is the
    student's with input channels reversed and doubled, computes the student's
    function: with its own input the distillation losses vanish."""
    s_cfg = plain_cfg()
    mean, std = list(s_cfg.MODEL.PIXEL_MEAN), list(s_cfg.MODEL.PIXEL_STD)
    t_cfg = plain_cfg(
        "CenterNet",
        "INPUT.FORMAT",
        "BGR",
        "MODEL.PIXEL_MEAN",
        str(mean[::-1]),
        "MODEL.PIXEL_STD",
        str([2 * v for v in std[::-1]]),
    )
    torch.manual_seed(0)
    student = build_model(s_cfg)
    perturb_heads(student, 0)
    DetectionCheckpointer(student, save_dir=str(tmp_path)).save("student")
    teacher = build_model(t_cfg)
    state = student.state_dict()
    state["backbone.conv1.weight"] = state["backbone.conv1.weight"].flip(1) * 2.0
    teacher.load_state_dict(state)
    DetectionCheckpointer(teacher, save_dir=str(tmp_path)).save("teacher")
    (tmp_path / "teacher.yaml").write_text(t_cfg.dump())

    model = build_model(distill_cfg([(str(tmp_path / "teacher.yaml"), str(tmp_path / "teacher.pth"), ())]))
    DetectionCheckpointer(model).load(str(tmp_path / "student.pth"))
    assert model.links[0].swap_channels and model.links[0].own_normalization
    model.train()
    bn_eval(model.student)
    data = batch()
    losses = model(data)
    assert all(v.item() == pytest.approx(0.0, abs=1e-6) for k, v in losses.items() if k.startswith("loss_kd"))
    with torch.no_grad():  # fed the student's tensor instead, the teacher sees another image
        images = model.student.preprocess_image(data).tensor
        wrong = model.teachers[0].predict(images)["heatmap"]
        right = model.student.predict(images)["heatmap"]
    assert (torch.sigmoid(wrong) - torch.sigmoid(right)).abs().max() > 1e-3


@pytest.fixture(scope="module")
def teacher_files(tmp_path_factory):
    """(config, weights) of teachers that cannot teach the 4-class CenterNet student, by name."""
    tmp_path = tmp_path_factory.mktemp("teachers")
    files = {
        "a": save_teacher(
            tmp_path,
            "a",
            plain_cfg("CenterNet", "MODEL.CENTERNET.NUM_CLASSES", "2", "DATASETS.TEST", "('kd_test_pair_a',)"),
        ),
        "b": save_teacher(
            tmp_path,
            "b",
            plain_cfg("CenterNet", "MODEL.CENTERNET.NUM_CLASSES", "3", "DATASETS.TEST", "('kd_test_pair_b',)"),
        ),
        "stride8": save_teacher(
            tmp_path, "s8", plain_cfg("CenterNet", "MODEL.CENTERNET.UPSAMPLE_CHANNELS", "[32, 16]")
        ),
        "yuv": save_teacher(tmp_path, "yuv", plain_cfg("CenterNet", "INPUT.FORMAT", "YUV-BT.601")),
        "ttf": save_teacher(tmp_path, "ttf", plain_cfg("TTFNet")),
    }
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(plain_cfg("CenterNet", "MODEL.CENTERNET.NUM_CLASSES", "5").dump())
    files["wrong_weights"] = (str(wrong), files["a"][1])
    files["missing_weights"] = (files["a"][0], str(tmp_path / "missing.pth"))
    files["missing_config"] = (str(tmp_path / "missing.yaml"), files["a"][1])
    misspelt = tmp_path / "misspelt.yaml"
    misspelt.write_text(f'_BASE_: "{files["a"][0]}"\nMODEL:\n  CENTERNET:\n    NUM_CLASES: 3\n')
    files["misspelt_key"] = (str(misspelt), files["a"][1])
    return files


@pytest.mark.parametrize(
    "teachers,match",
    [
        ([("b", ("ellipse",))], "teaches class 'ellipse', which the student does not have"),
        (
            [("a", ("circle",)), ("a", ("circle", "rectangle"))],
            r"TEACHERS\[0\] and \[1\] both teach student class 'circle'",
        ),
        ([("a", (0, 9))], r"indices \[9\]"),
        ([("a", ("circle", 1))], "all names or all"),
        ([("a", ("circle", "circle"))], "twice"),
        ([("b", ())], "teaches class 'ellipse'"),
        ([("yuv", ())], "INPUT.FORMAT 'YUV-BT.601'"),
        ([("stride8", ())], "output stride 8 differs from the student's 4"),
        ([("ttf", ())], "the teacher is a TTFNet, the student a CenterNet"),
        ([("missing_weights", ())], "weights file .*missing.pth' does not exist"),
        ([("missing_config", ())], "config file .*missing.yaml' does not exist"),
        ([("wrong_weights", ())], "do not fit this model's config"),
        (
            [("misspelt_key", ())],
            r"TEACHERS\[0\] .*misspelt.yaml'\): MODEL.CENTERNET.NUM_CLASES \(set in .*misspelt.yaml or a _BASE_ it "
            r"names\) is not a config key; did you mean MODEL.CENTERNET.NUM_CLASSES",
        ),
    ],
    ids=[
        "unknown-class",
        "class-taught-twice",
        "index-out-of-range",
        "names-and-indices",
        "class-listed-twice",
        "all-teacher-classes-unknown",
        "input-format",
        "output-stride",
        "meta-architecture",
        "missing-weights",
        "missing-config",
        "weights-of-another-model",
        "misspelt-config-key",
    ],
)
def test_invalid_teacher_is_refused_with_the_reason(teacher_files, teachers, match):
    entries = [(*teacher_files[name][:2], classes) for name, classes in teachers]
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        build_model(distill_cfg(entries))


def test_image_folder_datasets_mix_with_labelled_ones_and_are_checked(tmp_path):
    """Folder images join a labelled dataset in detectron2's loader, flagged as
    unlabelled; a Distiller refuses to train on them with empty-annotation
    filtering on, or with labels when no training dataset has any."""
    json_file = generate_shapes(str(tmp_path), "lab", num_images=3, seed=5, min_size=64, max_size=64)
    generate_shapes(str(tmp_path), "unlab", num_images=4, seed=6, min_size=64, max_size=64)
    centerx.register_coco_json_datasets([("kd_test_lab", json_file, str(tmp_path / "lab"))])
    t = save_teacher(tmp_path, "t", plain_cfg())
    folders = f"[('kd_test_unlab', '{tmp_path / 'unlab'}')]"
    with pytest.raises(ValueError, match="FILTER_EMPTY_ANNOTATIONS"):
        build_model(
            distill_cfg(
                [t[:2] + ((),)],
                "CenterNet",
                "DATASETS.IMAGE_FOLDERS",
                folders,
                "DATASETS.TRAIN",
                "('kd_test_lab', 'kd_test_unlab')",
            )
        )
    with pytest.raises(ValueError, match="USE_LABELS False"):
        build_model(
            distill_cfg(
                [t[:2] + ((),)],
                "CenterNet",
                "DATASETS.IMAGE_FOLDERS",
                folders,
                "DATASETS.TRAIN",
                "('kd_test_unlab',)",
                "DATALOADER.FILTER_EMPTY_ANNOTATIONS",
                "False",
            )
        )
    cfg = distill_cfg(
        [t[:2] + ((),)],
        "CenterNet",
        "DATASETS.IMAGE_FOLDERS",
        folders,
        "DATASETS.TRAIN",
        "('kd_test_lab', 'kd_test_unlab')",
        "DATALOADER.FILTER_EMPTY_ANNOTATIONS",
        "False",
    )
    build_model(cfg)
    assert "kd_test_unlab" not in DatasetCatalog.list()  # building the model registers no dataset
    centerx.register_config_datasets(cfg)  # as train_net does
    dicts = get_detection_dataset_dicts(["kd_test_lab", "kd_test_unlab"], filter_empty=False)
    assert len(dicts) == 7
    assert [d.get("unlabeled", False) for d in dicts] == [False] * 3 + [True] * 4


def test_student_losses_use_only_labelled_images(tmp_path):
    """With labels, an image-folder image in the batch adds no student loss: the
    student's terms equal those of the labelled image alone; a batch without
    labelled images gives the same terms at 0."""
    t = save_teacher(tmp_path, "t", plain_cfg())
    model = build_model(distill_cfg([t[:2] + ((),)]))
    model.train()
    bn_eval(model.student)
    data = batch(2)
    data[1]["unlabeled"] = True
    images = model.student.preprocess_image(data).tensor
    outputs = model.student.predict(images)
    got = model.student_losses(outputs, data)
    alone = model.student.losses({k: v[:1] for k, v in outputs.items()}, [data[0]["instances"]])
    assert {k: v.item() for k, v in got.items()} == pytest.approx({k: v.item() for k, v in alone.items()})
    data[0]["unlabeled"] = True
    none = model.student_losses(outputs, data)
    assert sorted(none) == sorted(alone) and all(v.item() == 0.0 for v in none.values())


# --------------------------------------------------------------------------- #
# training through detectron2's trainer
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def label_free_run(tmp_path_factory):
    """Label-free distillation on a folder of images (no annotations) with
    centerX's Trainer: 25 iterations, fixed augmentation, one perturbed teacher."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("label_free")
    generate_shapes(str(root), "images", num_images=4, seed=11, min_size=64, max_size=64)
    teacher = save_teacher(root, "teacher", plain_cfg())
    cfg = distill_cfg(
        [teacher[:2] + ((0, 1, 2, 3),)],
        "CenterNet",
        "MODEL.DISTILL.USE_LABELS",
        "False",
        "DATASETS.IMAGE_FOLDERS",
        f"[('kd_test_images', '{root / 'images'}')]",
        "DATASETS.TRAIN",
        "('kd_test_images',)",
        "DATALOADER.FILTER_EMPTY_ANNOTATIONS",
        "False",
        "DATALOADER.NUM_WORKERS",
        "0",
        "INPUT.SCALE_RANGE",
        "(1.0, 1.0)",
        "INPUT.HFLIP_PROB",
        "0.0",
        "INPUT.COLOR_JITTER",
        "0.0",
        "SOLVER.IMS_PER_BATCH",
        "2",
        "SOLVER.BASE_LR",
        "0.002",
        "SOLVER.MAX_ITER",
        "25",
        "SOLVER.WARMUP_ITERS",
        "0",
        "SOLVER.STEPS",
        "()",
        "SOLVER.CHECKPOINT_PERIOD",
        "100000",
        "DATASETS.TEST",
        "()",
        "MODEL.CENTERNET.SCORE_THRESH_TEST",
        "0.0",
        "OUTPUT_DIR",
        str(root / "out"),
    )
    centerx.register_config_datasets(cfg)
    torch.manual_seed(0)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    torch.set_num_threads(threads)
    return root, trainer


def test_label_free_training_on_an_image_folder_lowers_the_loss(label_free_run):
    _, trainer = label_free_run
    history = trainer.storage.histories()
    assert sorted(k for k in history if k.startswith("loss")) == [
        "loss_kd_t0_heatmap",
        "loss_kd_t0_offset",
        "loss_kd_t0_wh",
    ]
    total = [v for v, _ in history["total_loss"].values()]
    assert len(total) == 25
    assert np.mean(total[-5:]) < 0.5 * np.mean(total[:5]), total


def test_distilled_checkpoint_loads_into_the_plain_student_config(label_free_run):
    """model_final.pth holds exactly the student's keys; the plain student config
    loads it with nothing missing or left over and computes what the Distiller
    does: the same raw maps, top-K decode and detections."""
    root, trainer = label_free_run
    ckpt = torch.load(root / "out" / "model_final.pth", map_location="cpu", weights_only=False)
    plain = build_model(plain_cfg("CenterNet", "MODEL.CENTERNET.SCORE_THRESH_TEST", "0.0")).eval()
    assert set(ckpt["model"]) == set(plain.state_dict())
    DetectionCheckpointer(plain).load(str(root / "out" / "model_final.pth"))
    distiller = trainer.model.eval()
    image = {
        "image": torch.randint(0, 256, (3, 64, 80), generator=torch.Generator().manual_seed(0)).float(),
        "height": 128,
        "width": 160,
    }
    with torch.no_grad():
        tensor = plain.preprocess_image([image]).tensor
        maps, expected_maps = plain.predict(tensor), distiller.student.predict(tensor)
        decoded, expected_decoded = plain.decode(maps), distiller.student.decode(expected_maps)
        got, expected = plain([image])[0]["instances"], distiller([image])[0]["instances"]
    for k in expected_maps:
        assert torch.equal(maps[k], expected_maps[k]), k
    assert decoded["scores"].max() > 0.1
    for k in expected_decoded:
        assert torch.equal(decoded[k], expected_decoded[k]), k
    assert torch.equal(got.pred_boxes.tensor, expected.pred_boxes.tensor)
    assert torch.equal(got.scores, expected.scores)
    assert torch.equal(got.pred_classes, expected.pred_classes)


class FeatureMimic(torch.nn.Module):
    """A FitNet-style term: a 1x1 adapter on the student's upsampler map, L2 to the teacher's."""

    def __init__(self, channels):
        super().__init__()
        self.adapter = torch.nn.Conv2d(channels, channels, 1)

    def forward(self, distiller, outputs, features, teacher_outputs, teacher_features):
        return {
            f"loss_mimic_{link.name}": ((self.adapter(features["upsampler"]) - t["upsampler"]) ** 2).mean()
            for link, t in zip(distiller.links, teacher_features)
        }


def test_an_extra_feature_term_is_added_trained_and_reaches_only_the_student(tmp_path):
    """Distiller(extra_terms=[...]): the term's loss is in the dict with the value computed
    here from the two models' maps; its adapter is among the distiller's parameters and
    gets a gradient, as does the student, never the teacher."""
    from centerx.modeling.meta_arch import Distiller

    teacher = save_teacher(tmp_path, "t", plain_cfg("CenterNet"), seed=3)
    cfg = distill_cfg([(teacher[0], teacher[1], ())], "CenterNet")
    kwargs = Distiller.from_config(cfg)
    channels = kwargs["student"].upsampler.out_channels
    term = FeatureMimic(channels)
    model = Distiller(**kwargs, extra_terms=[term]).train()
    bn_eval(model)
    inputs = batch()
    losses = model(inputs)
    assert set(losses) == {
        "loss_heatmap",
        "loss_wh",
        "loss_offset",
        "loss_kd_t0_heatmap",
        "loss_kd_t0_wh",
        "loss_kd_t0_offset",
        "loss_mimic_t0",
    }
    with torch.no_grad():
        images = model.student.preprocess_image(inputs).tensor
        s = model.student.predict_with_features(images)[1]["upsampler"]
        t = model.teachers[0].predict_with_features(images)[1]["upsampler"]
        expected = ((term.adapter(s) - t) ** 2).mean()
    assert losses["loss_mimic_t0"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert any(p is term.adapter.weight for p in model.parameters())
    losses["loss_mimic_t0"].backward()
    assert term.adapter.weight.grad.abs().sum() > 0
    assert model.student.upsampler.layers[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.teachers.parameters())
    assert sorted(model.state_dict()) == sorted(model.student.state_dict())  # checkpoints: the student only
