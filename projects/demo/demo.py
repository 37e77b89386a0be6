#!/usr/bin/env python
"""Detect objects in an image, a folder of images or a video, and draw them.

    python projects/demo/demo.py --config-file configs/shapes/centernet_r18_demo.yaml \\
        --input photo.jpg --output vis/ MODEL.WEIGHTS output/centernet_r18_demo/model_final.pth
    python projects/demo/demo.py --config-file CFG --input images/ --output vis/ MODEL.WEIGHTS ...
    python projects/demo/demo.py --config-file CFG --input clip.mp4 --output vis/ \\
        --confidence-threshold 0.5 MODEL.WEIGHTS ... MODEL.DEVICE cuda

The model runs through detectron2's DefaultPredictor (with MODEL_EMA.USE_FOR_EVAL, on
the checkpoint's EMA weights; test-time resize of the
config, MODEL.DEVICE). Detections scoring above --confidence-threshold are drawn
with detectron2's Visualizer, labelled with the class names of DATASETS.TEST[0].
Images are written as OUTPUT/<file name>; a video as OUTPUT/<stem>.mp4 (or .avi
where OpenCV cannot write mp4), with the input's frame size and rate.
"""
import argparse
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.logger import setup_logger

import centerx  # (registers everything)
from centerx.checkpoint import UnsafeWeightsError, WeightsMismatchError
from centerx.data.datasets import ensure_datasets
from centerx.engine import Predictor
from centerx.engine.visualization import draw_detections

logger = logging.getLogger("centerx.demo")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv")
# (FourCC, file extension) tried in order for the output video
VIDEO_CODECS = (("mp4v", ".mp4"), ("MJPG", ".avi"))
# Frame rate written when the input video does not report a usable one.
FALLBACK_FPS = 30.0
# A progress line every this many video frames.
LOG_EVERY_FRAMES = 100


@dataclass
class DemoSummary:
    """What one run did. Counts are of files (images) and of frames (video)."""

    images_written: int = 0
    images_skipped: int = 0
    frames_written: int = 0
    detections: int = 0
    seconds: float = 0.0


def parse_args(argv: Optional[Sequence[str]] = None) -> Tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE", help="the model's config")
    parser.add_argument(
        "--input", required=True, metavar="PATH",
        help=f"an image ({', '.join(IMAGE_EXTENSIONS)}), a folder of such images (not recursive) "
             f"or a video ({', '.join(VIDEO_EXTENSIONS)})",
    )
    parser.add_argument("--output", required=True, metavar="DIR", help="folder for the drawn images / video")
    parser.add_argument(
        "--confidence-threshold", type=float, default=0.3, metavar="SCORE",
        help="draw only detections scoring above this (default: 0.3)",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER,
                        help="config overrides: KEY VALUE pairs, MODEL.WEIGHTS included")
    return parser, parser.parse_args(argv)


def setup_cfg(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """Frozen config from the file and the overrides; MODEL.WEIGHTS must name a checkpoint."""
    if not os.path.isfile(args.config_file):
        parser.error(f"--config-file {args.config_file}: no such file")
    cfg = centerx.add_centerx_config(get_cfg())
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    weights = cfg.MODEL.WEIGHTS
    if not weights:
        parser.error(
            "MODEL.WEIGHTS is empty: pass the trained model as an override, e.g. "
            "MODEL.WEIGHTS output/centernet_r18_demo/model_final.pth"
        )
    if "://" not in weights and not os.path.isfile(weights):
        parser.error(f"MODEL.WEIGHTS {weights}: no such file")
    centerx.register_config_datasets(cfg)
    return cfg


def class_names(cfg) -> Optional[List[str]]:
    """
    thing_classes of DATASETS.TEST[0], or None (classes are then shown by index).

    Built-in datasets carry them from registration; a COCO json dataset gets them
    when it is loaded, which is done here (after ensure_datasets) only if needed.
    """
    if not len(cfg.DATASETS.TEST):
        return None
    name = cfg.DATASETS.TEST[0]
    names = MetadataCatalog.get(name).get("thing_classes")
    if names is None and name in DatasetCatalog:
        ensure_datasets([name])
        DatasetCatalog.get(name)
        names = MetadataCatalog.get(name).get("thing_classes")
    if names is None:
        logger.warning(f"Dataset '{name}' has no thing_classes; classes are shown by index.")
    return names


def list_inputs(parser: argparse.ArgumentParser, path: str) -> Tuple[List[str], Optional[str]]:
    """
    Returns:
        (image files, video file or None): the images to process, sorted, or the video.
    """
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
        f"--input {path}: not an image ({', '.join(IMAGE_EXTENSIONS)}) "
        f"nor a video ({', '.join(VIDEO_EXTENSIONS)})"
    )


class Detector:
    """DefaultPredictor + score filter + drawing, on BGR uint8 images."""

    def __init__(self, cfg, threshold: float):
        # weights loaded strictly, the EMA weights when the config says so; any image shape
        self.predictor = Predictor(cfg)
        self.threshold = threshold
        self.class_names = class_names(cfg)

    def __call__(self, image: np.ndarray, name: str = "image") -> Tuple[np.ndarray, int]:
        """
        Args:
            image: (H, W, 3) uint8 BGR image; name: its file, for error messages.

        Returns:
            ((H, W, 3) uint8 BGR image with the detections drawn, number drawn)
        """
        instances = self.predictor(image, name)["instances"].to("cpu")
        instances = instances[instances.scores > self.threshold]
        drawn = draw_detections(np.ascontiguousarray(image[:, :, ::-1]), instances, self.class_names)
        return np.ascontiguousarray(drawn[:, :, ::-1]), len(instances)


