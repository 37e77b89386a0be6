#!/usr/bin/env python
"""Ultralytics YOLO as a peer, run as it is: its own virtual environment and its own
``yolo`` command in a separate process (never imported by centerX, never one of its
dependencies), trained from scratch with its default recipe on the same COCO json
data as centerX, and scored with pycocotools on the same validation json.

    # once: YOLO's own environment, beside centerX's
    python3 -m venv .venv-yolo && .venv-yolo/bin/pip install ultralytics
    # the data in YOLO's layout, YOLO26n trained 24 epochs from scratch, its AP by pycocotools
    .venv/bin/python projects/benchmarks/yolo_peer.py --train-json datasets/photos/annotations/train.json \\
        --train-images datasets/photos/train --val-json datasets/photos/annotations/val.json \\
        --val-images datasets/photos/val --epochs 24 --imgsz 256 --output output/yolo_peer

Steps: ``convert`` writes the dataset in YOLO's layout under ``--output`` (images
linked, not copied, and named by their COCO image id; one label file per image with
``class cx cy w h`` normalised to the image; ``data.yaml``); ``train`` runs ``yolo
detect train model=<--model> pretrained=False`` (its defaults otherwise, CPU) and
times it; ``score`` runs ``yolo detect val save_json=True`` on the validation images
and scores its detections with pycocotools against ``--val-json`` (image ids from
the file names, classes mapped back to the json's category ids); ``export`` writes its
ONNX graph (``yolo export format=onnx``, batch 1 at ``--imgsz``) for
``projects/benchmarks/onnx_latency.py``. ``--steps`` picks some (default all).
``<--output>/result.json`` keeps what each step measured (the training's model,
epochs, image size, batch, seed and seconds; the AP), those of steps not run
again kept; ``projects/benchmarks/equal_time.py --yolo <--output>`` reads it. The
YOLO environment is ``--yolo-venv`` (default ``.venv-yolo``); without it, a clear
message says how to make it.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = ("convert", "train", "score", "export")
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-json", required=True)
    p.add_argument("--train-images", required=True, help="folder the train json's file_name entries are under")
    p.add_argument("--val-json", required=True)
    p.add_argument("--val-images", required=True)
    p.add_argument("--output", default=os.path.join(REPO, "output", "yolo_peer"))
    p.add_argument("--yolo-venv", default=os.path.join(REPO, ".venv-yolo"), help="YOLO's own virtual environment")
    p.add_argument("--model", default="yolo26n.yaml", help="the YOLO model definition, trained from scratch")
    p.add_argument("--epochs", type=int, default=24)
    p.add_argument("--imgsz", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    args = p.parse_args(argv)
    readers = {
        "train_json": ("convert",),
        "train_images": ("convert",),
        "val_json": ("convert", "score"),
        "val_images": ("convert",),
    }
    for name, steps in readers.items():  # what the steps asked read, checked before YOLO spends its time
        path = getattr(args, name)
        if set(steps) & set(args.steps) and not os.path.exists(path):
            p.error(f"--{name.replace('_', '-')} {path} does not exist (the {' and '.join(steps)} step reads it)")
    if args.epochs < 1 or args.imgsz < 32 or args.imgsz % 32 or args.batch < 1:
        p.error("--epochs and --batch must be at least 1, --imgsz a positive multiple of 32")
    return args


def category_order(coco: dict) -> list[dict]:
    """The json's categories by id: YOLO class k is the k-th."""
    return sorted(coco["categories"], key=lambda c: c["id"])


