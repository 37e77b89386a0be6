"""Post-training static INT8 quantisation of an exported ONNX graph with ONNX
Runtime's tools (``onnxruntime.quantization.quantize_static``).

What the INT8 graph holds (QDQ format: QuantizeLinear / DequantizeLinear pairs
around each quantised node, which ONNX Runtime fuses into integer kernels; the
file stays a standard ONNX graph):

- the network, from the normalised image to the input of each head's last
  convolution: every ``Conv`` / ``ConvTranspose`` with int8 weights, symmetric
  and per output channel, and uint8 activations, one asymmetric range per
  tensor (the min / max seen on the calibration images); the ``Relu``,
  ``Add``, ``MaxPool`` and ``Resize`` between them run on the quantised
  tensors (ONNX Runtime's recommended types for x86 CPUs, ``reduce_range``
  off). A ``HardSwish`` between two quantised tensors is rewritten as a
  quantised ``Add`` and ``Mul`` (:func:`integer_hard_swish`,
  ``EXPORT.INT8_INTEGER_HARD_SWISH``), which ONNX Runtime runs as integer
  kernels; left as it is, it runs in FP32 between a dequantise and a quantise
  node. ONNX Runtime's CPU provider fuses Conv into ``QLinearConv`` but has
  no integer ``ConvTranspose``: CenterNet's upsampling deconvolutions keep
  int8 weights in the file and run in FP32 on dequantised tensors;
- FP32 with ``EXPORT.INT8_FROM_STRIDE`` > 1: the image-side layers, i.e. the
  network's nodes that read a map finer than that stride (input pixels per
  cell, measured by running the FP32 graph once) and the activations of the
  convolutions among them (:func:`image_side_nodes`). ONNX Runtime's integer
  kernels are slower than its FP32 ones on few channels at high resolution
  (a 3-channel stem, depthwise convolutions of 16 and 32 channels at stride
  2), and those layers come before any integer one, so no extra quantise /
  dequantise pair is paid for them;
- FP32, not quantised: the normalisation in front (``Sub`` / ``Div``), the
  heads' last convolutions (the convolutions with no convolution after them),
  which take the dequantised features and output FP32 heatmap logits and
  regression maps, and everything after them: sigmoid, peak mask, top-K and
  box decode, exactly as in the FP32 graph. Heatmap logits snapped to an
  8-bit grid would turn neighbouring cells closer than one step into
  plateaus, which the ``==`` peak mask keeps as duplicate detections.

``onnxruntime.quantization.quant_pre_process`` is not run: onnxslim has already
folded BatchNorm and constants and annotated every tensor with its type and
shape, which is what the quantiser needs (on CenterNet, pre-processing only
folds 7 more nodes, none of a quantised type), and its symbolic shape
inference fails on TTFNet, unable to equate the sizes of the upsampled and
the skip-connection maps for a dynamic H, W.
"""

import importlib
import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ..data.datasets import register_config_datasets
from .letterbox import Letterbox
from .wrapper import ExportError, check_input_size, deploy_config

if TYPE_CHECKING:
    import onnx

logger = logging.getLogger(__name__)

# Node types quantised inside the network (the others there, and every node of
# the decode tail, stay FP32).
QUANTIZED_OP_TYPES = ("Conv", "ConvTranspose", "Relu", "Add", "MaxPool", "Resize")
CONV_OP_TYPES = ("Conv", "ConvTranspose")
DECODED_OUTPUTS = ("boxes", "scores", "classes")


def import_quantization():
    """``onnxruntime.quantization``, or :class:`ExportError` saying how to get it."""
    try:
        quantization = importlib.import_module("onnxruntime.quantization")
    except ImportError as e:
        raise ExportError(
            f"INT8 export needs ONNX Runtime's quantisation tools (onnxruntime.quantization), which cannot be "
            f"imported here ({e}). Install onnxruntime (pip install onnxruntime; onnxruntime-gpu has them too)."
        ) from e
    return quantization


