"""Multi-scale training (INPUT.TRAIN_SIZES), mixup (INPUT.MIXUP) and the
per-object loss weights mixup gives its objects.

Expected numbers come from outside the code under test: the draws are redone
with NumPy from the documented seeding (``SeedSequence(seed, spawn_key=(stream,
value))``), blended pixels and boxes are worked out for constant-colour images,
and loss changes are closed forms of the focal / L1 / GIoU formulas evaluated
with NumPy on the same output maps.
"""

import os

import cv2
import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import Boxes, BoxMode, Instances

import centerx
from centerx.data import CenterNetDatasetMapper, Mixup
from centerx.data.samplers import PositionedDataset
from centerx.engine import Trainer
from centerx.engine.train_loader import build_resumable_train_loader, stream_augmentations
from centerx.modeling.losses import penalty_reduced_focal_loss
from centerx.modeling.targets import draw_peak_weights, pad_object_weights

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = {
    "CenterNet": os.path.join(REPO, "configs", "shapes", "centernet_r18_demo.yaml"),
    "TTFNet": os.path.join(REPO, "configs", "shapes", "ttfnet_r18_demo.yaml"),
}
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
SIZE_STREAM, MIXUP_STREAM = 1, 2

pytestmark = pytest.mark.usefixtures("one_thread")


def arch_cfg(arch="CenterNet", *opts):
    cfg = centerx.add_centerx_config(get_cfg())
    cfg.merge_from_file(CONFIGS[arch])
    cfg.merge_from_list(SMALL[arch] + list(opts))
    return cfg


def loader_cfg(dataset, *opts):
    return arch_cfg(
        "CenterNet",
        "DATASETS.TRAIN",
        f"('{dataset}',)",
        "DATASETS.TEST",
        "()",
        "INPUT.TRAIN_SIZE",
        "64",
        "SOLVER.IMS_PER_BATCH",
        "2",
        "DATALOADER.NUM_WORKERS",
        "0",
        "SEED",
        "5",
        *opts,
    )


def generator(seed, stream, value):
    """The documented seeding of the stream-level draws, redone with NumPy."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream, value)))


def expected_size(seed, iteration, sizes):
    return sizes[int(generator(seed, SIZE_STREAM, iteration).integers(len(sizes)))]


# --------------------------------------------------------------------------- #
# multi-scale training
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("workers", [0, 2])
def test_each_batch_of_the_real_loader_has_one_drawn_size(tiny_shapes, workers, clean_worker_start):
    """Every batch is square at one size of the list, the size of iteration k
    is the (seed, k) draw (so two loaders agree, and a loader started at
    iteration 3 continues the same sequence), and sizes vary."""
    name, _ = tiny_shapes
    sizes = (64, 96, 128)
    cfg = loader_cfg(name, "INPUT.TRAIN_SIZES", str(sizes), "DATALOADER.NUM_WORKERS", str(workers))
    expected = [expected_size(5, k, sizes) for k in range(8)]
    assert len(set(expected)) > 1
    for start_iter in (0, 3):
        loader, dataset, sampler = build_resumable_train_loader(cfg, seed=5)
        sampler.start = start_iter * 2
        got = []
        for _, batch in zip(range(start_iter, 8), loader):
            shapes = {tuple(x["image"].shape) for x in batch}
            assert len(batch) == 2 and len(shapes) == 1, shapes
            ((c, h, w),) = shapes
            assert c == 3 and h == w
            got.append(h)
        assert got == expected[start_iter:]


def test_all_positions_of_an_iteration_share_its_size():
    """Iteration k is positions [k*B, (k+1)*B) over all ranks: whatever rank
    takes a position, its size is the iteration's."""
    dataset = PositionedDataset(
        [{"i": i} for i in range(5)], mapper=lambda d, size: size, seed=9, batch_size=4, train_sizes=(32, 64, 96, 128)
    )
    for k in range(10):
        assert {dataset[p] for p in range(4 * k, 4 * k + 4)} == {expected_size(9, k, (32, 64, 96, 128))}


