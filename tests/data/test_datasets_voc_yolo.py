"""Pascal VOC and YOLO txt datasets registered from the config: the same boxes
written by hand in COCO json, VOC xml and YOLO txt give the same dataset dicts;
bad files are skipped and counted, or stop loading naming the file and line."""

import json
import logging
import os

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

import centerx
from centerx.data.validation import DatasetError

CLASSES = ["cat", "dog", "fox"]
# per image: (id, width, height, [(class index, x1, y1, x2, y2) in 0-based pixels])
IMAGES = [
    ("a", 64, 48, [(0, 4.0, 6.0, 30.0, 40.0), (2, 33.0, 10.0, 60.0, 22.0)]),
    ("b", 40, 80, [(1, 0.0, 0.0, 40.0, 80.0)]),
    ("c", 50, 50, []),
]


def write_images(folder):
    os.makedirs(folder, exist_ok=True)
    for file_id, w, h, _ in IMAGES:
        cv2.imwrite(os.path.join(folder, f"{file_id}.jpg"), np.full((h, w, 3), 128, np.uint8))


def write_coco(root):
    write_images(root / "coco")
    images = [{"id": i + 1, "file_name": f"{f}.jpg", "width": w, "height": h} for i, (f, w, h, _) in enumerate(IMAGES)]
    anns = [
        {
            "image_id": i + 1,
            "category_id": c + 1,
            "bbox": [x1, y1, x2 - x1, y2 - y1],
            "area": (x2 - x1) * (y2 - y1),
            "iscrowd": 0,
        }
        for i, (_, _, _, objs) in enumerate(IMAGES)
        for c, x1, y1, x2, y2 in objs
    ]
    for k, ann in enumerate(anns):
        ann["id"] = k + 1
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)]
    (root / "coco.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return str(root / "coco.json"), str(root / "coco")


def write_voc(root):
    """VOC counts pixels from 1: xmin = x1 + 1, ymin = y1 + 1."""
    write_images(root / "voc" / "JPEGImages")
    os.makedirs(root / "voc" / "Annotations")
    os.makedirs(root / "voc" / "ImageSets" / "Main")
    for file_id, w, h, objs in IMAGES:
        objects = "".join(
            f"<object><name>{CLASSES[c]}</name><difficult>0</difficult><bndbox><xmin>{x1 + 1:g}</xmin>"
            f"<ymin>{y1 + 1:g}</ymin><xmax>{x2:g}</xmax><ymax>{y2:g}</ymax></bndbox></object>"
            for c, x1, y1, x2, y2 in objs
        )
        (root / "voc" / "Annotations" / f"{file_id}.xml").write_text(
            f"<annotation><filename>{file_id}.jpg</filename><size><width>{w}</width><height>{h}</height>"
            f"<depth>3</depth></size>{objects}</annotation>"
        )
    (root / "voc" / "ImageSets" / "Main" / "train.txt").write_text("".join(f"{f}\n" for f, *_ in IMAGES))
    return str(root / "voc")


def write_yolo(root, label_lines=None):
    write_images(root / "yolo" / "images")
    os.makedirs(root / "yolo" / "labels", exist_ok=True)
    for file_id, w, h, objs in IMAGES:
        if not objs:
            continue  # YOLO: an image without a label file has no objects
        lines = [
            f"{c} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"
            for c, x1, y1, x2, y2 in objs
        ]
        (root / "yolo" / "labels" / f"{file_id}.txt").write_text("\n".join(lines) + "\n")
    (root / "yolo" / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return str(root / "yolo" / "images"), str(root / "yolo" / "labels"), str(root / "yolo" / "classes.txt")


def canonical(name):
    """(stem, width, height, sorted [(class, x1, y1, x2, y2)]) per image, and the class names."""
    out = []
    for d in DatasetCatalog.get(name):
        objs = []
        for a in d["annotations"]:
            box = BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS)
            objs.append((a["category_id"], *(round(v, 3) for v in box)))
        out.append((os.path.splitext(os.path.basename(d["file_name"]))[0], d["width"], d["height"], sorted(objs)))
    return sorted(out), MetadataCatalog.get(name).thing_classes


def register(cfg_lists):
    cfg = centerx.get_centerx_cfg()
    cfg.merge_from_list(cfg_lists)
    centerx.register_config_datasets(cfg)


def test_same_boxes_give_the_same_dicts_in_coco_voc_and_yolo(tmp_path):
    coco_json, coco_images = write_coco(tmp_path)
    voc = write_voc(tmp_path)
    images, labels, names = write_yolo(tmp_path)
    register(
        [
            "DATASETS.COCO_JSON",
            [("t_coco", coco_json, coco_images)],
            "DATASETS.PASCAL_VOC",
            [("t_voc_named", voc, "train", tuple(CLASSES)), ("t_voc_read", voc, "train")],
            "DATASETS.YOLO",
            [("t_yolo", images, labels, names), ("t_yolo_list", images, labels, tuple(CLASSES))],
        ]
    )
    expected = (sorted((f, w, h, sorted(objs)) for f, w, h, objs in IMAGES), CLASSES)
    for name in ("t_coco", "t_voc_named", "t_voc_read", "t_yolo", "t_yolo_list"):
        assert canonical(name) == expected, name


def test_yaml_names_file_and_nested_folders(tmp_path):
    images, labels, _ = write_yolo(tmp_path)
    os.makedirs(os.path.join(images, "sub"))
    os.makedirs(os.path.join(labels, "sub"))
    cv2.imwrite(os.path.join(images, "sub", "d.png"), np.zeros((10, 20, 3), np.uint8))
    with open(os.path.join(labels, "sub", "d.txt"), "w") as f:
        f.write("2 0.5 0.5 0.5 1.0\n")
    (tmp_path / "data.yaml").write_text("names:\n  0: cat\n  1: dog\n  2: fox\n")
    register(["DATASETS.YOLO", [("t_yolo_yaml", images, labels, str(tmp_path / "data.yaml"))]])
    dicts, classes = canonical("t_yolo_yaml")
    assert classes == CLASSES
    assert ("d", 20, 10, [(2, 5.0, 0.0, 15.0, 10.0)]) in dicts


@pytest.mark.parametrize(
    "line,match",
    [
        ("1 0.5 0.5 0.2", "line 3: '1 0.5 0.5 0.2' is not 'class cx cy w h'"),
        ("x 0.5 0.5 0.2 0.2", "line 3: 'x 0.5 0.5 0.2 0.2' is not 'class cx cy w h'"),
        ("3 0.5 0.5 0.2 0.2", "line 3: class 3 is not in 0..2"),
        ("0 12 20 4 4", "line 3: '0 12 20 4 4' is not normalised to \\[0, 1\\]"),
    ],
)
def test_bad_yolo_line_names_the_file_and_line(tmp_path, line, match):
    images, labels, names = write_yolo(tmp_path)
    with open(os.path.join(labels, "a.txt"), "a") as f:
        f.write(line + "\n")
    name = f"t_yolo_bad_{tmp_path.name}"
    register(["DATASETS.YOLO", [(name, images, labels, names)]])
    with pytest.raises(DatasetError, match=f"a.txt {match}"):
        DatasetCatalog.get(name)


def test_bad_voc_files_are_skipped_and_counted_or_named(tmp_path, caplog):
    voc = write_voc(tmp_path)
    (tmp_path / "voc" / "Annotations" / "b.xml").write_text("<annotation><size>")  # truncated
    os.remove(tmp_path / "voc" / "Annotations" / "c.xml")
    register(["DATASETS.PASCAL_VOC", [("t_voc_broken", voc, "train", tuple(CLASSES))]])
    with caplog.at_level(logging.WARNING, logger="centerx"):
        dicts = DatasetCatalog.get("t_voc_broken")
    assert [d["image_id"] for d in dicts] == ["a"]
    assert "2 missing or unparsable annotation files skipped" in caplog.text
    register(["DATASETS.PASCAL_VOC", [("t_voc_two_classes", voc, "train", ("cat", "dog"))]])
    with pytest.raises(DatasetError, match="a.xml: object of class 'fox', not one of the class names"):
        DatasetCatalog.get("t_voc_two_classes")


def test_bad_entries_and_name_clashes_are_refused(tmp_path):
    voc = write_voc(tmp_path)
    with pytest.raises(ValueError, match=r"DATASETS.PASCAL_VOC\[0\] must be \(name, folder, split\)"):
        register(["DATASETS.PASCAL_VOC", [("only_name",)]])
    with pytest.raises(ValueError, match=r"DATASETS.YOLO\[0\] must be"):
        register(["DATASETS.YOLO", [("n", "images", "labels")]])
    register(["DATASETS.PASCAL_VOC", [("t_voc_twice", voc, "train")]])
    register(["DATASETS.PASCAL_VOC", [("t_voc_twice", voc, "train")]])  # the same entry again: harmless
    with pytest.raises(ValueError, match="'t_voc_twice' is already registered"):
        register(["DATASETS.PASCAL_VOC", [("t_voc_twice", voc, "val")]])
    with pytest.raises(FileNotFoundError, match="ImageSets/Main/val.txt' does not exist"):
        register(["DATASETS.PASCAL_VOC", [("t_voc_val", voc, "val")]])
        DatasetCatalog.get("t_voc_val")


# --------------------------------------------------------------------------- #
# every format through the same checks as COCO json
# --------------------------------------------------------------------------- #
def _cfg_for(train, test, num_classes=3):
    cfg = centerx.get_centerx_cfg()
    cfg.merge_from_file(
        os.path.join(
            os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
            "configs",
            "shapes",
            "centernet_r18_demo.yaml",
        )
    )
    cfg.merge_from_list(
        [
            "DATASETS.TRAIN",
            f"('{train}',)",
            "DATASETS.TEST",
            f"('{test}',)" if test else "()",
            "MODEL.CENTERNET.NUM_CLASSES",
            str(num_classes),
            "DATASETS.CHECK_IMAGES",
            "0",
        ]
    )
    return cfg


def _voc_box(tmp_path, file_id, xmin, ymin, xmax, ymax):
    """Replace the first object's bndbox of ``file_id``.xml with the given VOC values."""
    path = tmp_path / "voc" / "Annotations" / f"{file_id}.xml"
    text = path.read_text()
    start, end = text.index("<bndbox>"), text.index("</bndbox>") + len("</bndbox>")
    path.write_text(
        text[:start] + f"<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax>"
        f"<ymax>{ymax}</ymax></bndbox>" + text[end:]
    )


def test_voc_and_yolo_boxes_are_counted_and_skipped_as_coco_boxes_are(tmp_path):
    """VOC xmin > xmax and xmax inf, YOLO w < 0 and w nan: the validation counts
    them under the same reasons as a COCO box of negative width / NaN, and the
    training mapper drops exactly those (it used to train the swapped box and the
    infinite one clipped to the image edge)."""
    from centerx.data.mapper import CenterNetDatasetMapper
    from centerx.data.validation import validate_datasets

    voc = write_voc(tmp_path)
    _voc_box(tmp_path, "a", 31, 7, 5, 40)  # xmin > xmax: width 5 - 30 < 0
    _voc_box(tmp_path, "b", 1, 1, "inf", 80)
    name = f"t_voc_boxes_{tmp_path.name}"
    register(["DATASETS.PASCAL_VOC", [(name, voc, "train", tuple(CLASSES))]])
    (report,) = validate_datasets(_cfg_for(name, None), names=[name])
    assert report.invalid_boxes == {"non-positive size": 1, "not finite": 1}

    images, labels, names = write_yolo(tmp_path)
    with open(os.path.join(labels, "a.txt"), "a") as f:
        f.write("0 0.5 0.5 -0.2 0.2\n1 nan 0.5 0.2 0.2\n")
    yolo = f"t_yolo_boxes_{tmp_path.name}"
    register(["DATASETS.YOLO", [(yolo, images, labels, names)]])
    (report,) = validate_datasets(_cfg_for(yolo, None), names=[yolo])
    assert report.invalid_boxes == {"non-positive size": 1, "not finite": 1}

    cfg = _cfg_for(name, None)
    cfg.merge_from_list(["INPUT.TRAIN_SIZE", "64", "INPUT.SCALE_RANGE", "(1.0, 1.0)", "INPUT.HFLIP_PROB", "0.0"])
    mapper = CenterNetDatasetMapper(cfg)
    by_id = {d["image_id"]: d for d in DatasetCatalog.get(name)}
    assert len(mapper(dict(by_id["a"]))["instances"]) == 1  # the swapped box skipped, the fox kept
    assert len(mapper(dict(by_id["b"]))["instances"]) == 0  # the infinite box skipped, not clipped
    assert mapper.num_invalid_boxes == {"non-positive size": 1, "not finite": 1}


def test_train_and_test_classes_are_compared_by_name(tmp_path):
    """VOC train (cat, dog, fox) vs val (cat, dog, wolf), class names read from each
    set's own annotations: same count, another class 2."""
    from centerx.data.validation import validate_datasets

    voc = write_voc(tmp_path)
    (tmp_path / "other").mkdir()
    other = write_voc(tmp_path / "other")
    xml = tmp_path / "other" / "voc" / "Annotations" / "a.xml"
    xml.write_text(xml.read_text().replace("<name>fox</name>", "<name>wolf</name>"))
    train, val = f"t_voc_tr_{tmp_path.name}", f"t_voc_va_{tmp_path.name}"
    register(["DATASETS.PASCAL_VOC", [(train, voc, "train"), (val, other, "train")]])
    with pytest.raises(DatasetError, match="class 2 is 'fox' in the first and 'wolf' in the second"):
        validate_datasets(_cfg_for(train, val))
    cfg = _cfg_for(train, train)
    cfg.merge_from_list(["MODEL.CENTERX.CLASS_NAMES", "('cat', 'fox', 'dog')"])
    with pytest.raises(DatasetError, match="MODEL.CENTERX.CLASS_NAMES and dataset .* class 1 is 'fox'"):
        validate_datasets(cfg)


def test_yolo_names_dict_is_ordered_by_its_integer_keys(tmp_path):
    """Ultralytics' data.yaml with quoted keys: '10' comes after '2', not after '1'."""
    from centerx.data.datasets.voc_yolo import read_class_names

    names = {str(i): f"c{i}" for i in range(12)}
    text = "names:\n" + "".join(f"  '{k}': {v}\n" for k, v in sorted(names.items()))  # string order: 0 1 10 11 2
    (tmp_path / "data.yaml").write_text(text)
    assert read_class_names(str(tmp_path / "data.yaml"), "w") == [f"c{i}" for i in range(12)]
    (tmp_path / "gap.yaml").write_text("names:\n  0: a\n  2: b\n")
    with pytest.raises(DatasetError, match=r"must be 0..1, each once; got \[0, 2\]"):
        read_class_names(str(tmp_path / "gap.yaml"), "w")


def test_text_files_are_utf8_with_a_bom_accepted_and_other_bytes_named(tmp_path):
    from centerx.text_files import TextFileError

    images, labels, names = write_yolo(tmp_path)
    with open(os.path.join(labels, "a.txt"), "rb") as f:
        body = f.read()
    with open(os.path.join(labels, "a.txt"), "wb") as f:
        f.write(b"\xef\xbb\xbf" + body)  # a BOM: read as the same labels
    with open(names, "wb") as f:
        f.write(b"\xef\xbb\xbfcat\ndog\nfox\n")
    bom = f"t_yolo_bom_{tmp_path.name}"
    register(["DATASETS.YOLO", [(bom, images, labels, names)]])
    assert canonical(bom) == (sorted((f, w, h, sorted(objs)) for f, w, h, objs in IMAGES), CLASSES)
    with open(os.path.join(labels, "b.txt"), "wb") as f:
        f.write(b"1 0.5 0.5 1.0 1.0\n0 0.5 0.5 0.1 0.1 \xe9\n")
    latin = f"t_yolo_latin_{tmp_path.name}"
    register(["DATASETS.YOLO", [(latin, images, labels, names)]])
    with pytest.raises(TextFileError, match=r"YOLO label file '.*b.txt' is not UTF-8 text: byte 0xe9 at line 2"):
        DatasetCatalog.get(latin)


def test_a_test_set_without_labels_is_refused_before_training(tmp_path):
    """YOLO images whose label files match none of them: refused by the validation
    that runs before the first iteration, not found out when the evaluation ends."""
    from centerx.data.validation import validate_datasets

    images, labels, names = write_yolo(tmp_path)
    for f in os.listdir(labels):
        os.rename(os.path.join(labels, f), os.path.join(labels, "x" + f))  # names that match no image
    name = f"t_yolo_unlabelled_{tmp_path.name}"
    register(["DATASETS.YOLO", [(name, images, labels, names)]])
    with pytest.raises(DatasetError, match="is a test set .* with 3 images and no annotation"):
        validate_datasets(_cfg_for(name, name))


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["voc", "yolo"])
def test_the_own_data_recipe_trains_and_reports_ap_on_voc_and_yolo(fmt, tmp_path):
    """docs/training.md's VOC and YOLO commands with configs/own_data/ttfnet_r18.yaml, shrunk
    (64 px, one epoch): train_net trains, evaluates on the validation split and writes AP."""
    import train_net

    if fmt == "voc":
        root = write_voc(tmp_path)
        (tmp_path / "voc" / "ImageSets" / "Main" / "val.txt").write_text("a\nb\n")
        data = [
            "DATASETS.PASCAL_VOC",
            f"[('r_voc_train', '{root}', 'train', {tuple(CLASSES)}), ('r_voc_val', '{root}', 'val', {tuple(CLASSES)})]",
        ]
        names = ("r_voc_train", "r_voc_val")
    else:
        images, labels, names_file = write_yolo(tmp_path)
        data = [
            "DATASETS.YOLO",
            f"[('r_yolo_train', '{images}', '{labels}', '{names_file}'), "
            f"('r_yolo_val', '{images}', '{labels}', '{names_file}')]",
        ]
        names = ("r_yolo_train", "r_yolo_val")
    out = tmp_path / "out"
    args = train_net.argument_parser().parse_args(
        [
            "--config-file",
            os.path.join(
                os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                "configs",
                "own_data",
                "ttfnet_r18.yaml",
            ),
            *data,
            "DATASETS.TRAIN",
            f"('{names[0]}',)",
            "DATASETS.TEST",
            f"('{names[1]}',)",
            "MODEL.TTFNET.NUM_CLASSES",
            "3",
            "OUTPUT_DIR",
            str(out),
            "MODEL.DEVICE",
            "cpu",
            "SOLVER.IMS_PER_BATCH",
            "2",
            "SOLVER.EPOCHS",
            "1",
            "INPUT.TRAIN_SIZE",
            "64",
            "INPUT.MIN_SIZE_TEST",
            "64",
            "INPUT.MAX_SIZE_TEST",
            "64",
            "SOLVER.WARMUP_ITERS",
            "0",
            "TEST.VIS_IMAGES",
            "0",
        ]
    )
    train_net.main(args)
    with open(out / "metrics.json") as f:
        records = [json.loads(line) for line in f]
    assert any("bbox/AP" in r for r in records)
    saved = centerx.get_centerx_cfg()
    saved.merge_from_file(str(out / "config.yaml"))
    assert saved.SOLVER.MAX_ITER == 2  # ceil(1 epoch x 3 images / batch 2)
    assert tuple(saved.MODEL.CENTERX.CLASS_NAMES) == tuple(CLASSES)
