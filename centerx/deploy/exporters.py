"""Export formats, registered by name: what ``projects/speedup/export.py`` (and
``./run.sh export``) offers is what ``EXPORTER_REGISTRY`` holds.

An exporter writes the config's detector (``MODEL.WEIGHTS``, loaded strictly) to
files under an output folder, runs the result once in its runtime on a random
image and checks it against PyTorch (:mod:`centerx.deploy.verify`). Adding a
format is one class here (or in a user's module) with ``@EXPORTER_REGISTRY.register()``;
docs/extending.md shows one.
"""

import json
import logging
import os
import tempfile
import warnings

import torch
from detectron2.utils.registry import Registry

from ..modeling.meta_arch import CenterNet, detector_class
from .caffe_export import export_caffe
from .model_info import OPENVINO_SECTION, TORCHSCRIPT_ENTRY, describe_model, write_sidecar
from .onnx_export import DEFAULT_OPSET, export_onnx, has_deformable_convs
from .quantize import (
    calibration_files,
    calibration_reader,
    check_from_stride,
    import_quantization,
    quantize_onnx,
)
from .runtimes import OnnxRuntime
from .tensorrt_engine import build_engine, import_tensorrt
from .verify import check_agreement, check_int8_agreement
from .wrapper import ExportError, build_deploy_model, check_input_size, deploy_config

logger = logging.getLogger(__name__)

EXPORTER_REGISTRY = Registry("EXPORTER")
EXPORTER_REGISTRY.__doc__ = """Exporter classes (subclasses of :class:`Exporter`); each is
chosen by its ``format`` (``--format`` of export.py)."""

# The INT8 check covers detections scoring above INT8_SCORE (the visualisation
# threshold of the training hook)
INT8_SCORE = 0.3


class Exporter:
    """One export format.

    Attributes:
        format: its name on the command line (``--format``).
        description: one line for the help.
        runtime: the registered runtime (centerx.deploy.runtimes) that runs the main file.
        options: the export.py flags it reads besides the config (``raw``,
            ``opset``, ``fp16``, ``calibration_images``, ``calibration_dataset``);
            export.py refuses the others for this format.
    """

    format = ""
    description = ""
    options: tuple = ()
    # the registered runtime that runs what it writes
    runtime = ""

    def __init__(self, cfg, out_dir: str, allow_random: bool = False, **options):
        """
        Args:
            cfg: the model's config (a Distiller's exports its student).
            out_dir: folder the files are written to (created).
            allow_random: export a randomly initialised model when MODEL.WEIGHTS is empty.
            options: values of the flags in :attr:`options` (None = the default).
        """
        unknown = set(options) - set(self.options)
        if unknown:
            raise ValueError(f"--format {self.format} does not take {sorted(unknown)}.")
        self.cfg = cfg
        self.out_dir = out_dir
        self.allow_random = allow_random
        self.trained = bool(cfg.MODEL.WEIGHTS)
        self.size = check_input_size(cfg.EXPORT.INPUT_SIZE)
        self.settings = {k: v for k, v in options.items() if v is not None}

    def model_info(self, raw: bool = False) -> dict[str, str]:
        """The properties the written file carries (:mod:`centerx.deploy.model_info`)."""
        return describe_model(deploy_config(self.cfg), raw=raw)

    def onnx_settings(self) -> dict:
        """The settings an ONNX export made on the way (onnx-int8, tensorrt) takes: the opset."""
        return {k: v for k, v in self.settings.items() if k == "opset"}

    @classmethod
    def unsupported(cls, cfg) -> str:
        """Why this format cannot export the model of ``cfg`` on this machine ("" when
        it can), known from the config alone; ``./run.sh benchmark`` leaves such
        formats out, saying why."""
        return ""

    def prepare(self) -> None:
        """Check, before any file is written, what the export needs (its
        runtime's package, its inputs); raise with what to do when something is missing."""

    def export(self) -> str:
        """Write the files and check them; return the main file's path."""
        raise NotImplementedError