def test_mapper_maps_to_the_requested_size(tmp_path):
    """A 100x200 image fit into 96 px (no random scale) is scaled by 0.48; the
    default size is still INPUT.TRAIN_SIZE."""
    cv2.imwrite(str(tmp_path / "a.png"), np.full((100, 200, 3), 90, np.uint8))
    d = {
        "file_name": str(tmp_path / "a.png"),
        "height": 100,
        "width": 200,
        "image_id": 1,
        "annotations": [{"bbox": [10, 20, 50, 30], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 1, "iscrowd": 0}],
    }
    mapper = CenterNetDatasetMapper(
        arch_cfg(
            "CenterNet",
            "INPUT.TRAIN_SIZE",
            "128",
            "INPUT.SCALE_RANGE",
            "(1.0, 1.0)",
            "INPUT.COLOR_JITTER",
            "0.0",
            "INPUT.HFLIP_PROB",
            "0.0",
        )
    )
    assert tuple(mapper(d)["image"].shape) == (3, 128, 128)
    for _ in range(2):  # built on first use, then reused
        out = mapper(d, size=96)
        assert tuple(out["image"].shape) == (3, 96, 96)
        s = 96 / 200
        assert torch.allclose(
            out["instances"].gt_boxes.tensor, torch.tensor([[10 * s, 20 * s, 60 * s, 50 * s]]), atol=1e-3
        )
    fixed = CenterNetDatasetMapper(augmentations=[], image_format="BGR")
    with pytest.raises(ValueError, match="augmentations_for_size"):
        fixed(d, size=96)


@pytest.mark.parametrize("sizes", ["(100,)", "(64, 0)", "(-32,)", "(64.0,)"])
def test_bad_train_sizes_are_refused(sizes):
    with pytest.raises(ValueError, match="INPUT.TRAIN_SIZES must hold positive multiples of 32"):
        stream_augmentations(arch_cfg("CenterNet", "INPUT.TRAIN_SIZES", sizes))


@pytest.mark.parametrize("feature", [("INPUT.TRAIN_SIZES", "(64, 96)"), ("INPUT.MIXUP.ENABLED", "True")])
def test_features_need_the_resumable_sampler_and_the_centernet_mapper(feature):
    cfg = arch_cfg("CenterNet", *feature, "DATALOADER.SAMPLER_TRAIN", "TrainingSampler")
    with pytest.raises(ValueError, match=f"{feature[0]} need DATALOADER.SAMPLER_TRAIN 'ResumableTrainingSampler'"):
        Trainer.build_train_loader(cfg)
    cfg = arch_cfg("CenterNet", *feature, "DATALOADER.TRAIN_MAPPER", "default")
    with pytest.raises(ValueError, match=f"{feature[0]} need DATALOADER.TRAIN_MAPPER 'centernet'"):
        stream_augmentations(cfg)
    assert stream_augmentations(arch_cfg("CenterNet")) == {"batch_size": 16, "train_sizes": (), "mixup": None}


# --------------------------------------------------------------------------- #
# mixup: the stream
# --------------------------------------------------------------------------- #
COLOURS = [(10, 200, 90), (250, 31, 120)]  # BGR


@pytest.fixture
def two_colour_images(tmp_path):
    """Two 64x64 constant-colour images with one box each (classes 0 and 3)."""
    dicts = []
    for i, (colour, box, cls) in enumerate(zip(COLOURS, ([4, 6, 20, 30], [30, 8, 24, 40]), (0, 3))):
        path = str(tmp_path / f"{i}.png")
        cv2.imwrite(path, np.full((64, 64, 3), colour, np.uint8))
        dicts.append(
            {
                "file_name": path,
                "height": 64,
                "width": 64,
                "image_id": i,
                "annotations": [{"bbox": box, "bbox_mode": BoxMode.XYWH_ABS, "category_id": cls, "iscrowd": 0}],
            }
        )
    mapper = CenterNetDatasetMapper(
        arch_cfg(
            "CenterNet",
            "INPUT.TRAIN_SIZE",
            "64",
            "INPUT.SCALE_RANGE",
            "(1.0, 1.0)",
            "INPUT.COLOR_JITTER",
            "0.0",
            "INPUT.HFLIP_PROB",
            "0.0",
        )
    )
    return dicts, mapper