def yolo_labels(coco: dict) -> dict[int, list[str]]:
    """{image id: label lines ``class cx cy w h``, normalised to the image} of a COCO
    json (crowd and empty boxes left out)."""
    classes = {c["id"]: k for k, c in enumerate(category_order(coco))}
    sizes = {im["id"]: (im["width"], im["height"]) for im in coco["images"]}
    lines: dict[int, list[str]] = {im["id"]: [] for im in coco["images"]}
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        if a.get("iscrowd", 0) or w <= 0 or h <= 0:
            continue
        width, height = sizes[a["image_id"]]
        cx, cy = (x + w / 2) / width, (y + h / 2) / height
        lines[a["image_id"]].append(f"{classes[a['category_id']]} {cx:.6f} {cy:.6f} {w / width:.6f} {h / height:.6f}")
    return lines


def convert_split(json_file: str, image_root: str, out_root: str, split: str) -> int:
    """Write ``out_root/images/<split>/<image id><ext>`` (symbolic links to the images)
    and ``out_root/labels/<split>/<image id>.txt``; returns the number of images."""
    with open(json_file) as f:
        coco = json.load(f)
    labels = yolo_labels(coco)
    for kind in ("images", "labels"):
        shutil.rmtree(os.path.join(out_root, kind, split), ignore_errors=True)
        os.makedirs(os.path.join(out_root, kind, split))
    for im in coco["images"]:
        source = os.path.abspath(os.path.join(image_root, im["file_name"]))
        if not os.path.isfile(source):
            raise SystemExit(f"{json_file}: image {source} does not exist (check --{split}-images).")
        ext = os.path.splitext(im["file_name"])[1]
        os.symlink(source, os.path.join(out_root, "images", split, f"{im['id']}{ext}"))
        with open(os.path.join(out_root, "labels", split, f"{im['id']}.txt"), "w") as f:
            f.write("".join(line + "\n" for line in labels[im["id"]]))
    return len(coco["images"])


def convert(args) -> str:
    """The dataset in YOLO's layout; returns its data.yaml."""
    root = os.path.join(args.output, "data")
    counts = {
        "train": convert_split(args.train_json, args.train_images, root, "train"),
        "val": convert_split(args.val_json, args.val_images, root, "val"),
    }
    with open(args.val_json) as f:
        names = [c["name"] for c in category_order(json.load(f))]
    data = os.path.join(root, "data.yaml")
    with open(data, "w") as f:
        f.write(f"path: {os.path.abspath(root)}\ntrain: images/train\nval: images/val\nnames:\n")
        f.write("".join(f"  {k}: {json.dumps(n)}\n" for k, n in enumerate(names)))
    print(f"YOLO dataset: {counts['train']} train / {counts['val']} val images, {len(names)} classes -> {data}")
    return data


def yolo_command(venv: str) -> str:
    """The ``yolo`` executable of YOLO's own environment, or a SystemExit saying how to make it."""
    command = os.path.join(venv, "bin", "yolo")
    if not os.access(command, os.X_OK):
        raise SystemExit(
            f"No YOLO environment at {venv} (no {command}). YOLO runs from its own environment, never centerX's: "
            f"python3 -m venv {venv} && {venv}/bin/pip install ultralytics, or pass --yolo-venv PATH."
        )
    return command


def run_yolo(command: str, arguments: list[str], cwd: str) -> float:
    """Run ``yolo`` with ``key=value`` arguments in ``cwd``; returns its wall time in s."""
    start = time.perf_counter()
    result = subprocess.run([command, *arguments], cwd=cwd)
    if result.returncode:
        raise SystemExit(f"{command} {' '.join(arguments)} failed with exit code {result.returncode}.")
    return time.perf_counter() - start


def class_index_base(indices: list[int], num_classes: int) -> int:
    """Whether YOLO's category ids count classes from 0 or from 1: 0 when an id is 0,
    1 when one is ``num_classes``; anything else (out of range, or both) is refused.
    At YOLO's val threshold (conf 0.001) every class appears, so one of them does."""
    if not indices:
        return 0
    low, high = min(indices), max(indices)
    if low < 0 or high > num_classes or (low == 0 and high == num_classes):
        raise SystemExit(f"YOLO's category ids span {low}..{high}: not {num_classes} classes counted from 0 or 1.")
    if high == num_classes:
        return 1
    if low == 0:
        return 0
    raise SystemExit(
        f"YOLO's category ids span {low}..{high} of {num_classes} classes: cannot tell whether they count from 0 "
        "or 1 (score at a lower conf so that the first or last class appears)."
    )