def split_network(model: "onnx.ModelProto") -> tuple[list[str], list[str]]:
    """Which nodes of an exported graph get quantised.

    A node is in the network when a convolution follows it (anywhere
    downstream); the output convolutions are those with no convolution after
    them (one per head). The graph's nodes are in topological order, as ONNX
    requires, so one backward pass decides it.

    Returns:
        quantised: names of the network's nodes of :data:`QUANTIZED_OP_TYPES`;
        output_convs: names of the output convolutions (kept FP32).
    """
    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(model.graph.node):
        for name in node.input:
            consumers.setdefault(name, []).append(i)
    nodes = model.graph.node
    feeds_conv = [False] * len(nodes)
    for i in range(len(nodes) - 1, -1, -1):
        feeds_conv[i] = any(
            nodes[j].op_type in CONV_OP_TYPES or feeds_conv[j]
            for out in nodes[i].output
            for j in consumers.get(out, ())
        )
    quantised = [n.name for n, f in zip(nodes, feeds_conv) if f and n.op_type in QUANTIZED_OP_TYPES]
    output_convs = [n.name for n, f in zip(nodes, feeds_conv) if not f and n.op_type in CONV_OP_TYPES]
    if not output_convs:
        raise ExportError("The graph has no convolution to quantise; is it an exported centerX model?")
    return quantised, output_convs


def map_strides(model: "onnx.ModelProto", names: Sequence[str], input_size: tuple[int, int]) -> dict[str, float]:
    """The stride of the 4-D tensors ``names`` of an exported graph: input pixels
    per cell along the height, from one run of the graph in ONNX Runtime (CPU)
    on a blank ``input_size`` image with those tensors made graph outputs.

    Returns:
        {tensor name: stride} for the names that are 4-D tensors in the run
        (weights and other initialisers are not).
    """
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    inputs = {i.name for i in probe.graph.input}
    have = {o.name for o in probe.graph.output} | {t.name for t in probe.graph.initializer} | inputs
    for name in sorted(set(names) - have - {""}):
        probe.graph.output.add().name = name
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    image = np.zeros((1, 3, *input_size), np.float32)
    outputs = [o.name for o in session.get_outputs()]
    values = session.run(outputs, {session.get_inputs()[0].name: image})
    strides = {n: input_size[0] / v.shape[2] for n, v in zip(outputs, values) if n in names and v.ndim == 4}
    strides.update((n, 1.0) for n in inputs if n in names)
    return strides


