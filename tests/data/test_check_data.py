"""./run.sh check-data: box statistics against a hand-worked image, and the script's files."""

import json
import os

import numpy as np
import pytest
from detectron2.structures import BoxMode

import centerx
from centerx.data.statistics import box_statistics

from project_scripts import load_script

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# one 100 x 100 image at TRAIN_SIZE 100 (scale 1), stride 4:
BOXES = {
    "a": (0, 0, 40, 40),  # 10 x 10 cells: CenterNet radius 2, TTFNet alpha * 10 / 2 = 2.7 cells
    "b": (50, 50, 54, 54),  # 1 x 1 cell: radius 0, single cell
    "c": (60, 60, 60, 70),  # zero width: degenerate
    "d": (90, 90, 110, 100),  # past the right edge: outside; 5 x 2.5 cells, alpha * 5 / 2 = 1.35
    "e": (10, 10, 11, 11),  # 1 px: under MIN_BOX_SIZE 2 (tiny), radius 0, single cell
}
DICTS = [
    {
        "file_name": "x.jpg",
        "width": 100,
        "height": 100,
        "annotations": [
            {"bbox": list(b), "bbox_mode": BoxMode.XYXY_ABS, "category_id": i % 2} for i, b in enumerate(BOXES.values())
        ],
    }
]


def cfg_for(arch):
    cfg = centerx.get_centerx_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "shapes", f"{arch}_r18_demo.yaml"))
    cfg.merge_from_list(
        [
            "INPUT.TRAIN_SIZE",
            100,
            "INPUT.MIN_BOX_SIZE",
            2.0,
            "MODEL.CENTERNET.MAX_OBJECTS",
            3,
            "MODEL.CENTERNET.RADIUS_MODE",
            "original",
            "MODEL.CENTERNET.MIN_OVERLAP",
            0.7,
            "MODEL.TTFNET.ALPHA",
            0.54,
        ]
    )
    return cfg


@pytest.mark.parametrize(
    "arch,expected",
    [
        # over MAX_OBJECTS 3: the two smallest (c: area 0, e: 1 px)
        ("centernet", {"degenerate": 1, "outside": 1, "tiny": 1, "radius_0": 2, "over_max_objects": 2}),
        ("ttfnet", {"degenerate": 1, "outside": 1, "tiny": 1, "single_cell": 2}),
    ],
)
def test_flags_of_a_hand_worked_image(arch, expected):
    stats = box_statistics("t", DICTS, ["cat", "dog"], cfg_for(arch), stride=4)
    assert stats.flags == expected
    assert stats.per_class == {"cat": 3, "dog": 2}
    np.testing.assert_allclose(stats.widths_cells, [10, 1, 0, 5, 0.25])
    # max(w, h) in cells: 10, 1, 2.5, 5, 0.25 -> bins <1, <2, <4, <8, <16
    assert stats.size_histogram()[:5] == [1, 1, 1, 1, 1]
    assert stats.objects_per_image.tolist() == [5]


def test_script_writes_stats_histograms_and_images(tiny_shapes, tmp_path):
    cli = load_script("data", "check_data")
    name, json_file = tiny_shapes
    with open(json_file) as f:
        coco = json.load(f)
    assert (
        cli.main(
            [
                "--config-file",
                os.path.join(REPO, "configs", "shapes", "ttfnet_r18_demo.yaml"),
                "--datasets",
                name,
                "--images",
                "3",
                "OUTPUT_DIR",
                str(tmp_path),
            ]
        )
        == 0
    )
    folder = tmp_path / "check_data" / name
    stats = json.loads((folder / "stats.json").read_text())
    assert stats["images"] == len(coco["images"]) and stats["objects"] == len(coco["annotations"])
    assert sum(stats["size_histogram"].values()) == stats["objects"]
    assert (folder / "histograms.png").stat().st_size > 1000
    assert len(os.listdir(folder / "images")) == 3
