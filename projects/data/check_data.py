#!/usr/bin/env python
"""Look at a dataset as a CenterNet-family detector will see it, before training on it.

    ./run.sh check-data                                      # the demo config's train and test datasets
    ./run.sh check-data --config-file CFG --datasets mine_train --images 16 DATASETS.YOLO "[...]"

For each dataset (default: the config's DATASETS.TRAIN and DATASETS.TEST, any
registered name, including DATASETS.COCO_JSON / PASCAL_VOC / YOLO entries),
prints and writes to ``--output`` (default OUTPUT_DIR/check_data/<dataset>):

- ``stats.json``: images, objects, objects per image, per class, box sizes in
  output cells at the training scale, and the boxes the targets treat
  specially (centerx/data/statistics.py: degenerate, outside the image, tiny,
  CenterNet radius 0 and over MAX_OBJECTS, TTFNet single-cell), with examples;
- ``histograms.png``: box sizes in cells and objects per image;
- ``images/``: ``--images`` images, evenly spread, with their ground truth drawn;
- the number of image files that do not exist (printed with examples, and in
  ``stats.json`` as ``missing_image_files``).

So "my AP is low" can be answered by looking: boxes of one or two cells, a class
with ten objects, images with hundreds of objects, boxes off the image.
"""

import argparse
import json
import os
import re
import sys

import cv2
import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model
from detectron2.utils.logger import setup_logger
from detectron2.utils.visualizer import Visualizer
from tqdm import tqdm

import centerx
from centerx.config import exit_on_config_error, load_config
from centerx.data.datasets import ensure_datasets
from centerx.data.image_io import read_image
from centerx.data.statistics import CELL_BINS, box_statistics
from centerx.plugins import PluginImportError, add_imports_argument

CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)*$")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--datasets", nargs="+", help="registered dataset names (default DATASETS.TRAIN + TEST)")
    p.add_argument("--images", type=int, default=8, help="images to draw with their ground truth per dataset")
    p.add_argument("--output", metavar="DIR", help="default OUTPUT_DIR/check_data")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE pairs")
    add_imports_argument(p)
    args = p.parse_args(argv)
    if args.datasets:  # --datasets a b KEY VALUE: the names stop at the first config key
        keys = [i for i, token in enumerate(args.datasets) if CONFIG_KEY.match(token)]
        if keys:
            args.datasets, args.opts = args.datasets[: keys[0]], args.datasets[keys[0] :] + args.opts
    if args.images < 0:
        p.error(f"--images must be 0 (statistics only) or more, got {args.images}")
    return args


def plot_histograms(stats, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    labels = [f"<{int(e)}" if e != float("inf") else f">={int(CELL_BINS[-2])}" for e in CELL_BINS]
    a.bar(range(len(CELL_BINS)), stats.size_histogram(), tick_label=labels, color="#4878cf")
    a.set_xlabel("box size, max(w, h) in output cells (training scale)")
    a.set_ylabel("objects")
    per_image = stats.objects_per_image
    top = int(per_image.max(initial=0))
    bins = np.arange(-0.5, top + 1.5) if top < 60 else 40  # one bar per count while they fit
    b.hist(per_image, bins=bins, color="#6acc65", rwidth=0.9)
    b.set_xlabel("objects per image")
    b.set_ylabel("images")
    fig.suptitle(f"{stats.name}: {stats.images} images, {stats.objects} objects")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def draw_examples(name: str, dicts, count: int, folder: str) -> int:
    os.makedirs(folder, exist_ok=True)
    picks = (
        np.unique(np.linspace(0, len(dicts) - 1, num=min(count, len(dicts))).round().astype(int))
        if dicts and count > 0
        else []
    )
    written = 0
    for i in tqdm(picks, desc=f"drawing {name}", disable=len(picks) < 20):
        d = dicts[i]
        try:
            image = read_image(d["file_name"], format="RGB")
        except (OSError, ValueError):
            continue
        vis = Visualizer(image, MetadataCatalog.get(name)).draw_dataset_dict(d)
        out = os.path.join(folder, f"{i:06d}_{os.path.basename(d['file_name'])}")
        cv2.imwrite(os.path.splitext(out)[0] + ".jpg", vis.get_image()[:, :, ::-1])
        written += 1
    return written


@exit_on_config_error
def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logger(name="centerx")
    try:
        cfg = load_config(args.config_file, args.opts, args.imports)
    except PluginImportError as e:
        raise SystemExit(str(e)) from None
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"--config-file {args.config_file}: {e}") from None
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.CENTERX.BACKBONE_WEIGHTS = ""
    cfg.freeze()
    centerx.register_config_datasets(cfg)
    names = args.datasets or list(dict.fromkeys(list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)))
    ensure_datasets(names)
    stride = build_model(cfg).stride
    out_root = args.output or os.path.join(cfg.OUTPUT_DIR, "check_data")
    for name in names:
        if name not in DatasetCatalog.list():
            raise SystemExit(f"Dataset '{name}' is not registered; registered: {sorted(DatasetCatalog.list())}.")
        dicts = DatasetCatalog.get(name)
        stats = box_statistics(name, dicts, MetadataCatalog.get(name).get("thing_classes"), cfg, stride)
        folder = os.path.join(out_root, name)
        os.makedirs(folder, exist_ok=True)
        summary = dict(
            stats.summary(),
            examples=stats.examples,
            size_histogram=dict(zip([str(e) for e in CELL_BINS], stats.size_histogram())),
            stride=stride,
            train_size=cfg.INPUT.TRAIN_SIZE,
        )
        missing = [d["file_name"] for d in dicts if not os.path.isfile(d["file_name"])]
        summary["missing_image_files"] = len(missing)
        with open(os.path.join(folder, "stats.json"), "w") as f:
            json.dump(summary, f, indent=1)
        plot_histograms(stats, os.path.join(folder, "histograms.png"))
        drawn = draw_examples(name, dicts, args.images, os.path.join(folder, "images"))
        print(f"\n== {name}")
        for key, value in stats.summary().items():
            if key != "dataset":
                print(f"  {key}: {value}")
        for flag, examples in stats.examples.items():
            for example in examples:
                print(f"    {flag}: {example}")
        if missing:
            print(
                f"  missing image files: {len(missing)} of {len(dicts)} (e.g. {', '.join(missing[:3])}); training "
                "and evaluation skip them, and count them"
            )
        print(f"  written: {folder}/stats.json, histograms.png, {drawn} images in images/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