def check_from_stride(value) -> int:
    """``EXPORT.INT8_FROM_STRIDE`` as an int, or :class:`ExportError` unless it is a
    power of two (1, 2, 4, ...)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value & (value - 1):
        raise ExportError(
            f"EXPORT.INT8_FROM_STRIDE must be a power of two: 1 quantises the whole network, 2 or 4 keep the "
            f"layers on finer maps FP32; got {value!r}."
        )
    return value


def image_side_nodes(
    model: "onnx.ModelProto",
    quantised: Sequence[str],
    output_convs: Sequence[str],
    from_stride: int,
    input_size: tuple[int, int],
) -> list[str]:
    """The nodes of ``quantised`` that stay FP32 for ``EXPORT.INT8_FROM_STRIDE``:
    those reading a map finer than ``from_stride`` (:func:`map_strides`), and
    a ``Relu`` whose input comes from one of them (it stays fused with its
    convolution). ``quantised`` and ``output_convs`` are :func:`split_network`'s.

    Raises :class:`ExportError` when ``from_stride`` is not a power of two or
    exceeds the stride of the maps the heads' last convolutions read (the heads
    would stay FP32)."""
    if check_from_stride(from_stride) == 1:
        return []
    chosen, last = set(quantised), set(output_convs)
    nodes = [n for n in model.graph.node if n.name in chosen]
    heads = [n for n in model.graph.node if n.name in last]
    strides = map_strides(model, [i for n in nodes + heads for i in n.input], input_size)
    head_stride = min(strides[n.input[0]] for n in heads)
    if from_stride > head_stride:
        raise ExportError(
            f"EXPORT.INT8_FROM_STRIDE {from_stride} is above the stride of the maps the heads read ({head_stride:g}): "
            f"the heads would stay FP32. Use at most {head_stride:g}."
        )
    producer = {o: n.name for n in model.graph.node for o in n.output}
    kept: dict[str, None] = {}  # ordered set, in graph order
    for node in nodes:
        finer = any(strides.get(i, from_stride) < from_stride for i in node.input)
        fused = node.op_type == "Relu" and producer.get(node.input[0]) in kept
        if finer or fused:
            kept[node.name] = None
    return list(kept)


def integer_hard_swish(model: "onnx.ModelProto") -> int:
    """Rewrite, in place, each hard-swish that ``quantize_static`` leaves in FP32
    between two quantised tensors as a quantised ``Add`` and ``Mul``.

    ONNX Runtime has no integer hard-swish: ``DequantizeLinear(x_q; s, z) ->
    HardSwish -> QuantizeLinear(s_y, z_y)`` runs as three FP32 passes over the
    map (on the hard-swish nano these nodes and their quantise / dequantise
    pairs took about a quarter of the INT8 graph's kernel time). With
    hswish(x) = x * hsig(x) and hsig(x) = clip(x / 6 + 1/2, 0, 1), the same
    function is built from node groups ONNX Runtime fuses into ``QLinearAdd``
    and ``QLinearMul``:

    - ``DequantizeLinear(x_q; s / 6, z)`` (x / 6: the same integers read with a
      sixth of the scale) ``+ 1/2``, quantised with scale 1/255 and zero point 0:
      the uint8 saturation is the clip to [0, 1], so this is hsig(x) in steps of
      1/255;
    - ``DequantizeLinear(x_q; s, z) * hsig`` quantised with the hard-swish's own
      output scale and zero point ``(s_y, z_y)``.

    The only change in value is hsig's rounding to 1/255: an error of at most
    |x| / 510 before the output's own rounding, so the two graphs' outputs
    differ by at most one step wherever |x| < 255 s_y. Only per-tensor
    quantised inputs are rewritten, and only a hard-swish whose single consumer
    is a ``QuantizeLinear`` (one that feeds a float node, such as a
    squeeze-excitation's ``ReduceMean``, stays as it is).

    Returns:
        the number of hard-swish nodes rewritten.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def scalar(name: str):
        return numpy_helper.to_array(inits[name]) if name in inits and inits[name].dims == [] else None

    outputs = {o.name for o in graph.output}
    targets = []
    for node in graph.node:
        dq = producer.get(node.input[0]) if node.op_type == "HardSwish" else None
        after = consumers.get(node.output[0], []) if dq is not None else []
        if dq is None or dq.op_type != "DequantizeLinear" or len(after) != 1 or after[0].op_type != "QuantizeLinear":
            continue
        if len(dq.input) < 3 or scalar(dq.input[1]) is None or scalar(dq.input[2]) is None:
            continue
        if node.output[0] in outputs:
            continue
        targets.append((node, dq))
    if not targets:
        return 0
    zero = numpy_helper.from_array(np.array(0, np.uint8), "hard_swish/zero_point")
    step = numpy_helper.from_array(np.array(1 / 255, np.float32), "hard_swish/hsig_scale")
    half_q = numpy_helper.from_array(np.array(128, np.uint8), "hard_swish/half_q")  # 128 / 256 = 1/2 exactly
    half_scale = numpy_helper.from_array(np.array(1 / 256, np.float32), "hard_swish/half_scale")
    graph.initializer.extend([zero, step, half_q, half_scale])
    for index, (node, dq) in enumerate(targets):
        x_q, scale, zero_point = dq.input[:3]
        name = f"hard_swish/{index}"
        sixth = numpy_helper.from_array((scalar(scale) / 6).astype(np.float32), f"{name}/x_scale_sixth")
        graph.initializer.append(sixth)
        x_sixth, half, hsig, hsig_q, hsig_dq = (f"{name}/{t}" for t in ("x_sixth", "half", "hsig", "hsig_q", "hsig_dq"))
        replacement = [
            helper.make_node("DequantizeLinear", [x_q, sixth.name, zero_point], [x_sixth], name=x_sixth),
            helper.make_node("DequantizeLinear", [half_q.name, half_scale.name, zero.name], [half], name=half),
            helper.make_node("Add", [x_sixth, half], [hsig], name=hsig),
            helper.make_node("QuantizeLinear", [hsig, step.name, zero.name], [hsig_q], name=hsig_q),
            helper.make_node("DequantizeLinear", [hsig_q, step.name, zero.name], [hsig_dq], name=hsig_dq),
            helper.make_node("Mul", [dq.output[0], hsig_dq], list(node.output), name=f"{name}/mul"),
        ]
        position = list(graph.node).index(node)
        graph.node.remove(node)
        for offset, new in enumerate(replacement):
            graph.node.insert(position + offset, new)
    return len(targets)


class CalibrationImages:
    """ONNX Runtime ``CalibrationDataReader`` over images, one at a time,
    pre-processed as the runtimes do (:class:`Letterbox`).

    It implements the reader's ``get_next`` protocol (``isinstance(reader,
    onnxruntime.quantization.CalibrationDataReader)`` holds through that class's
    subclass hook) without importing onnxruntime at module import.
    """

    def __init__(self, images: Sequence[str | np.ndarray], letterbox: Letterbox):
        """
        Args:
            images: image files, or BGR uint8 arrays [h, w, 3].
            letterbox: the pre-processing of the deployment runtimes
                (``EXPORT.INPUT_SIZE``, ``INPUT.FORMAT``, pixel-mean padding).
        """
        if not len(images):
            raise ValueError("Calibration needs at least one image.")
        self.images = list(images)
        self.letterbox = letterbox
        self._next = 0

    def __len__(self) -> int:
        return len(self.images)

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next graph input ``{"images": float32 [1, 3, H, W]}`` (pixels 0..255
        in ``INPUT.FORMAT`` order), or None after the last image."""
        if self._next >= len(self.images):
            return None
        image = self.images[self._next]
        self._next += 1
        if isinstance(image, str):
            path, image = image, cv2.imread(image, cv2.IMREAD_COLOR)
            if image is None:
                raise FileNotFoundError(
                    f"Calibration image {path} cannot be read. Check that the dataset's images are where its "
                    f"registration says (datasets/README.md), or calibrate on another dataset."
                )
        return {"images": self.letterbox([image])[0]}


def calibration_dataset(cfg, dataset: str | None = None) -> str:
    """The dataset to calibrate on: ``dataset``, else EXPORT.CALIBRATION_DATASET,
    else ``DATASETS.TEST[0]``, else ``DATASETS.TRAIN[0]``; checked to be registered (the config's
    ``DATASETS.COCO_JSON`` and ``DATASETS.IMAGE_FOLDERS`` are registered first)."""
    from detectron2.data import DatasetCatalog

    register_config_datasets(cfg)
    name = dataset or cfg.EXPORT.CALIBRATION_DATASET or (list(cfg.DATASETS.TEST) + list(cfg.DATASETS.TRAIN) + [""])[0]
    if not name:
        raise ValueError(
            "No calibration dataset: the config has neither DATASETS.TEST nor DATASETS.TRAIN; "
            "name a registered dataset (export.py --calibration-dataset NAME)."
        )
    if name not in DatasetCatalog.list():
        raise ValueError(
            f"Calibration dataset {name!r} is not registered. Use a built-in dataset (e.g. shapes_val), one of "
            f"DATASETS.COCO_JSON or DATASETS.IMAGE_FOLDERS (given as config overrides), or pass another name to "
            f"--calibration-dataset."
        )
    return name


def calibration_files(cfg, dataset: str | None = None, num_images: int | None = None) -> list[str]:
    """``num_images`` (default EXPORT.CALIBRATION_IMAGES) image files of the
    calibration dataset (:func:`calibration_dataset`), evenly spread over it
    (all of them when it has fewer)."""
    from detectron2.data import DatasetCatalog

    num_images = cfg.EXPORT.CALIBRATION_IMAGES if num_images is None else num_images
    if num_images < 1:
        raise ValueError(f"The number of calibration images must be positive; got {num_images}.")
    name = calibration_dataset(cfg, dataset)
    try:
        records = DatasetCatalog.get(name)
    except OSError as e:
        raise FileNotFoundError(f"Calibration dataset {name!r} cannot be loaded: {e}") from e
    if not records:
        raise ValueError(f"Calibration dataset {name!r} has no images.")
    index = np.unique(np.linspace(0, len(records) - 1, min(num_images, len(records))).round().astype(int))
    files = [records[i]["file_name"] for i in index]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of the {len(files)} calibration images of {name!r} do not exist (e.g. {missing[0]}). "
            f"Put the dataset's images where its registration says (datasets/README.md), or calibrate on another "
            f"dataset (--calibration-dataset)."
        )
    logger.info(f"Calibrating on {len(files)} of the {len(records)} images of {name}.")
    return files


def calibration_reader(cfg, images: Sequence[str | np.ndarray]) -> CalibrationImages:
    """A :class:`CalibrationImages` with the runtimes' letterbox of ``cfg`` (a
    ``Distiller``'s student config)."""
    cfg = deploy_config(cfg)
    return CalibrationImages(
        images, Letterbox(check_input_size(cfg.EXPORT.INPUT_SIZE), cfg.INPUT.FORMAT, cfg.MODEL.PIXEL_MEAN)
    )


class _PreProcessHint(logging.Filter):
    """Drops ONNX Runtime's advice to run ``quant_pre_process`` first, left out
    on purpose (see the module docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def quantize_onnx(
    fp32_path: str,
    int8_path: str,
    reader: CalibrationImages,
    metadata: dict[str, str] | None = None,
    from_stride: int = 1,
    hard_swish_on_integers: bool = True,
) -> str:
    """Write the static INT8 (QDQ) version of an exported decoded graph.

    Args:
        fp32_path: ``model.onnx`` of the ONNX export (decoded outputs; onnxslim'd).
        int8_path: where to write the INT8 graph.
        reader: the calibration images (:func:`calibration_reader`); the
            activation ranges are their min / max.
        metadata: ``metadata_props`` of the INT8 file (quantize_static does not
            carry the FP32 file's over).
        from_stride: ``EXPORT.INT8_FROM_STRIDE``: the nodes reading maps finer
            than this stride stay FP32 (:func:`image_side_nodes`); 1 = none.
        hard_swish_on_integers: ``EXPORT.INT8_INTEGER_HARD_SWISH``: rewrite the
            hard-swish between quantised tensors (:func:`integer_hard_swish`).

    Returns:
        ``int8_path``. Raises :class:`ExportError` for a raw-output graph or
        without ``onnxruntime.quantization``.
    """
    import onnx

    quantization = import_quantization()
    model = onnx.load(fp32_path)
    outputs = tuple(o.name for o in model.graph.output)
    if outputs != DECODED_OUTPUTS:
        raise ExportError(
            f"INT8 quantisation takes the decoded graph (outputs {', '.join(DECODED_OUTPUTS)}); {fp32_path} has "
            f"outputs {', '.join(outputs)}. Export without --raw: the INT8 graph is for ONNX Runtime, which runs "
            f"the decode, and the runtimes that need raw outputs (Caffe) cannot run QDQ graphs."
        )
    quantised, output_convs = split_network(model)
    image_side = image_side_nodes(model, quantised, output_convs, from_stride, reader.letterbox.size)
    if image_side:
        kept = set(image_side)
        quantised = [n for n in quantised if n not in kept]
        convs = [n.name for n in model.graph.node if n.name in kept and n.op_type in CONV_OP_TYPES]
        logger.info(
            f"INT8 from stride {from_stride} (EXPORT.INT8_FROM_STRIDE): the convolutions that read finer maps "
            f"stay FP32 ({len(convs)}): {', '.join(convs)}."
        )
    logger.info(
        f"Quantising {len(quantised)} nodes; FP32: the output convolutions {', '.join(output_convs)} "
        f"and the decode after them."
    )
    os.makedirs(os.path.dirname(os.path.abspath(int8_path)), exist_ok=True)
    hint = _PreProcessHint()
    logging.getLogger().addFilter(hint)
    try:
        quantization.quantize_static(
            fp32_path,
            int8_path,
            reader,
            quant_format=quantization.QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTIZED_OP_TYPES),
            nodes_to_quantize=quantised,
            per_channel=True,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            calibrate_method=quantization.CalibrationMethod.MinMax,
        )
    finally:
        logging.getLogger().removeFilter(hint)
    int8 = onnx.load(int8_path)
    rewritten = integer_hard_swish(int8) if hard_swish_on_integers else 0
    if rewritten:
        logger.info(
            f"Hard-swish on integers: {rewritten} HardSwish nodes between quantised tensors rewritten as a "
            f"quantised Add and Mul (hard-sigmoid in steps of 1/255), which ONNX Runtime fuses into integer kernels."
        )
    if metadata:
        del int8.metadata_props[:]
        for key, value in metadata.items():
            entry = int8.metadata_props.add()
            entry.key, entry.value = key, str(value)
    if rewritten or metadata:
        onnx.save(int8, int8_path)
    onnx.checker.check_model(int8_path, full_check=True)
    logger.info(f"Wrote {int8_path} (INT8, QDQ, calibrated on {len(reader)} images).")
    return int8_path