def exporter_formats() -> list[str]:
    """Every registered ``--format``, sorted."""
    return sorted(cls.format for _, cls in EXPORTER_REGISTRY)


def get_exporter(fmt: str) -> type[Exporter]:
    """The exporter class of ``--format fmt``."""
    by_format: dict[str, type[Exporter]] = {cls.format: cls for _, cls in EXPORTER_REGISTRY}
    if fmt not in by_format:
        raise ValueError(f"Unknown export format {fmt!r}; registered: {sorted(by_format)}.")
    return by_format[fmt]


def _reference(model, images: torch.Tensor) -> dict:
    with torch.no_grad():
        return {k: v.numpy() for k, v in model(images).items()}


@EXPORTER_REGISTRY.register()
class OnnxExporter(Exporter):
    """model.onnx (model_raw.onnx with ``raw``), run once in ONNX Runtime when installed."""

    runtime = "onnxruntime"
    format = "onnx"
    description = "ONNX graph with peak masking and top-K decode (--raw: peak-masked maps)"
    options = ("raw", "opset")

    def export(self) -> str:
        raw = bool(self.settings.get("raw", False))
        return self.write(build_deploy_model(self.cfg, raw=raw, allow_random=self.allow_random))

    def write(self, model) -> str:
        """Export the :class:`DeployModel` ``model`` (raw or decoded) and check it;
        the formats converted from ONNX pass the model they check their own file against."""
        raw = model.raw
        path = os.path.join(self.out_dir, "model_raw.onnx" if raw else "model.onnx")
        export_onnx(
            model, path, self.size, opset=self.settings.get("opset", DEFAULT_OPSET), metadata=self.model_info(raw)
        )
        try:
            import onnxruntime as ort
        except ImportError:
            logger.warning("onnxruntime is not installed: the exported file was not run.")
            return path
        images = torch.rand(1, 3, *self.size) * 255
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        outputs = dict(zip(names, session.run(names, {"images": images.numpy()})))
        check_agreement("ONNX Runtime", outputs, _reference(model, images), self.trained)
        return path


@EXPORTER_REGISTRY.register()
class OnnxInt8Exporter(Exporter):
    """model_int8.onnx: the static INT8 quantisation (:mod:`centerx.deploy.quantize`)
    of an FP32 ONNX export made in a temporary folder (``--format onnx onnx-int8``
    writes both), calibrated on images of a registered dataset; logs both sizes
    and checks INT8 detections against FP32 on one."""

    runtime = "onnxruntime"
    format = "onnx-int8"
    description = "model_int8.onnx: static INT8 quantisation of the ONNX graph (ONNX Runtime)"
    options = ("opset", "calibration_images", "calibration_dataset")

    def prepare(self) -> None:
        import_quantization()
        self.from_stride = check_from_stride(self.cfg.EXPORT.INT8_FROM_STRIDE)
        self.calibration = calibration_files(
            self.cfg, self.settings.get("calibration_dataset"), self.settings.get("calibration_images")
        )

    def export(self) -> str:
        import cv2

        calibration = self.calibration
        int8 = os.path.join(self.out_dir, "model_int8.onnx")
        with tempfile.TemporaryDirectory() as tmp:  # the FP32 graph it quantises is not left over model.onnx
            fp32 = OnnxExporter(self.cfg, tmp, self.allow_random, **self.onnx_settings()).export()
            quantize_onnx(
                fp32,
                int8,
                calibration_reader(self.cfg, calibration),
                metadata=self.model_info(),
                from_stride=self.from_stride,
                hard_swish_on_integers=self.cfg.EXPORT.INT8_INTEGER_HARD_SWISH,
            )
            mib = [os.path.getsize(p) / 2**20 for p in (fp32, int8)]
            logger.info(
                f"Sizes: FP32 {mib[0]:.1f} MiB, {os.path.basename(int8)} {mib[1]:.1f} MiB "
                f"({mib[1] / mib[0]:.2f} of FP32)."
            )
            image = cv2.imread(calibration[0], cv2.IMREAD_COLOR)
            ref, out = (OnnxRuntime(self.cfg, p, providers=["CPUExecutionProvider"])([image])[0] for p in (fp32, int8))
        check_int8_agreement(out, ref, self.trained, INT8_SCORE, calibration[0])
        return int8