def run_images(detector: Detector, paths: Sequence[str], output_dir: str, summary: DemoSummary) -> None:
    """Draw on each image and write it as ``output_dir/<file name>``; unreadable ones are skipped."""
    for path in paths:
        start = time.perf_counter()
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            summary.images_skipped += 1
            logger.warning(f"Cannot read {path} as an image; skipped ({summary.images_skipped} so far).")
            continue
        try:
            drawn, n = detector(image, path)
        except ValueError as e:  # an image no detector can take (e.g. 1 pixel wide)
            summary.images_skipped += 1
            logger.warning(f"Skipping {path}: {e} ({summary.images_skipped} skipped so far).")
            continue
        out = os.path.join(output_dir, os.path.basename(path))
        if not cv2.imwrite(out, drawn):
            raise OSError(f"OpenCV could not write {out}; check that --output is a writable folder.")
        summary.images_written += 1
        summary.detections += n
        logger.info(
            f"{path}: {n} detections (score > {detector.threshold}) -> {out} "
            f"({time.perf_counter() - start:.2f} s)"
        )


def open_video_writer(stem: str, fps: float, size: Tuple[int, int]) -> Tuple[cv2.VideoWriter, str]:
    """
    Args:
        stem: output path without extension.
        fps: frames per second.
        size: (width, height) of the frames, pixels.

    Returns:
        (opened writer, its file path): the first of VIDEO_CODECS that OpenCV can write.
    """
    for fourcc, ext in VIDEO_CODECS:
        path = stem + ext
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), fps, size)
        if writer.isOpened():
            return writer, path
        writer.release()
    tried = ", ".join(f"{fourcc} {ext}" for fourcc, ext in VIDEO_CODECS)
    raise OSError(
        f"OpenCV cannot write a video to {stem}.* (tried {tried}); check that the output folder "
        "is writable and that this OpenCV build has video I/O (opencv-python ships FFmpeg)."
    )


def run_video(detector: Detector, path: str, output_dir: str, summary: DemoSummary) -> None:
    """Draw on every frame and write ``output_dir/<stem>.mp4`` (or .avi) at the input's fps and size."""
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise SystemExit(f"Cannot open video {path} with OpenCV (unsupported codec or damaged file).")
    fps = capture.get(cv2.CAP_PROP_FPS)
    if not (fps > 0 and math.isfinite(fps)):
        logger.warning(f"{path} reports no frame rate; writing at {FALLBACK_FPS} fps.")
        fps = FALLBACK_FPS
    stem = os.path.join(output_dir, os.path.splitext(os.path.basename(path))[0])
    writer, out = None, None
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            if writer is None:
                writer, out = open_video_writer(stem, fps, (frame.shape[1], frame.shape[0]))
            drawn, n = detector(frame)
            writer.write(drawn)
            summary.frames_written += 1
            summary.detections += n
            if summary.frames_written % LOG_EVERY_FRAMES == 0:
                logger.info(f"{path}: {summary.frames_written} frames, {summary.detections} detections so far")
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    if out is None:
        raise SystemExit(f"No frame could be read from video {path}.")
    logger.info(
        f"{path}: {summary.frames_written} frames at {fps:g} fps, {summary.detections} detections "
        f"(score > {detector.threshold}) -> {out}"
    )


def run(argv: Optional[Sequence[str]] = None) -> DemoSummary:
    """Parse ``argv``, process the input and return what was done (errors exit via SystemExit)."""
    parser, args = parse_args(argv)
    setup_logger(name="centerx")
    setup_logger(name="detectron2", abbrev_name="d2")
    cfg = setup_cfg(parser, args)
    images, video = list_inputs(parser, args.input)
    input_dir = args.input if os.path.isdir(args.input) else os.path.dirname(args.input)
    if os.path.realpath(args.output) == os.path.realpath(input_dir or "."):
        parser.error(f"--output {args.output} is the input's folder: the drawn files would overwrite the inputs")
    os.makedirs(args.output, exist_ok=True)
    start = time.perf_counter()
    try:
        detector = Detector(cfg, args.confidence_threshold)
    except (WeightsMismatchError, UnsafeWeightsError) as e:
        parser.error(f"MODEL.WEIGHTS {cfg.MODEL.WEIGHTS}: {e}")
    summary = DemoSummary()
    if video is not None:
        run_video(detector, video, args.output, summary)
    else:
        run_images(detector, images, args.output, summary)
    summary.seconds = time.perf_counter() - start
    if video is not None:
        logger.info(f"Done: {summary.frames_written} frames in {summary.seconds:.1f} s.")
    else:
        logger.info(
            f"Done: {summary.images_written} images written, {summary.images_skipped} unreadable "
            f"skipped, in {summary.seconds:.1f} s."
        )
    return summary


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; exit code 1 when no input image could be read."""
    summary = run(argv)
    if summary.images_written == 0 and summary.frames_written == 0:
        logger.error("Nothing was written: no input image could be read.")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