def test_mixed_image_is_the_closed_form_blend_with_both_box_sets(two_colour_images):
    """Every sample mixed (PROB 1): pixel = round(lam * colour_a + (1 - lam) *
    colour_b) with lam redrawn from (seed, position); the first image's box
    (weight lam) then the other's (weight 1 - lam)."""
    dicts, mapper = two_colour_images
    dataset = PositionedDataset(dicts, mapper, seed=11, shuffle=False, mixup=Mixup(prob=1.0, alpha=1.5))
    boxes = [[4.0, 6.0, 24.0, 36.0], [30.0, 8.0, 54.0, 48.0]]
    lams = []
    for p in range(6):
        g = generator(11, MIXUP_STREAM, p)
        assert g.random() < 1.0
        g.integers(1)  # the partner among the n - 1 = 1 others
        lam = g.beta(1.5, 1.5)
        lams.append(lam)
        a, b = p % 2, 1 - p % 2
        out = dataset[p]
        expected = np.round(lam * np.array(COLOURS[a], np.float64) + (1 - lam) * np.array(COLOURS[b], np.float64))
        expected = expected[::-1].copy() if mapper.image_format == "RGB" else expected  # written as BGR
        assert out["image"].dtype == torch.uint8
        assert torch.equal(out["image"], torch.tensor(expected, dtype=torch.uint8)[:, None, None].expand(3, 64, 64))
        inst = out["instances"]
        assert torch.allclose(inst.gt_boxes.tensor, torch.tensor([boxes[a], boxes[b]]))
        assert inst.gt_classes.tolist() == [(0, 3)[a], (0, 3)[b]]
        assert inst.gt_weights.dtype == torch.float32
        assert inst.gt_weights.tolist() == pytest.approx([lam, 1 - lam], abs=1e-7)
        assert float(inst.gt_weights.sum()) == pytest.approx(1.0, abs=1e-6)
    assert max(lams) - min(lams) > 0.2  # lambda varies with the position


def fake_sample(d, size=None):
    """A mapper of constant images (value = entry index) with one box of class = index."""
    i = d["i"]
    return {
        "i": i,
        "image": torch.full((3, 4, 4), 10 * i, dtype=torch.uint8),
        "instances": Instances(
            (4, 4), gt_boxes=Boxes(torch.tensor([[0.0, 0.0, 2.0, 2.0]])), gt_classes=torch.tensor([i])
        ),
    }


def mixed(sample):
    return sample["instances"].has("gt_weights")


def test_prob_and_the_last_iterations_without_mixup():
    """PROB 1: every sample of iterations < MAX_ITER - OFF_LAST_ITERS is mixed,
    none after; PROB 0: none; PROB 0.5: the samples whose redrawn u < 0.5."""
    dicts = [{"i": i} for i in range(5)]
    cfg = arch_cfg(
        "CenterNet",
        "INPUT.MIXUP.ENABLED",
        "True",
        "INPUT.MIXUP.PROB",
        "1.0",
        "INPUT.MIXUP.OFF_LAST_ITERS",
        "3",
        "SOLVER.MAX_ITER",
        "9",
    )
    always = Mixup.from_config(cfg)
    assert always.stop_iter == 6
    dataset = PositionedDataset(dicts, fake_sample, seed=2, batch_size=3, mixup=always)
    assert [mixed(dataset[p]) for p in range(27)] == [True] * 18 + [False] * 9
    never = PositionedDataset(dicts, fake_sample, seed=2, batch_size=3, mixup=Mixup(prob=0.0))
    assert not any(mixed(never[p]) for p in range(60))
    half = PositionedDataset(dicts, fake_sample, seed=2, batch_size=3, mixup=Mixup(prob=0.5))
    expected = [generator(2, MIXUP_STREAM, p).random() < 0.5 for p in range(60)]
    assert [mixed(half[p]) for p in range(60)] == expected
    assert 10 < sum(expected) < 50