@EXPORTER_REGISTRY.register()
class CaffeExporter(Exporter):
    """model.prototxt + model.caffemodel (raw outputs), run once in OpenCV's Caffe importer."""

    runtime = "caffe"
    format = "caffe"
    description = "Caffe prototxt + caffemodel, raw peak-masked maps (CenterNet on ResNet)"

    @classmethod
    def unsupported(cls, cfg) -> str:
        detector = detector_class(cfg)
        if detector is None or not issubclass(detector, CenterNet):
            return "the Caffe exporter supports CenterNet"
        if cfg.MODEL.BACKBONE.NAME != "build_torchvision_resnet_backbone" or cfg.MODEL.CENTERNET.UPSAMPLER != "deconv":
            return "the Caffe exporter supports CenterNet on the ResNet backbone with its deconv neck"
        return ""

    def export(self) -> str:
        import cv2

        model = build_deploy_model(self.cfg, raw=True, allow_random=self.allow_random)
        prototxt, caffemodel = export_caffe(model, os.path.join(self.out_dir, "model"), self.size)
        net = cv2.dnn.readNetFromCaffe(prototxt, caffemodel)
        images = torch.rand(1, 3, *self.size) * 255
        net.setInput(images.numpy(), "images")
        names = list(net.getUnconnectedOutLayersNames())
        outputs = dict(zip(names, net.forward(names)))
        check_agreement("OpenCV (Caffe)", outputs, _reference(model, images), self.trained)
        write_sidecar(prototxt, self.model_info(raw=True))
        return prototxt


@EXPORTER_REGISTRY.register()
class TensorRTExporter(Exporter):
    """model_fp32.engine (model_fp16.engine with ``fp16``), built from an ONNX export
    made in a temporary folder; its properties in model_fp32.engine.centerx.json."""

    runtime = "tensorrt"
    format = "tensorrt"
    description = "TensorRT engine built from the ONNX graph (--fp16 for FP16; needs a GPU)"
    options = ("opset", "fp16")

    @classmethod
    def unsupported(cls, cfg) -> str:
        return "" if torch.cuda.is_available() else "TensorRT needs a CUDA GPU"

    def prepare(self) -> None:
        import_tensorrt()

    def export(self) -> str:
        fp16 = bool(self.settings.get("fp16", False))
        engine = os.path.join(self.out_dir, f"model_{'fp16' if fp16 else 'fp32'}.engine")
        with tempfile.TemporaryDirectory() as tmp:  # the ONNX graph it is built from is not left over model.onnx
            onnx_path = OnnxExporter(self.cfg, tmp, self.allow_random, **self.onnx_settings()).export()
            build_engine(
                onnx_path,
                engine,
                self.size,
                self.cfg.EXPORT.TENSORRT_MAX_BATCH,
                fp16,
                self.cfg.EXPORT.TENSORRT_WORKSPACE_MB,
            )
        write_sidecar(engine, self.model_info())
        return engine


def export(cfg, fmt: str, out_dir: str, allow_random: bool = False, **options: object | None) -> str:
    """Export the config's detector as ``fmt`` to ``out_dir``; returns the main file."""
    exporter = get_exporter(fmt)(cfg, out_dir, allow_random, **options)
    exporter.prepare()
    return exporter.export()


