"""The keys of deployment (EXPORT). The code that reads them is in centerx.deploy."""

from detectron2.config import CfgNode as CN

__all__ = ["add_export_config"]


def add_export_config(cfg):
    """Deployment keys (EXPORT).

    Part of :func:`centerx.add_centerx_config`; the comment above each key is its
    documentation (docs/config.md is generated from it)."""
    _C = cfg

    # ------------------------------------------------------------------ export
    # Deployment (centerx.deploy, projects/speedup): ONNX, Caffe, TensorRT.
    _C.EXPORT = CN()
    # Input (height, width) in pixels, multiples of 32: the size the graph is
    # traced at (ONNX keeps N, H, W dynamic), the fixed input of the Caffe net
    # and of the TensorRT profile, and the letterbox size of the runtimes.
    _C.EXPORT.INPUT_SIZE = (512, 512)
    # Fold flip test-time augmentation (TEST.FLIP_TEST) into the exported graph
    # (ONNX, ONNX INT8, TensorRT; Caffe has no flip layer and refuses it).
    _C.EXPORT.FLIP_TEST = False
    # TensorRT engine: largest batch of the optimisation profile (the input
    # size is fixed to INPUT_SIZE) and builder workspace limit in MiB.
    _C.EXPORT.TENSORRT_MAX_BATCH = 8
    _C.EXPORT.TENSORRT_WORKSPACE_MB = 2048
    # INT8 export (--format onnx-int8): number of calibration images, evenly
    # spread over the calibration dataset, and that dataset ("" =
    # DATASETS.TEST[0], else DATASETS.TRAIN[0]; any registered name, including
    # DATASETS.COCO_JSON / IMAGE_FOLDERS entries). export.py's
    # --calibration-images / --calibration-dataset override them.
    _C.EXPORT.CALIBRATION_IMAGES = 32
    _C.EXPORT.CALIBRATION_DATASET = ""
    # INT8 export: the convolutions that read a map finer than this stride
    # (input pixels per map cell), and the activations / pooling / additions
    # on such maps, stay FP32; 1 = quantise the whole network. 2 or 4 keep the
    # image-side layers FP32, which pays where their integer kernels are
    # slower than FP32 ones (few channels at high resolution: the nano's
    # PP-LCNet, where 4 makes the INT8 graph 1.1x-1.3x faster; a ResNet's 64-channel
    # 7x7 stem is faster in INT8). A power of two, at most the output stride (the
    # heads stay quantised).
    _C.EXPORT.INT8_FROM_STRIDE = 1
    # INT8 export: rewrite each hard-swish between two quantised tensors as a
    # quantised Add and Mul, which ONNX Runtime runs as integer kernels (it has
    # no integer hard-swish; left as it is, it runs in FP32 between a dequantise
    # and a quantise node). The hard-swish nano's INT8 graph gets 1.06x-1.13x
    # faster in ONNX Runtime at the same AP. False for a file meant for
    # OpenVINO: it runs the plain form faster (its own integer hard-swish) and
    # the rewritten one 1.4x slower, slower than FP32.
    _C.EXPORT.INT8_INTEGER_HARD_SWISH = True
    return cfg
