import json
import os

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from centerx.data.datasets import (
    SHAPES_CLASSES,
    convert_crowdhuman_odgt,
    convert_widerface_txt,
    ensure_datasets,
    ensure_shapes,
    generate_shapes,
    register_all_builtin,
    register_coco_json_datasets,
)
from centerx.data.datasets import builtin as builtin_module
from centerx.data.datasets import shapes as shapes_module

BUILTIN = [
    "shapes_train",
    "shapes_val",
    "crowdhuman_train",
    "crowdhuman_val",
    "widerface_train",
    "widerface_val",
]
USER = ["my_ds", "my_missing", "my_ok"]


@pytest.fixture
def clean_catalog():
    """Unregister the names used here for the test and restore them afterwards."""
    names = BUILTIN + USER
    saved = {n: (DatasetCatalog.pop(n), MetadataCatalog.pop(n, None)) for n in names if n in DatasetCatalog}
    saved_prepare = dict(builtin_module._PREPARE)
    yield
    builtin_module._PREPARE.clear()
    builtin_module._PREPARE.update(saved_prepare)
    for n in names:
        DatasetCatalog.pop(n, None)
        MetadataCatalog.pop(n, None)
    for n, (func, meta) in saved.items():
        DatasetCatalog[n] = func
        if meta is not None:
            MetadataCatalog[n] = meta


@pytest.fixture
def tiny_splits(monkeypatch):
    monkeypatch.setattr(shapes_module, "SHAPES_SPLITS", {"train": (4, 11), "val": (3, 12)})


def _load(path):
    with open(path) as f:
        return json.load(f)


def _files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def _write_image(path, width, height):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(str(path), np.full((height, width, 3), 127, np.uint8))


# ----------------------------------------------------------------------- shapes
def test_classes_and_categories(tmp_path):
    assert 4 <= len(SHAPES_CLASSES) <= 5 and len(set(SHAPES_CLASSES)) == len(SHAPES_CLASSES)
    coco = _load(generate_shapes(str(tmp_path), "val", 2, seed=0))
    assert [c["id"] for c in coco["categories"]] == list(range(1, len(SHAPES_CLASSES) + 1))
    assert [c["name"] for c in coco["categories"]] == list(SHAPES_CLASSES)


def test_generation_is_deterministic(tmp_path):
    a = generate_shapes(str(tmp_path / "a"), "val", 4, seed=7)
    b = generate_shapes(str(tmp_path / "b"), "val", 4, seed=7)
    c = generate_shapes(str(tmp_path / "c"), "val", 4, seed=8)
    assert a == str(tmp_path / "a" / "annotations" / "val.json")
    with open(a, "rb") as fa, open(b, "rb") as fb:
        assert fa.read() == fb.read()
    assert _load(a)["annotations"] != _load(c)["annotations"]
    names = _files(str(tmp_path / "a" / "val"))
    assert names == ["000000.jpg", "000001.jpg", "000002.jpg", "000003.jpg"]
    for n in names:
        pa, pb, pc = (tmp_path / r / "val" / n for r in "abc")
        assert pa.read_bytes() == pb.read_bytes()
        assert pa.read_bytes() != pc.read_bytes()
    assert _files(str(tmp_path / "a")) == [os.path.join("annotations", "val.json")] + [
        os.path.join("val", n) for n in names
    ]  # no temporary files left behind


def test_annotations_are_valid_coco(tmp_path):
    coco = _load(generate_shapes(str(tmp_path), "train", 24, seed=3, min_size=192, max_size=320))
    images = {im["id"]: im for im in coco["images"]}
    assert len(images) == 24 and coco["info"]["generator"].startswith("centerx shapes")
    per_image = {i: 0 for i in images}
    sizes = set()
    for ann in coco["annotations"]:
        im = images[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        assert x >= 0 and y >= 0 and x + w <= im["width"] and y + h <= im["height"]
        assert min(w, h) >= 8 and ann["area"] == w * h and ann["iscrowd"] == 0
        assert 1 <= ann["category_id"] <= len(SHAPES_CLASSES)
        per_image[ann["image_id"]] += 1
    for im in coco["images"]:
        decoded = cv2.imread(str(tmp_path / "train" / im["file_name"]))
        assert decoded.shape == (im["height"], im["width"], 3)
        assert 192 <= im["height"] <= 320 and 192 <= im["width"] <= 320
        sizes.add((im["height"], im["width"]))
    assert all(1 <= n <= 8 for n in per_image.values())
    assert len(sizes) > 12  # sizes (and aspect ratios) vary per image
    assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])