def score(predictions_json: str, val_json: str) -> dict[str, float]:
    """COCO box metrics (percent) of YOLO's ``save_json`` detections (image_id: the
    image's file stem, our COCO image id; category_id: YOLO's class index, counted
    from 0 or, as Ultralytics 8.4 writes it for a dataset that is not COCO, from 1)
    against ``val_json``, classes mapped back to the json's category ids. A missing
    ``predictions_json`` is a SystemExit that names it."""
    if not os.path.isfile(predictions_json):
        raise SystemExit(
            f"YOLO's val wrote no detections file {predictions_json}: read its output above for why "
            "(an older ultralytics, or a val that stopped early), then run --steps score again."
        )
    gt = COCO(val_json)
    ids = [c["id"] for c in category_order(gt.dataset)]
    with open(predictions_json) as f:
        detections = json.load(f)
    first = class_index_base([int(d["category_id"]) for d in detections], len(ids))
    for d in detections:
        d["image_id"] = int(d["image_id"])
        d["category_id"] = ids[int(d["category_id"]) - first]
    if not detections:
        return dict.fromkeys(METRICS, 0.0)
    evaluation = COCOeval(gt, gt.loadRes(detections), "bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    return {m: 100 * float(v) for m, v in zip(METRICS, evaluation.stats[:6])}


def main(argv=None) -> dict:
    args = parse_args(argv)
    # yolo runs in --output, so every path it is given must not depend on our working directory
    args.output, args.yolo_venv = os.path.abspath(args.output), os.path.abspath(args.yolo_venv)
    os.makedirs(args.output, exist_ok=True)
    data = os.path.join(args.output, "data", "data.yaml")
    path = os.path.join(args.output, "result.json")
    result = {}
    if os.path.exists(path):  # what the steps not run now measured before
        with open(path) as f:
            result = json.load(f)

    def save():  # after every step: a later step's failure keeps what the earlier ones measured
        with open(path, "w") as f:
            json.dump(result, f, indent=1)

    if "convert" in args.steps:
        data = convert(args)
    runs = os.path.join(args.output, "runs")
    weights = os.path.join(runs, "train", "weights", "best.pt")
    if "train" in args.steps:
        command = yolo_command(args.yolo_venv)
        result.update(model=args.model, epochs=args.epochs, imgsz=args.imgsz, batch=args.batch, seed=args.seed)
        result["train_s"] = run_yolo(
            command,
            ["detect", "train", f"model={args.model}", f"data={data}", f"epochs={args.epochs}",
             f"imgsz={args.imgsz}", f"batch={args.batch}", "pretrained=False", "device=cpu",
             f"seed={args.seed}", f"project={runs}", "name=train", "exist_ok=True"],
            args.output,
        )  # fmt: skip
        save()
    if "score" in args.steps:
        command = yolo_command(args.yolo_venv)
        run_yolo(
            command,
            ["detect", "val", f"model={weights}", f"data={data}", f"imgsz={args.imgsz}", "save_json=True",
             "conf=0.001", "device=cpu", f"project={runs}", "name=val", "exist_ok=True"],
            args.output,
        )  # fmt: skip
        result.update(score(os.path.join(runs, "val", "predictions.json"), args.val_json))
        save()
    if "export" in args.steps:
        command = yolo_command(args.yolo_venv)
        run_yolo(command, ["export", f"model={weights}", "format=onnx", f"imgsz={args.imgsz}", "batch=1"], args.output)
        result["onnx"] = os.path.splitext(weights)[0] + ".onnx"
    print(json.dumps(result, indent=1))
    save()
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
