#!/usr/bin/env python
"""Detect objects in an image, a folder of images, a video or a camera stream, on any
runtime, and draw them and / or save them as COCO results.

    ./run.sh predict --input photo.jpg --output vis/ MODEL.WEIGHTS output/ttfnet_r18_demo/model_final.pth
    ./run.sh predict --input images/ --output vis/ --batch 8 --save-json dets.json MODEL.WEIGHTS ...
    ./run.sh predict --input clip.mp4 --output vis/ --heatmap MODEL.WEIGHTS ... MODEL.DEVICE cuda
    ./run.sh predict --input 0 --output vis/ --max-frames 300 MODEL.WEIGHTS ...          # camera 0
    ./run.sh predict --model deploy/model.onnx --input images/ --output vis/        # nothing else needed

``--model`` runs an exported file (model.onnx, model_int8.onnx, model.xml,
model.ts, model.prototxt, model_fp32.engine) with the config saved in it: no
``--config-file``, no checkpoint (``--config-file`` still overrides it, for a file
exported before centerX saved one). The runtime is the one that reads the file's
ending (ONNX Runtime for .onnx, OpenVINO for .xml, TorchScript for .ts, ...)
unless ``--runtime`` names another (any registered runtime; ``./run.sh help``
lists them); without ``--model``, PyTorch runs the checkpoint MODEL.WEIGHTS of
``--config-file``. The runtime used is logged. Every runtime, PyTorch included, is
the registered one (centerx.deploy.runtimes): images are letterboxed to
EXPORT.INPUT_SIZE, run, decoded and mapped back to their own pixels the same way,
so ``--runtime pytorch`` and an exported file agree (within the format's
tolerance) and ``./run.sh evaluate`` scores what predict shows (PyTorch loads
MODEL.WEIGHTS strictly, the EMA weights with MODEL_EMA.USE_FOR_EVAL). Images go
through in batches of ``--batch``, each letterboxed on its own canvas.

Outputs: with ``--output``, images are written as OUTPUT/<file name>, a video or
camera stream as OUTPUT/<stem>.mp4 (or .avi where OpenCV cannot write mp4) at the
input's frame size and rate, detections scoring above --confidence-threshold
drawn with their class names (MODEL.CENTERX.CLASS_NAMES, which training saves
with the run, else DATASETS.TEST[0]'s); ``--heatmap`` (pytorch)
blends the highest class score of every cell under the boxes. ``--save-json``
writes every detection above the threshold in COCO results format (image_id:
the image's index in the sorted input, or the frame index; category_id: the
dataset's own id when its metadata maps ids, else the class index; bbox: x, y,
w, h in the image's pixels; plus file_name). A progress bar runs over folders
and videos. Exit code 1 when no input image could be read, 2 for a bad command line;
the command line is checked before any image is read (outputs writable, --model
present and of the runtime's kind, its class count against the config's).
"""

import argparse
import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, Instances
from detectron2.utils.logger import setup_logger
from tqdm import tqdm

import centerx
from centerx.checkpoint import WEIGHTS_ERRORS
from centerx.config import exit_on_config_error
from centerx.data.datasets import ensure_datasets
from centerx.data.validation import model_num_classes
from centerx.deploy.model_info import load_model_config, saved_config_text
from centerx.deploy.runtimes import build_runtime, runtime_for_file, runtime_names
from centerx.engine.visualization import draw_detections
from centerx.plugins import add_imports_argument, preimport

logger = logging.getLogger("centerx.predict")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv")
# (FourCC, file extension) tried in order for the output video
VIDEO_CODECS = (("mp4v", ".mp4"), ("MJPG", ".avi"))
# Frame rate written when the input video does not report a usable one.
FALLBACK_FPS = 30.0