def test_boxes_are_tight_around_drawn_pixels(monkeypatch):
    """With a flat background and no noise, an isolated object's box is the box of the
    pixels that differ from the background."""
    monkeypatch.setattr(shapes_module, "_background", lambda rng, h, w: np.full((h, w, 3), 128.0, np.float32))
    monkeypatch.setattr(shapes_module, "_add_noise", lambda rng, image: image)
    checked = 0
    for seed in range(12):
        image, objects = shapes_module._render_image(np.random.default_rng(seed), 200, 240)
        changed = np.any(image != 128, axis=2)
        for i, obj in enumerate(objects):
            x, y, w, h = obj["bbox"]
            x0, y0, x1, y1 = max(x - 3, 0), max(y - 3, 0), x + w + 3, y + h + 3
            others = [o["bbox"] for j, o in enumerate(objects) if j != i]
            if any(ox < x1 and x0 < ox + ow and oy < y1 and y0 < oy + oh for ox, oy, ow, oh in others):
                continue
            ys, xs = np.nonzero(changed[y0:y1, x0:x1])
            assert [xs.min() + x0, ys.min() + y0, xs.max() - xs.min() + 1, ys.max() - ys.min() + 1] == [x, y, w, h]
            checked += 1
        # nothing outside the union of boxes was drawn
        inside = np.zeros_like(changed)
        for x, y, w, h in (o["bbox"] for o in objects):
            inside[y : y + h, x : x + w] = True
        assert not np.any(changed & ~inside)
    assert checked >= 10


def test_ensure_shapes_generates_once_and_regenerates_stale(tmp_path, tiny_splits, monkeypatch):
    ensure_shapes(str(tmp_path))
    train_json = tmp_path / "shapes" / "annotations" / "train.json"
    assert len(_load(train_json)["images"]) == 4
    assert len(_load(tmp_path / "shapes" / "annotations" / "val.json")["images"]) == 3
    before = _files(str(tmp_path))

    def fail(*args, **kwargs):
        raise AssertionError("up-to-date data must not be regenerated")

    with monkeypatch.context() as m:
        m.setattr(shapes_module, "generate_shapes", fail)
        ensure_shapes(str(tmp_path))
    assert _files(str(tmp_path)) == before

    stale = _load(train_json)
    stale["info"]["generator"] = "centerx shapes v0"
    train_json.write_text(json.dumps(stale))
    ensure_shapes(str(tmp_path))
    assert _load(train_json)["info"]["generator"] != "centerx shapes v0"


def test_ensure_shapes_default_root_is_env(tmp_path, tiny_splits, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "d2"))
    ensure_shapes()
    assert (tmp_path / "d2" / "shapes" / "annotations" / "val.json").is_file()