@EXPORTER_REGISTRY.register()
class TorchScriptExporter(Exporter):
    """model.ts (model_raw.ts with ``raw``): the deployment graph traced with
    ``torch.jit.trace`` at EXPORT.INPUT_SIZE (N, H, W stay free: the graph has no
    size-dependent Python branch), run once with ``torch.jit.load``."""

    runtime = "torchscript"
    format = "torchscript"
    description = "TorchScript module traced from the deployment graph (torch.jit.load, no centerX needed)"
    options = ("raw",)

    def export(self) -> str:
        raw = bool(self.settings.get("raw", False))
        model = build_deploy_model(self.cfg, raw=raw, allow_random=self.allow_random)
        os.makedirs(self.out_dir, exist_ok=True)
        path = os.path.join(self.out_dir, "model_raw.ts" if raw else "model.ts")
        images = torch.rand(1, 3, *self.size) * 255
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)  # torch 2.14 deprecates TorchScript
            traced = torch.jit.trace(model, images, strict=False, check_trace=False)
            torch.jit.save(traced, path, _extra_files={TORCHSCRIPT_ENTRY: json.dumps(self.model_info(raw))})
            loaded = torch.jit.load(path)
        size = os.path.getsize(path) / 2**20
        logger.info(f"Wrote {path} ({size:.1f} MiB, outputs {', '.join(_reference(model, images))}).")
        with torch.no_grad():
            outputs = {k: v.numpy() for k, v in loaded(images).items()}
        check_agreement("TorchScript", outputs, _reference(model, images), self.trained)
        return path


@EXPORTER_REGISTRY.register()
class OpenVINOExporter(Exporter):
    """The OpenVINO IR model.xml + model.bin, converted from an ONNX export made in a
    temporary folder
    (``openvino.convert_model``, FP32 weights), run once on OpenVINO's CPU device.
    INT8 would need NNCF (a heavy extra dependency) and is not offered. A model with
    deformable convs (exported at opset 19) fails OpenVINO's conversion (its ONNX reader
    has no DeformConv, 2026.4): an :class:`ExportError` naming the config key."""

    runtime = "openvino"
    format = "openvino"
    description = "OpenVINO IR (model.xml + model.bin, FP32) converted from the ONNX graph"
    options = ("raw", "opset")

    def prepare(self) -> None:
        try:
            import openvino  # noqa: F401
        except ImportError as e:
            raise ExportError(
                "--format openvino needs the openvino package (pip install openvino; ./run.sh setup "
                "installs it with the export extra)."
            ) from e

    def export(self) -> str:
        import openvino as ov

        raw = bool(self.settings.get("raw", False))
        xml = os.path.join(self.out_dir, "model_raw.xml" if raw else "model.xml")
        # one model, written and checked against: a second build of a random model would differ
        model = build_deploy_model(self.cfg, raw=raw, allow_random=self.allow_random)
        with tempfile.TemporaryDirectory() as tmp:  # converted from an ONNX graph that is not left over model.onnx
            onnx_path = OnnxExporter(self.cfg, tmp, self.allow_random, **self.settings).write(model)
            try:
                converted = ov.convert_model(onnx_path)
            except Exception as e:  # OpenVINO raises its own types; only the DeformConv case is explained
                if not has_deformable_convs(model):
                    raise
                raise ExportError(
                    f"OpenVINO {ov.__version__} could not convert this model's deformable convolutions "
                    f"({model.deformable_key} True; its ONNX reader has no DeformConv). For OpenVINO, export a "
                    f"plain-conv model ({model.deformable_key} False, trained that way); ONNX Runtime runs "
                    "this one (--format onnx --opset 19)."
                ) from e
        converted.set_rt_info(json.dumps(self.model_info(raw)), [OPENVINO_SECTION])
        os.makedirs(self.out_dir, exist_ok=True)
        ov.save_model(converted, xml, compress_to_fp16=False)
        logger.info(f"Wrote {xml} + .bin ({os.path.getsize(xml[:-4] + '.bin') / 2**20:.1f} MiB).")
        images = torch.rand(1, 3, *self.size) * 255
        compiled = ov.Core().compile_model(xml, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        result = compiled(images.numpy())
        outputs = {port.get_any_name(): result[port] for port in compiled.outputs}
        check_agreement("OpenVINO", outputs, _reference(model, images), self.trained)
        return xml