@dataclass
class Summary:
    """What one run did. Counts are of files (images) and of frames (video)."""

    images_written: int = 0
    images_skipped: int = 0
    frames_written: int = 0
    detections: int = 0
    seconds: float = 0.0


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    preimport(argv, saved_config_text)  # a user's module may register runtimes
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--config-file",
        metavar="FILE",
        help="the model's config (needed for a checkpoint; an exported --model carries its own)",
    )
    parser.add_argument(
        "--input",
        required=True,
        metavar="PATH",
        help=f"an image ({', '.join(IMAGE_EXTENSIONS)}), a folder of such images (not recursive), "
        f"a video ({', '.join(VIDEO_EXTENSIONS)}) or a camera index (0, 1, ...)",
    )
    parser.add_argument("--output", metavar="DIR", help="folder for the drawn images / video")
    parser.add_argument("--save-json", metavar="FILE", help="write the detections in COCO results format")
    parser.add_argument(
        "--runtime",
        choices=runtime_names(),
        help="where the model runs (default: the runtime of --model's file ending, else pytorch)",
    )
    parser.add_argument("--model", default="", metavar="FILE", help="an exported file (every runtime but pytorch)")
    parser.add_argument("--batch", type=int, default=1, help="images (or frames) per forward pass")
    parser.add_argument(
        "--confidence-threshold",
        type=float,
        default=0.3,
        metavar="SCORE",
        help="keep only detections scoring above this (default: 0.3)",
    )
    parser.add_argument(
        "--heatmap",
        action="store_true",
        help="pytorch: blend the highest class score of each cell into the drawn images",
    )
    parser.add_argument(
        "--max-frames", type=int, default=0, help="stop a video or camera after this many frames (0: at its end)"
    )
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE pairs, MODEL.WEIGHTS included"
    )
    add_imports_argument(parser)
    args = parser.parse_args(argv)
    late = [token for token in args.opts if token.startswith("--")]
    if late:
        parser.error(f"{late[0]} came after the KEY VALUE overrides; put every --flag before them")
    return parser, args