# ------------------------------------------------------------------ registration
def test_register_all_builtin_is_lazy_and_idempotent(tmp_path, clean_catalog, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "data"
    register_all_builtin(str(root))
    register_all_builtin(str(root))
    assert _files(str(tmp_path)) == []  # registration touched no file
    for name in BUILTIN + ["coco_2017_train", "coco_2017_val"]:
        assert name in DatasetCatalog.list()
        assert MetadataCatalog.get(name).evaluator_type == "coco"
    meta = MetadataCatalog.get("shapes_val")
    assert meta.json_file == str(root / "shapes" / "annotations" / "val.json")
    assert meta.image_root == str(root / "shapes" / "val")
    assert meta.thing_classes == list(SHAPES_CLASSES)
    assert MetadataCatalog.get("crowdhuman_val").thing_classes == ["person"]
    assert MetadataCatalog.get("widerface_train").thing_classes == ["face"]
    assert MetadataCatalog.get("coco_2017_val").json_file.endswith("instances_val2017.json")


def test_shapes_loader_and_coco_evaluator(tmp_path, clean_catalog, tiny_splits):
    import torch
    from detectron2.evaluation import COCOEvaluator
    from detectron2.structures import Boxes, Instances

    register_all_builtin(str(tmp_path))
    dicts = DatasetCatalog.get("shapes_val")  # generates on first use
    assert len(dicts) == 3 and os.path.isfile(MetadataCatalog.get("shapes_val").json_file)

    evaluator = COCOEvaluator("shapes_val", tasks=("bbox",), distributed=False, output_dir=str(tmp_path / "eval"))
    evaluator.reset()
    for d in dicts:
        boxes = torch.tensor([a["bbox"] for a in d["annotations"]], dtype=torch.float32)
        boxes[:, 2:] += boxes[:, :2]
        inst = Instances((d["height"], d["width"]))
        inst.pred_boxes = Boxes(boxes)
        inst.scores = torch.ones(len(boxes))
        inst.pred_classes = torch.tensor([a["category_id"] for a in d["annotations"]])
        evaluator.process([{"image_id": d["image_id"]}], [{"instances": inst}])
    assert evaluator.evaluate()["bbox"]["AP"] == pytest.approx(100.0)


def test_ensure_datasets_prepares_only_builtin_names(tmp_path, clean_catalog, tiny_splits):
    register_all_builtin(str(tmp_path))
    ensure_datasets(["coco_2017_val", "not_a_dataset", "shapes_val"])
    assert (tmp_path / "shapes" / "annotations" / "val.json").is_file()
    assert sorted(os.listdir(tmp_path)) == ["shapes"]
    with pytest.raises(FileNotFoundError, match="annotation_val.odgt"):
        ensure_datasets(["crowdhuman_val"])


def test_converted_datasets_load_lazily(tmp_path, clean_catalog):
    root = tmp_path
    _write_image(root / "widerface" / "WIDER_val" / "images" / "0--P" / "a.jpg", 50, 40)
    gt = root / "widerface" / "wider_face_split" / "wider_face_val_bbx_gt.txt"
    gt.parent.mkdir(parents=True)
    gt.write_text("0--P/a.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n")
    register_all_builtin(str(root))
    (d,) = DatasetCatalog.get("widerface_val")
    assert d["annotations"][0]["bbox"] == [1, 2, 3, 4] and (d["width"], d["height"]) == (50, 40)
    assert os.path.isfile(MetadataCatalog.get("widerface_val").json_file)
    with pytest.raises(FileNotFoundError, match="annotation_train.odgt"):
        DatasetCatalog.get("crowdhuman_train")


def test_register_coco_json_datasets(tmp_path, clean_catalog):
    coco = {
        "images": [{"id": 1, "file_name": "x.jpg", "height": 10, "width": 20}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 2, 3, 4], "area": 12, "iscrowd": 0}],
        "categories": [{"id": 3, "name": "thing"}],
    }
    good = tmp_path / "good.json"
    good.write_text(json.dumps(coco))
    register_coco_json_datasets([("my_ok", str(good), str(tmp_path))])
    register_coco_json_datasets([["my_ok", str(good), str(tmp_path)]])  # same triple again
    (d,) = DatasetCatalog.get("my_ok")
    assert d["file_name"] == os.path.join(str(tmp_path), "x.jpg")
    assert d["annotations"][0]["category_id"] == 0
    assert MetadataCatalog.get("my_ok").thing_classes == ["thing"]
    assert MetadataCatalog.get("my_ok").json_file == str(good)

    for bad in ([("my_ds", "a.json")], [("my_ds", "", "img")], ["my_ds"], "my_ds", [("my_ds", "a.json", 3)]):
        with pytest.raises(ValueError, match="DATASETS.COCO_JSON"):
            register_coco_json_datasets(bad)
    with pytest.raises(ValueError, match="already registered"):
        register_coco_json_datasets([("my_ok", str(tmp_path / "other.json"), str(tmp_path))])
    with pytest.raises(ValueError, match="already registered"):
        register_coco_json_datasets([("coco_2017_val", "x.json", "y")])

    missing = str(tmp_path / "nope.json")
    register_coco_json_datasets([("my_missing", missing, str(tmp_path))])  # lazy: no error yet
    with pytest.raises(FileNotFoundError) as e:
        DatasetCatalog.get("my_missing")
    assert missing in str(e.value) and "DATASETS.COCO_JSON" in str(e.value)