def test_second_image_is_another_entry():
    """The partner is drawn among the other entries: never the sample itself."""
    dataset = PositionedDataset([{"i": i} for i in range(4)], fake_sample, seed=3, mixup=Mixup(prob=1.0))
    partners = set()
    for p in range(40):
        classes = dataset[p]["instances"].gt_classes.tolist()
        assert classes[0] != classes[1]
        partners.add(tuple(classes))
    assert len(partners) > 4


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("PROB", "1.5", "PROB must be in"),
        ("ALPHA", "0.0", "ALPHA must be"),
        ("OFF_LAST_ITERS", "-1", "OFF_LAST_ITERS must be"),
    ],
)
def test_bad_mixup_settings_are_refused(key, value, message):
    cfg = arch_cfg("CenterNet", "INPUT.MIXUP.ENABLED", "True", f"INPUT.MIXUP.{key}", value)
    with pytest.raises(ValueError, match=f"INPUT.MIXUP.{message}"):
        stream_augmentations(cfg)


def reference_stream(dicts, mapper, seed, positions):
    """The stream without stream-level augmentations, as documented in
    centerx.data.samplers: entry perm_e[p % n], mapped with every global
    generator seeded by SeedSequence([seed, p + 1])."""
    import random

    def seed_of(value):
        return int(np.random.SeedSequence([seed, value]).generate_state(1)[0] >> 1)

    out = []
    for p in positions:
        epoch, i = divmod(p, len(dicts))
        perm = torch.randperm(len(dicts), generator=torch.Generator().manual_seed(seed_of(epoch)))
        s = seed_of(p + 1)
        random.seed(s)
        np.random.seed(s)
        torch.manual_seed(s)
        out.append(mapper(dicts[int(perm[i])]))
    return out


def test_disabled_or_never_mixing_leaves_the_stream_as_it_was(tiny_shapes):
    """Off (the default) and PROB 0 both give the plain stream bit for bit:
    no extra draw touches the mapper's generators."""
    name, _ = tiny_shapes
    positions = list(range(10))
    plain_cfg = loader_cfg(name)
    _, plain, _ = build_resumable_train_loader(plain_cfg, seed=5)
    reference = reference_stream(plain.dicts, CenterNetDatasetMapper(plain_cfg), 5, positions)
    _, prob0, _ = build_resumable_train_loader(
        loader_cfg(name, "INPUT.MIXUP.ENABLED", "True", "INPUT.MIXUP.PROB", "0.0"), seed=5
    )
    assert prob0.mixup is not None and plain.mixup is None and plain.train_sizes == ()
    for p, ref in zip(positions, reference):
        for got in (plain[p], prob0[p]):
            assert torch.equal(got["image"], ref["image"])
            assert torch.equal(got["instances"].gt_boxes.tensor, ref["instances"].gt_boxes.tensor)
            assert not got["instances"].has("gt_weights")