def setup_cfg(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """Frozen config from ``--config-file`` (else the one saved in the exported
    ``--model``) and the overrides; the pytorch runtime needs MODEL.WEIGHTS."""
    try:
        cfg = load_model_config(args.config_file, args.model, args.opts, args.imports)
    except ValueError as e:
        parser.error(str(e))
    cfg.freeze()
    if args.runtime == "pytorch":
        weights = cfg.MODEL.WEIGHTS
        if not weights:
            parser.error(
                "MODEL.WEIGHTS is empty: pass the trained model as an override, e.g. "
                "MODEL.WEIGHTS output/ttfnet_r18_demo/model_final.pth"
            )
        if "://" not in weights and not os.path.isfile(os.path.expanduser(weights)):
            parser.error(f"MODEL.WEIGHTS {weights}: no such file")
    centerx.register_config_datasets(cfg)
    return cfg


def check_output_paths(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse, before any work, outputs that cannot be written: --output naming a
    file, --save-json naming a folder or a file in a missing or read-only folder."""
    if args.output and os.path.exists(args.output) and not os.path.isdir(args.output):
        parser.error(f"--output {args.output} is a file; --output takes a folder for the drawn images / video")
    if args.output and os.path.isdir(args.output) and not os.access(args.output, os.W_OK):
        parser.error(f"--output {args.output}: the folder is not writable")
    if args.save_json:
        if os.path.isdir(args.save_json):
            parser.error(f"--save-json {args.save_json} is a folder; give a file name, e.g. {args.save_json}/dets.json")
        folder = os.path.dirname(os.path.abspath(args.save_json))
        if not os.path.isdir(folder):
            parser.error(f"--save-json {args.save_json}: the folder {folder} does not exist")
        if not os.access(folder, os.W_OK) or (
            os.path.exists(args.save_json) and not os.access(args.save_json, os.W_OK)
        ):
            parser.error(f"--save-json {args.save_json}: not writable")


def dataset_metadata(cfg):
    """(class names or None, contiguous index -> dataset category id or None).

    Names come from the model's config (MODEL.CENTERX.CLASS_NAMES, which training
    saves with the run) when it has them, else from DATASETS.TEST[0]'s metadata;
    that dataset is loaded only when neither has them, and a dataset that cannot
    be loaded (its json gone) costs the names, not the run."""
    names = list(cfg.MODEL.CENTERX.CLASS_NAMES) or None
    if not len(cfg.DATASETS.TEST):
        return names, None
    name = cfg.DATASETS.TEST[0]
    meta = MetadataCatalog.get(name)
    if names is None and meta.get("thing_classes") is None and name in DatasetCatalog:
        try:
            ensure_datasets([name])
            DatasetCatalog.get(name)
        except (OSError, ValueError) as e:
            logger.warning(f"Dataset '{name}' cannot be read for its class names ({e}).")
    names = names or meta.get("thing_classes")
    if names is None:
        logger.warning(
            "No class names (MODEL.CENTERX.CLASS_NAMES is empty and DATASETS.TEST[0] has none); classes "
            "are shown by index."
        )
    mapping = meta.get("thing_dataset_id_to_contiguous_id")
    if mapping and names is not None and len(mapping) != len(names):
        mapping = None
    return names, ({v: k for k, v in mapping.items()} if mapping else None)


class Detector:
    """A model on a runtime: BGR uint8 images -> per image ``boxes`` [M, 4] (x1, y1,
    x2, y2 in the image's pixels), ``scores`` [M], ``classes`` [M] above the threshold."""

    def __init__(self, cfg, runtime: str, model_file: str, threshold: float, heatmap: bool):
        self.threshold = threshold
        self.heatmap = heatmap
        # every runtime, pytorch included, through its registered class: the same letterbox to
        # EXPORT.INPUT_SIZE, decode and mapping back (pytorch: MODEL.WEIGHTS loaded strictly, EMA weights
        # when the config says so), so what predict shows is what ./run.sh evaluate scores
        self.runtime = build_runtime(runtime, cfg, model_file)

    def __call__(self, images: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
        results = self.runtime(list(images))
        return [{k: v[r["scores"] > self.threshold] for k, v in r.items()} for r in results]

    def heatmaps(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Per image, [H, W] float in [0, 1]: the highest class score of the cell
        under each pixel (pytorch; before peak masking), on the letterboxed input
        the detections come from."""
        model = self.runtime.model.model
        batch, scales = self.runtime.letterbox(list(images))
        with torch.no_grad():
            x = (torch.from_numpy(batch).to(model.device) - model.pixel_mean) / model.pixel_std
            scores = model.heatmap_scores(model.predict(x)).amax(dim=1, keepdim=True)
            full = F.interpolate(scores.float(), size=batch.shape[-2:], mode="bilinear", align_corners=False)
        maps = []
        for m, (sy, sx), image in zip(full[:, 0].cpu().numpy(), scales, images):
            h, w = image.shape[:2]
            valid = m[: max(1, round(h * sy)), : max(1, round(w * sx))]
            maps.append(cv2.resize(valid, (w, h), interpolation=cv2.INTER_LINEAR))
        return maps


def draw(image: np.ndarray, det: dict[str, np.ndarray], names, heat: np.ndarray | None) -> np.ndarray:
    """BGR image with the detections (and the heatmap blended in) drawn."""
    if heat is not None:
        colour = cv2.applyColorMap(np.clip(heat * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
        image = cv2.addWeighted(image, 0.55, colour, 0.45, 0)
    inst = Instances(
        image.shape[:2],
        pred_boxes=Boxes(torch.as_tensor(det["boxes"]).reshape(-1, 4)),
        scores=torch.as_tensor(det["scores"]),
        pred_classes=torch.as_tensor(det["classes"]).long(),
    )
    return np.ascontiguousarray(draw_detections(np.ascontiguousarray(image[:, :, ::-1]), inst, names)[:, :, ::-1])


def coco_results(det: dict[str, np.ndarray], image_id: int, file_name: str, ids) -> list[dict]:
    out = []
    for (x1, y1, x2, y2), score, cls in zip(det["boxes"].tolist(), det["scores"].tolist(), det["classes"].tolist()):
        out.append(
            {
                "image_id": image_id,
                "file_name": file_name,
                "category_id": int(ids[int(cls)]) if ids else int(cls),
                "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                "score": round(float(score), 5),
            }
        )
    return out


def list_inputs(parser: argparse.ArgumentParser, path: str) -> tuple[list[str], object | None]:
    """(image files, video file or camera index or None)."""
    if path.isdigit() and not os.path.exists(path):
        return [], int(path)
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path) if os.path.isfile(os.path.join(path, f)))
        images = [f for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]
        if not images:
            parser.error(f"--input {path}: the folder holds no {'/'.join(IMAGE_EXTENSIONS)} file")
        if len(files) > len(images):
            logger.info(f"{path}: {len(images)} images; {len(files) - len(images)} other files ignored")
        return images, None
    if not os.path.isfile(path):
        parser.error(f"--input {path}: no such file or folder")
    if path.lower().endswith(IMAGE_EXTENSIONS):
        return [path], None
    if path.lower().endswith(VIDEO_EXTENSIONS):
        return [], path
    parser.error(
        f"--input {path}: not an image ({', '.join(IMAGE_EXTENSIONS)}), a video "
        f"({', '.join(VIDEO_EXTENSIONS)}) nor a camera index"
    )


def batches(items: Sequence, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield list(items[i : i + size])


class Job:
    """Runs the detector over the inputs and writes what was asked."""

    def __init__(
        self,
        detector: Detector,
        names,
        ids,
        output: str | None,
        heatmap: bool,
        num_classes: tuple[str, int] | None = None,
    ):
        self.detector, self.names, self.ids = detector, names, ids
        self.num_classes = num_classes
        self.output, self.heatmap = output, heatmap
        self.results: list[dict] = []
        self.summary = Summary()

    def process(self, frames: list[np.ndarray], labels: list[str], image_ids: list[int]) -> list[np.ndarray]:
        """Detect on a batch; record the COCO results; return the drawn frames (when drawing)."""
        dets = self.detector(frames)
        heats = self.detector.heatmaps(frames) if self.heatmap else [None] * len(frames)
        drawn = []
        for frame, label, image_id, det, heat in zip(frames, labels, image_ids, dets, heats):
            self.check_classes(det)
            self.results += coco_results(det, image_id, label, self.ids)
            self.summary.detections += len(det["scores"])
            if self.output:
                drawn.append(draw(frame, det, self.names, heat))
        return drawn

    def check_classes(self, det: dict[str, np.ndarray]) -> None:
        """Stop at the first class index the config's model cannot have: the model
        file was exported from a config with more classes."""
        if self.num_classes is None or not len(det["classes"]):
            return
        key, num = self.num_classes
        highest = int(det["classes"].max())
        if highest >= num:
            raise SystemExit(
                f"The model outputs class index {highest}, but the config's model has {num} classes "
                f"({key} {num}): the model file was exported from another config. Give that config "
                "with --config-file."
            )

    def images(self, paths: Sequence[str], batch: int) -> None:
        with tqdm(total=len(paths), desc="images", unit="img", disable=len(paths) < 2) as bar:
            for chunk in batches(list(enumerate(paths)), batch):
                frames, labels, ids = [], [], []
                for image_id, path in chunk:
                    image = cv2.imread(path, cv2.IMREAD_COLOR)
                    if image is None or min(image.shape[:2]) < 2:
                        self.summary.images_skipped += 1
                        logger.warning(
                            f"Cannot use {path} as an image; skipped ({self.summary.images_skipped} so far)."
                        )
                        continue
                    frames.append(image)
                    labels.append(path)
                    ids.append(image_id)
                bar.update(len(chunk))
                if not frames:
                    continue
                drawn = self.process(frames, labels, ids)
                for k, path in enumerate(labels):
                    if self.output:
                        out = os.path.join(self.output, os.path.basename(path))
                        if not cv2.imwrite(out, drawn[k]):
                            raise OSError(f"OpenCV could not write {out}; check that --output is a writable folder.")
                    self.summary.images_written += 1

    def video(self, source, batch: int, max_frames: int) -> None:
        """Every frame of a video file or camera (until it ends, ``max_frames`` or Ctrl-C)."""
        capture = cv2.VideoCapture(source)
        label = f"camera{source}" if isinstance(source, int) else source
        if not capture.isOpened():
            raise SystemExit(
                f"Cannot open {'camera ' + str(source) if isinstance(source, int) else source} with "
                "OpenCV (no such device, unsupported codec or damaged file)."
            )
        fps = capture.get(cv2.CAP_PROP_FPS)
        if not (fps > 0 and math.isfinite(fps)):
            logger.warning(f"{label} reports no frame rate; writing at {FALLBACK_FPS} fps.")
            fps = FALLBACK_FPS
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if not isinstance(source, int) else 0
        if max_frames > 0:
            total = min(total, max_frames) if total > 0 else max_frames
        stem = os.path.join(self.output or "", os.path.splitext(os.path.basename(str(label)))[0])
        writer, out = None, None
        bar = tqdm(total=total or None, desc="frames", unit="frame")
        try:
            ended = False
            while not ended:
                frames = []
                while len(frames) < batch and not (
                    max_frames and self.summary.frames_written + len(frames) >= max_frames
                ):
                    ok, frame = capture.read()
                    if not ok:
                        ended = True
                        break
                    frames.append(frame)
                if not frames:
                    break
                first = self.summary.frames_written
                drawn = self.process(frames, [str(label)] * len(frames), list(range(first, first + len(frames))))
                if self.output:
                    if writer is None:
                        writer, out = open_video_writer(stem, fps, (frames[0].shape[1], frames[0].shape[0]))
                    for image in drawn:
                        writer.write(image)
                self.summary.frames_written += len(frames)
                bar.update(len(frames))
                if max_frames and self.summary.frames_written >= max_frames:
                    break
        except KeyboardInterrupt:
            logger.info(f"Stopped after {self.summary.frames_written} frames.")
        finally:
            bar.close()
            capture.release()
            if writer is not None:
                writer.release()
        if self.summary.frames_written == 0:
            raise SystemExit(f"No frame could be read from {label}.")
        logger.info(
            f"{label}: {self.summary.frames_written} frames at {fps:g} fps, {self.summary.detections} "
            f"detections (score > {self.detector.threshold})" + (f" -> {out}" if out else "")
        )


def open_video_writer(stem: str, fps: float, size: tuple[int, int]) -> tuple[cv2.VideoWriter, str]:
    """(opened writer, its file path): the first of VIDEO_CODECS that OpenCV can write,
    for frames of ``size`` (width, height) at ``fps``."""
    for fourcc, ext in VIDEO_CODECS:
        path = stem + ext
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), fps, size)
        if writer.isOpened():
            return writer, path
        writer.release()
    tried = ", ".join(f"{fourcc} {ext}" for fourcc, ext in VIDEO_CODECS)
    raise OSError(
        f"OpenCV cannot write a video to {stem}.* (tried {tried}); check that the output folder is "
        "writable and that this OpenCV build has video I/O (opencv-python ships FFmpeg)."
    )


@exit_on_config_error
def run(argv: Sequence[str] | None = None) -> Summary:
    """Parse ``argv``, process the input and return what was done (errors exit via SystemExit)."""
    parser, args = parse_args(argv)
    setup_logger(name="centerx")
    setup_logger(name="detectron2", abbrev_name="d2")
    if not args.output and not args.save_json:
        parser.error("nothing to write: give --output DIR (drawn images / video) and / or --save-json FILE")
    if args.batch < 1:
        parser.error(f"--batch must be at least 1, got {args.batch}")
    if args.runtime is None:
        try:
            args.runtime = runtime_for_file(args.model) if args.model else "pytorch"
        except ValueError as e:
            parser.error(f"--model: {e}")
    if args.heatmap and args.runtime != "pytorch":
        parser.error("--heatmap needs --runtime pytorch (exported graphs output the peak-masked scores only)")
    if args.runtime != "pytorch" and not args.model:
        parser.error(f"--runtime {args.runtime} runs an exported file: pass it with --model")
    if args.model and not os.path.isfile(args.model):
        parser.error(f"--model {args.model}: no such file")
    if args.max_frames < 0:
        parser.error(f"--max-frames must be 0 (the whole video) or a positive number of frames, got {args.max_frames}")
    check_output_paths(parser, args)
    cfg = setup_cfg(parser, args)
    images, video = list_inputs(parser, args.input)
    if args.output:
        input_dir = args.input if os.path.isdir(args.input) else os.path.dirname(args.input)
        if video is None or not isinstance(video, int):
            if os.path.realpath(args.output) == os.path.realpath(input_dir or "."):
                parser.error(
                    f"--output {args.output} is the input's folder: the drawn files would overwrite the inputs"
                )
        os.makedirs(args.output, exist_ok=True)
    start = time.perf_counter()
    try:
        detector = Detector(cfg, args.runtime, args.model, args.confidence_threshold, args.heatmap)
    except WEIGHTS_ERRORS as e:
        if args.runtime != "pytorch":
            parser.error(str(e))
        parser.error(f"MODEL.WEIGHTS {cfg.MODEL.WEIGHTS}: {e}")
    except ValueError as e:  # a model file of another runtime or another config
        parser.error(str(e))
    except Exception as e:  # the runtime's own loader refusing the file (not a model of its kind, damaged)
        if args.runtime == "pytorch":
            raise
        parser.error(
            f"--model {args.model}: the {args.runtime} runtime cannot load it ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''})"
        )
    logger.info(f"Running {args.model or cfg.MODEL.WEIGHTS} on {args.runtime}.")
    names, ids = dataset_metadata(cfg)
    job = Job(detector, names, ids, args.output, args.heatmap, model_num_classes(cfg))
    if video is not None:
        job.video(video, args.batch, args.max_frames)
    else:
        job.images(images, args.batch)
    if args.save_json:
        with open(args.save_json, "w") as f:
            json.dump(job.results, f)
        logger.info(f"{len(job.results)} detections written to {args.save_json} (COCO results format).")
    summary = job.summary
    summary.seconds = time.perf_counter() - start
    if video is not None:
        logger.info(f"Done: {summary.frames_written} frames in {summary.seconds:.1f} s.")
    else:
        logger.info(
            f"Done: {summary.images_written} images, {summary.images_skipped} unreadable skipped, "
            f"{summary.detections} detections, in {summary.seconds:.1f} s."
        )
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; exit code 1 when no input image could be read."""
    summary = run(argv)
    if summary.images_written == 0 and summary.frames_written == 0:
        logger.error("Nothing was written: no input image could be read.")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