# -------------------------------------------------------------------- converters
def test_convert_crowdhuman_odgt(tmp_path):
    images = tmp_path / "Images"
    _write_image(images / "273271,c9db000d5146c15.jpg", 100, 80)
    _write_image(images / "283554,35288000868e92d4.jpg", 60, 50)
    records = [
        {
            "ID": "273271,c9db000d5146c15",
            "gtboxes": [
                {
                    "tag": "person",
                    "fbox": [10, 20, 30, 40],
                    "vbox": [12, 22, 20, 30],
                    "hbox": [20, 20, 8, 8],
                    "extra": {"box_id": 0, "occ": 0},
                    "head_attr": {"ignore": 0},
                },
                {
                    "tag": "person",
                    "fbox": [-5, 50, 20, 40],
                    "vbox": [0, 50, 15, 30],
                    "hbox": [0, 50, 5, 5],
                    "extra": {"box_id": 1, "occ": 1},
                    "head_attr": {"ignore": 0},
                },
                {
                    "tag": "mask",
                    "fbox": [50, 5, 20, 20],
                    "vbox": [50, 5, 20, 20],
                    "hbox": [50, 5, 20, 20],
                    "extra": {"box_id": 2, "ignore": 1},
                },
                {
                    "tag": "person",
                    "fbox": [70, 10, 10, 10],
                    "vbox": [70, 10, 10, 10],
                    "hbox": [72, 10, 4, 4],
                    "extra": {"box_id": 3, "ignore": 1},
                    "head_attr": {"ignore": 0},
                },
            ],
        },
        {
            "ID": "283554,35288000868e92d4",
            "gtboxes": [
                {
                    "tag": "person",
                    "fbox": [100, 10, 20, 20],
                    "vbox": [100, 10, 20, 20],
                    "hbox": [100, 10, 5, 5],
                    "extra": {"box_id": 0},
                    "head_attr": {},
                },
                {
                    "tag": "person",
                    "fbox": [5, 5, 10, 10],
                    "vbox": [6, 6, 8, 8],
                    "hbox": [7, 5, 4, 4],
                    "extra": {"box_id": 1},
                    "head_attr": {"ignore": 1},
                },
            ],
        },
    ]
    odgt = tmp_path / "annotation_val.odgt"
    odgt.write_text("\n".join(json.dumps(r) for r in records) + "\n")

    out = convert_crowdhuman_odgt(str(odgt), str(images), str(tmp_path / "out.json"))
    coco = _load(out)
    assert coco["categories"] == [{"id": 1, "name": "person", "supercategory": "person"}]
    assert [(im["id"], im["file_name"], im["width"], im["height"]) for im in coco["images"]] == [
        (1, "273271,c9db000d5146c15.jpg", 100, 80),
        (2, "283554,35288000868e92d4.jpg", 60, 50),
    ]
    got = [(a["image_id"], a["bbox"], a["iscrowd"]) for a in coco["annotations"]]
    assert got == [
        (1, [10, 20, 30, 40], 0),
        (1, [0, 50, 15, 30], 0),  # clipped to the image
        (1, [50, 5, 20, 20], 1),  # "mask" tag -> ignore region
        (1, [70, 10, 10, 10], 1),  # extra.ignore
        (2, [5, 5, 10, 10], 0),  # the box outside image 2 is dropped
    ]
    assert [a["area"] for a in coco["annotations"]] == [1200, 450, 400, 100, 100]
    assert [a["id"] for a in coco["annotations"]] == [1, 2, 3, 4, 5]
    info = coco["info"]
    assert (info["num_images"], info["num_boxes"], info["num_ignore"], info["num_dropped"]) == (2, 3, 2, 1)

    heads = _load(convert_crowdhuman_odgt(str(odgt), str(images), str(tmp_path / "h.json"), box_type="hbox"))
    assert [(a["bbox"], a["iscrowd"]) for a in heads["annotations"]][-1] == ([7, 5, 4, 4], 1)
    with pytest.raises(ValueError):
        convert_crowdhuman_odgt(str(odgt), str(images), str(tmp_path / "x.json"), box_type="box")


def test_convert_widerface_txt(tmp_path):
    root = tmp_path / "WIDER_val" / "images"
    _write_image(root / "0--Parade" / "a.jpg", 120, 90)
    _write_image(root / "0--Parade" / "b.jpg", 64, 48)
    _write_image(root / "1--Handshaking" / "c.jpg", 100, 80)
    txt = tmp_path / "wider_face_val_bbx_gt.txt"
    txt.write_text(
        "0--Parade/a.jpg\n2\n"
        "10 20 30 40 0 0 0 0 0 0 \n"
        "5 5 0 10 0 0 0 0 0 0 \n"  # zero width
        "0--Parade/b.jpg\n0\n"
        "0 0 0 0 0 0 0 0 0 0 \n"  # the dummy line of an image without faces
        "1--Handshaking/c.jpg\n3\n"
        "1 2 3 4 2 0 0 0 1 0 \n"
        "50 60 10 10 0 0 0 1 0 0 \n"  # invalid
        "90 70 20 20 0 0 0 0 0 0 \n"  # partly outside: clipped
    )
    coco = _load(convert_widerface_txt(str(txt), str(root), str(tmp_path / "out.json")))
    assert coco["categories"] == [{"id": 1, "name": "face", "supercategory": "face"}]
    assert [(im["id"], im["file_name"], im["width"], im["height"]) for im in coco["images"]] == [
        (1, "0--Parade/a.jpg", 120, 90),
        (2, "0--Parade/b.jpg", 64, 48),
        (3, "1--Handshaking/c.jpg", 100, 80),
    ]
    assert [(a["image_id"], a["bbox"]) for a in coco["annotations"]] == [
        (1, [10, 20, 30, 40]),
        (3, [1, 2, 3, 4]),
        (3, [90, 70, 10, 10]),
    ]
    assert all(a["iscrowd"] == 0 and a["category_id"] == 1 for a in coco["annotations"])
    info = coco["info"]
    assert (info["num_images"], info["num_boxes"], info["num_invalid"], info["num_zero_size"]) == (3, 3, 1, 1)