# --------------------------------------------------------------------------- #
# per-object loss weights
# --------------------------------------------------------------------------- #
def test_pad_object_weights_and_peak_weights_by_hand():
    w = pad_object_weights([torch.tensor([0.25, 0.75]), None, torch.zeros(0)], [2, 3, 0])
    assert w.tolist() == [[0.25, 0.75, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    assert pad_object_weights([None], [0]).tolist() == [[1.0]]
    # two objects of class 1 on one centre cell (the larger weight wins), one of
    # class 0 elsewhere, one invalid object that must leave no trace
    peak = draw_peak_weights(
        (2, 2, 3, 4),
        torch.tensor([0, 0, 1, 1]),
        torch.tensor([1, 1, 0, -1]),
        torch.tensor([[2, 1], [2, 1], [3, 2], [0, 0]]),
        torch.tensor([0.3, 0.7, 0.2, 0.5]),
        torch.tensor([True, True, True, False]),
    )
    expected = torch.ones(2, 2, 3, 4)
    expected[0, 1, 1, 2] = 0.7
    expected[1, 0, 2, 3] = 0.2
    assert torch.equal(peak, expected)


def test_focal_positive_term_scales_by_its_weight():
    """L(w) - L(1) = -(w - 1) (1 - p)^2 log p at the centre, divided by the one
    positive; negatives untouched; weight 1 everywhere == no weight."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 2, 6, 7, generator=g)
    yy, xx = np.mgrid[:6, :7]
    target = torch.zeros(1, 2, 6, 7)
    target[0, 1] = torch.tensor(np.exp(-((yy - 2) ** 2 + (xx - 4) ** 2) / 2.0), dtype=torch.float32)
    assert target[0, 1, 2, 4] == 1.0
    base = penalty_reduced_focal_loss(logits, target)
    assert penalty_reduced_focal_loss(logits, target, pos_weight=torch.ones_like(target)).item() == base.item()
    p = 1 / (1 + np.exp(-float(logits[0, 1, 2, 4])))
    pos_term = (1 - p) ** 2 * np.log(p)
    for w in (0.0, 0.3, 2.0):
        weight = torch.ones_like(target)
        weight[0, 1, 2, 4] = w
        got = penalty_reduced_focal_loss(logits, target, pos_weight=weight).item()
        assert got == pytest.approx(base.item() - (w - 1) * pos_term, rel=1e-5, abs=1e-6)


def sigmoid(x):
    return 1 / (1 + np.exp(-np.asarray(x, np.float64)))


def random_outputs(arch, seed, size=64):
    """Output maps of a 64x64 batch of one image (stride 4: 16x16 cells)."""
    g = torch.Generator().manual_seed(seed)
    n = size // 4
    out = {"heatmap": torch.randn(1, 4, n, n, generator=g)}
    if arch == "CenterNet":
        out["wh"] = torch.rand(1, 2, n, n, generator=g) * 8
        out["offset"] = torch.rand(1, 2, n, n, generator=g)
    else:
        out["ltrb"] = torch.rand(1, 4, n, n, generator=g) * 20 + 1
    return out


def gt(boxes, classes, weights=None):
    inst = Instances(
        (64, 64), gt_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32)), gt_classes=torch.tensor(classes)
    )
    if weights is not None:
        inst.gt_weights = torch.tensor(weights, dtype=torch.float32)
    return inst


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {arch: build_model(arch_cfg(arch, "MODEL.DEVICE", "cpu")).train() for arch in CONFIGS}


@pytest.mark.parametrize("arch", ["CenterNet", "TTFNet"])
def test_single_object_losses_scale_by_its_weight(models, arch):
    """One object, box (8, 12, 40, 36) px: centre cell (6, 6), class 2. With
    weight w its regression terms are w times those of weight 1 (the divisors,
    number of objects / unweighted sample-weight sum, stay), and the heatmap
    loss changes by exactly -(w - 1) (1 - p)^2 log p at its centre cell;
    weights of 1 give the unweighted losses."""
    model = models[arch]
    outputs = random_outputs(arch, seed=1)
    box, cls = [[8.0, 12.0, 40.0, 36.0]], [2]
    plain = model.losses(outputs, [gt(box, cls)])
    ones = model.losses(outputs, [gt(box, cls, [1.0])])
    for k in plain:
        assert ones[k].item() == pytest.approx(plain[k].item(), rel=1e-6, abs=1e-7), k
    p = sigmoid(outputs["heatmap"][0, 2, 6, 6])
    pos_term = (1 - p) ** 2 * np.log(p)
    hm_weight = model.loss_weights["heatmap"]
    regression = [k for k in plain if k != "loss_heatmap"]
    assert all(plain[k].item() > 0 for k in regression)
    for w in (0.25, 0.8):
        weighted = model.losses(outputs, [gt(box, cls, [w])])
        for k in regression:
            assert weighted[k].item() == pytest.approx(w * plain[k].item(), rel=1e-5), k
        expected = plain["loss_heatmap"].item() - hm_weight * (w - 1) * pos_term
        assert weighted["loss_heatmap"].item() == pytest.approx(expected, rel=1e-5)


def test_centernet_two_mixed_objects_closed_form(models):
    """Two objects weighted lam and 1 - lam: loss_wh = 0.1 * (lam e1 + (1 - lam) e2) / (2 objects * 2),
    e_i = |predicted - true size| summed over w, h at the object's centre cell."""
    model = models["CenterNet"]
    outputs = random_outputs("CenterNet", seed=2)
    boxes = [[8.0, 12.0, 40.0, 36.0], [30.0, 6.0, 50.0, 54.0]]  # centre cells (6, 6) and (10, 7.5)
    lam = 0.3
    got = model.losses(outputs, [gt(boxes, [2, 0], [lam, 1 - lam])])["loss_wh"].item()
    wh = outputs["wh"][0].double().numpy()
    e1 = abs(wh[0, 6, 6] - 8) + abs(wh[1, 6, 6] - 6)
    e2 = abs(wh[0, 7, 10] - 5) + abs(wh[1, 7, 10] - 12)
    assert got == pytest.approx(0.1 * (lam * e1 + (1 - lam) * e2) / 4, rel=1e-5)


def test_ttfnet_two_mixed_objects_closed_form(models):
    """Two disjoint objects weighted lam and 1 - lam: the box loss is
    5 * (lam S1 + (1 - lam) S2) / (Z1 + Z2), S_i and Z_i the weighted GIoU sum
    and weight sum of object i alone (each alone: 5 * S_i / Z_i)."""
    model = models["TTFNet"]
    outputs = random_outputs("TTFNet", seed=3)
    boxes = [[4.0, 4.0, 24.0, 28.0], [36.0, 30.0, 60.0, 60.0]]
    lam = 0.7
    alone = [model.losses(outputs, [gt([b], [c])])["loss_box"].item() for b, c in zip(boxes, (1, 3))]
    # each object's sample weights sum to log of its pixel-inclusive area
    z = [np.log((b[2] - b[0] + 1) * (b[3] - b[1] + 1)) for b in boxes]
    s = [loss / 5 * zi for loss, zi in zip(alone, z)]
    got = model.losses(outputs, [gt(boxes, [1, 3], [lam, 1 - lam])])["loss_box"].item()
    assert got == pytest.approx(5 * (lam * s[0] + (1 - lam) * s[1]) / (z[0] + z[1]), rel=1e-5)


def test_batch_with_and_without_weights(models):
    """In a batch, an image without gt_weights counts with weight 1: a mixed
    image with weights (1, 1) and a plain one give the plain losses."""
    model = models["CenterNet"]
    g = torch.Generator().manual_seed(4)
    outputs = {
        "heatmap": torch.randn(2, 4, 16, 16, generator=g),
        "wh": torch.rand(2, 2, 16, 16, generator=g) * 8,
        "offset": torch.rand(2, 2, 16, 16, generator=g),
    }
    a, b = [[8.0, 12.0, 40.0, 36.0], [30.0, 2.0, 50.0, 62.0]], [[2.0, 2.0, 30.0, 20.0]]
    plain = model.losses(outputs, [gt(a, [2, 0]), gt(b, [1])])
    ones = model.losses(outputs, [gt(a, [2, 0], [1.0, 1.0]), gt(b, [1])])
    half = model.losses(outputs, [gt(a, [2, 0], [0.5, 0.5]), gt(b, [1])])
    for k in plain:
        assert ones[k].item() == pytest.approx(plain[k].item(), rel=1e-6), k
    assert half["loss_wh"].item() < plain["loss_wh"].item()


def test_distiller_student_losses_are_weighted_and_kd_losses_are_not(tmp_path):
    """A Distiller's student terms follow gt_weights (x w for one object per
    image); its distillation terms do not depend on them."""
    teacher_cfg = arch_cfg("CenterNet", "INPUT.TRAIN_SIZE", "64")
    torch.manual_seed(0)
    teacher = build_model(teacher_cfg)
    DetectionCheckpointer(teacher, save_dir=str(tmp_path)).save("t")
    (tmp_path / "t.yaml").write_text(teacher_cfg.dump())
    cfg = arch_cfg("CenterNet", "MODEL.META_ARCHITECTURE", "Distiller", "INPUT.TRAIN_SIZE", "64")
    cfg.MODEL.DISTILL.TEACHERS = [(str(tmp_path / "t.yaml"), str(tmp_path / "t.pth"), ())]
    model = build_model(cfg).train()
    images = torch.randint(0, 256, (2, 3, 64, 64), generator=torch.Generator().manual_seed(0)).float()

    def batch(w):
        return [{"image": images[i], "instances": gt([[4.0 + i, 6.0, 40.0, 30.0 + i]], [i], w)} for i in range(2)]

    plain, weighted = model(batch(None)), model(batch([0.4]))
    assert {k for k in plain if k.startswith("loss_kd")}
    for k in plain:
        expected = plain[k].item() * (0.4 if k in ("loss_wh", "loss_offset") else 1.0)
        if k != "loss_heatmap":
            assert weighted[k].item() == pytest.approx(expected, rel=1e-5), k
    assert weighted["loss_heatmap"].item() < plain["loss_heatmap"].item()  # less weight on the positives


# --------------------------------------------------------------------------- #
# training
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("arch", ["CenterNet", "TTFNet"])
def test_three_iterations_with_multiscale_and_mixup(arch, tiny_shapes, tmp_path):
    """Both features on through centerX's Trainer: finite losses, and the model
    sees the drawn size of each iteration."""
    name, _ = tiny_shapes
    sizes = (64, 96)
    cfg = arch_cfg(
        arch,
        "DATASETS.TRAIN",
        f"('{name}',)",
        "DATASETS.TEST",
        "()",
        "INPUT.TRAIN_SIZE",
        "64",
        "INPUT.TRAIN_SIZES",
        str(sizes),
        "INPUT.MIXUP.ENABLED",
        "True",
        "INPUT.MIXUP.PROB",
        "1.0",
        "INPUT.MIXUP.OFF_LAST_ITERS",
        "1",
        "SOLVER.IMS_PER_BATCH",
        "2",
        "SOLVER.MAX_ITER",
        "3",
        "SOLVER.WARMUP_ITERS",
        "0",
        "SOLVER.CHECKPOINT_PERIOD",
        "1000",
        "DATALOADER.NUM_WORKERS",
        "0",
        "OUTPUT_DIR",
        str(tmp_path),
        "SEED",
        "8",
    )
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    seen = []
    trainer.unwrapped_model.register_forward_pre_hook(
        lambda m, args: seen.append(
            ({tuple(x["image"].shape[1:]) for x in args[0]}, [x["instances"].has("gt_weights") for x in args[0]])
        )
    )
    trainer.train()
    assert seen == [({(s, s)}, [k < 2] * 2) for k, s in enumerate(expected_size(8, k, sizes) for k in range(3))]
    losses = trainer.storage.history("total_loss").values()
    assert len(losses) == 3 and all(np.isfinite(v) for v, _ in losses)
