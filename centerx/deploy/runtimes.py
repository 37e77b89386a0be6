"""Inference on each deployment runtime with the same pre- and post-processing.

Every runtime takes BGR images of any size, letterboxes them to
``EXPORT.INPUT_SIZE`` (:class:`Letterbox`), runs its graph, decodes raw outputs
where the graph has no decode (Caffe, ``--raw`` ONNX) with the
meta-architecture's own decode, drops scores not above the meta-architecture's
``SCORE_THRESH_TEST`` and maps the boxes back onto each original image.
"""

import logging
import os
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from detectron2.modeling import build_model
from detectron2.utils.registry import Registry

from ..config import ConfigValueError
from ..device import check_device
from ..modeling.meta_arch import detector_class
from .letterbox import Letterbox
from .tensorrt_engine import execute, load_engine
from .wrapper import build_deploy_model, check_input_size, decode_raw_outputs, deploy_config

logger = logging.getLogger(__name__)


def score_threshold(cfg) -> float:
    """The SCORE_THRESH_TEST of the config's detector (e.g. MODEL.CENTERNET.SCORE_THRESH_TEST)."""
    detector = detector_class(cfg)
    if detector is None:
        raise ConfigValueError(
            f"MODEL.META_ARCHITECTURE '{cfg.MODEL.META_ARCHITECTURE}' is not a centerX point detector; "
            "the runtimes run CenterNet, TTFNet or another PointDetector."
        )
    return float(detector.config_node(cfg).SCORE_THRESH_TEST)


def num_classes(cfg) -> int:
    """The NUM_CLASSES of the config's detector."""
    detector = detector_class(cfg)
    if detector is None:
        raise ConfigValueError(
            f"MODEL.META_ARCHITECTURE '{cfg.MODEL.META_ARCHITECTURE}' is not a centerX point detector."
        )
    return int(detector.config_node(cfg).NUM_CLASSES)


RUNTIME_REGISTRY = Registry("RUNTIME")
RUNTIME_REGISTRY.__doc__ = """Runtime classes (subclasses of :class:`Runtime`); each is chosen by its
``name`` (``--runtime`` of the projects/speedup scripts) and built by its ``from_file``."""


class Runtime:
    """Base class: letterbox -> :meth:`run` -> decode if raw -> threshold -> original pixels.

    Subclasses implement :meth:`run` and :meth:`from_file`, and are registered in
    ``RUNTIME_REGISTRY`` under their ``name``.
    """

    name = ""
    # what --model names for this runtime ("" = none: it loads MODEL.WEIGHTS)
    model_file = ""
    # the Python packages it imports (./run.sh benchmark leaves it out where one is missing)
    requires: tuple[str, ...] = ()
    # the keyword arguments its from_file takes besides the file ("threads": CPU threads of
    # a runtime with its own thread pool); build_runtime passes only these
    options: tuple[str, ...] = ()

    @classmethod
    def from_file(cls, cfg, model_path: str) -> "Runtime":
        """The runtime for the config and the exported file ``model_path`` (:attr:`model_file`)."""
        raise NotImplementedError

    def __init__(self, cfg):
        cfg = deploy_config(cfg)
        self.cfg = cfg
        self.letterbox = Letterbox(check_input_size(cfg.EXPORT.INPUT_SIZE), cfg.INPUT.FORMAT, cfg.MODEL.PIXEL_MEAN)
        self.score_thresh = score_threshold(cfg)
        self._decoder = None

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """float32 [N, 3, H, W] pixels (0..255, ``INPUT.FORMAT``) -> the graph's outputs
        by name: ``boxes``, ``scores``, ``classes`` or raw ``heatmap`` + regression maps."""
        raise NotImplementedError

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Like :meth:`run`, always decoded: ``boxes`` [N, K, 4] input pixels,
        ``scores`` [N, K], ``classes`` [N, K] int64."""
        return self.decode(self.run(batch))

    def decode(self, out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The graph's outputs, decoded with the detector's own ``decode`` when they
        are raw (``heatmap`` + regression maps); decoded outputs pass as they are."""
        if "heatmap" not in out:
            return out
        if self._decoder is None:
            cfg = self.cfg.clone()
            cfg.defrost()
            cfg.MODEL.DEVICE = "cpu"
            cfg.MODEL.CENTERX.BACKBONE_WEIGHTS = ""
            self._decoder = build_model(cfg).eval()
        with torch.no_grad():
            det = decode_raw_outputs(
                self._decoder, {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in out.items()}
            )
        return {k: v.numpy() for k, v in det.items()}

    def postprocess(
        self, det: dict[str, np.ndarray], scales, images: Sequence[np.ndarray]
    ) -> list[dict[str, np.ndarray]]:
        """Decoded outputs of a letterboxed batch -> per image, the detections above
        the score threshold in its own pixels (see :meth:`__call__`)."""
        results = []
        for i, img in enumerate(images):
            keep = det["scores"][i] > self.score_thresh
            results.append(
                {
                    "boxes": Letterbox.to_original(det["boxes"][i][keep], scales[i], img.shape),
                    "scores": det["scores"][i][keep],
                    "classes": det["classes"][i][keep],
                }
            )
        return results

    def __call__(self, images: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """
        Args:
            images: BGR uint8 images [h_i, w_i, 3].

        Returns:
            per image: ``boxes`` [M, 4] (x1, y1, x2, y2) in its own pixels,
            ``scores`` [M], ``classes`` [M], highest score first.
        """
        batch, scales = self.letterbox(images)
        return self.postprocess(self.infer(batch), scales, images)


@RUNTIME_REGISTRY.register()
class TorchRuntime(Runtime):
    """PyTorch eager: the :class:`DeployModel` of the config (``MODEL.WEIGHTS``,
    loaded strictly; ``allow_random`` for a random model on purpose) on
    ``MODEL.DEVICE``."""

    name = "pytorch"

    @classmethod
    def from_file(cls, cfg, model_path: str = ""):
        return cls(cfg)

    def __init__(self, cfg, raw: bool = False, allow_random: bool = False):
        super().__init__(cfg)
        check_device(cfg.MODEL.DEVICE)
        self.model = build_deploy_model(cfg, raw=raw, allow_random=allow_random)
        self.device = torch.device(cfg.MODEL.DEVICE)

    def run(self, batch):
        with torch.no_grad():
            out = self.model(torch.from_numpy(batch).to(self.device))
        return {k: v.cpu().numpy() for k, v in out.items()}


@RUNTIME_REGISTRY.register()
class OnnxRuntime(Runtime):
    """ONNX Runtime on an exported ``.onnx`` (decoded or raw)."""

    name = "onnxruntime"
    requires = ("onnxruntime",)
    model_file = ".onnx (decoded or raw, FP32 or INT8)"
    options = ("threads",)

    @classmethod
    def from_file(cls, cfg, model_path: str, threads: int | None = None):
        options = None
        if threads:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = int(threads)
        return cls(cfg, model_path, session_options=options)

    def __init__(self, cfg, onnx_path: str, providers: Sequence[str] | None = None, session_options=None):
        """
        Args:
            providers: ONNX Runtime execution providers in order of preference;
                default CUDA where this onnxruntime has it, then CPU.
            session_options: an ``onnxruntime.SessionOptions`` (threads, ...), or None.
        """
        super().__init__(cfg)
        import onnxruntime as ort

        if providers is None:
            providers = [
                p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()
            ]
        self.session = ort.InferenceSession(onnx_path, session_options, providers=list(providers))
        exported = self.session.get_modelmeta().custom_metadata_map.get("num_classes")
        if exported is not None and int(exported) != num_classes(cfg):
            key = f"{detector_class(cfg).config_prefix}.NUM_CLASSES"
            raise ValueError(
                f"{onnx_path} was exported with {exported} classes, but the config has "
                f"{num_classes(cfg)} ({key}): give the config it was exported from (its run's "
                "config.yaml)."
            )
        self.output_names = [o.name for o in self.session.get_outputs()]
        logger.info(f"ONNX Runtime on {self.session.get_providers()[0]}: {onnx_path}")

    def run(self, batch):
        return dict(zip(self.output_names, self.session.run(self.output_names, {"images": batch})))


@RUNTIME_REGISTRY.register()
class CaffeRuntime(Runtime):
    """A Caffe export (``.prototxt`` + ``.caffemodel``, raw outputs) through
    OpenCV's ``cv2.dnn`` Caffe importer (OpenCV 4.x)."""

    name = "caffe"
    requires = ("cv2",)
    model_file = ".prototxt (its .caffemodel beside it)"

    @classmethod
    def from_file(cls, cfg, model_path: str):
        return cls(cfg, model_path, os.path.splitext(model_path)[0] + ".caffemodel")

    def __init__(self, cfg, prototxt: str, caffemodel: str):
        super().__init__(cfg)
        import cv2

        self.net = cv2.dnn.readNetFromCaffe(prototxt, caffemodel)
        self.output_names = list(self.net.getUnconnectedOutLayersNames())

    def run(self, batch):
        self.net.setInput(batch, "images")
        return dict(zip(self.output_names, self.net.forward(self.output_names)))


@RUNTIME_REGISTRY.register()
class TensorRTRuntime(Runtime):
    """A serialised TensorRT engine (built by ``centerx.deploy.tensorrt_engine``)
    on the current CUDA device; input and output buffers are torch CUDA tensors."""

    name = "tensorrt"
    requires = ("tensorrt",)
    model_file = ".engine"

    @classmethod
    def from_file(cls, cfg, model_path: str):
        return cls(cfg, model_path)

    def __init__(self, cfg, engine_path: str):
        super().__init__(cfg)

        self.engine = load_engine(engine_path)
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()

    def run(self, batch):
        images = torch.from_numpy(batch).cuda(non_blocking=True)
        out = execute(self.engine, self.context, images, self.stream)
        return {k: v.cpu().numpy() for k, v in out.items()}


@RUNTIME_REGISTRY.register()
class TorchScriptRuntime(Runtime):
    """A TorchScript export (``torch.jit.load``) on ``MODEL.DEVICE``."""

    name = "torchscript"
    model_file = ".ts"

    def __init__(self, cfg, path: str):
        super().__init__(cfg)
        self.device = torch.device(cfg.MODEL.DEVICE)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)  # torch 2.14 deprecates TorchScript
            self.module = torch.jit.load(path, map_location=self.device).eval()

    @classmethod
    def from_file(cls, cfg, model_path: str):
        return cls(cfg, model_path)

    def run(self, batch):
        with torch.no_grad():
            out = self.module(torch.from_numpy(batch).to(self.device))
        return {k: v.cpu().numpy() for k, v in out.items()}


@RUNTIME_REGISTRY.register()
class OpenVINORuntime(Runtime):
    """An OpenVINO IR (``.xml`` with its ``.bin``) compiled for OpenVINO's ``device``
    (default CPU; the inputs keep N, H and W dynamic). ``precision`` is OpenVINO's
    INFERENCE_PRECISION_HINT: "f32" (default) computes in FP32 as the other
    runtimes do; on a CPU with bfloat16 units OpenVINO would otherwise pick
    "bf16" (faster, scores within ~1e-3)."""

    name = "openvino"
    requires = ("openvino",)
    model_file = ".xml (its .bin beside it)"
    options = ("threads",)

    def __init__(self, cfg, xml: str, device: str = "CPU", threads: int | None = None, precision: str = "f32"):
        super().__init__(cfg)
        import openvino as ov

        config = {"INFERENCE_PRECISION_HINT": precision}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.compiled = ov.Core().compile_model(xml, device, config)
        self.outputs = [(port, port.get_any_name()) for port in self.compiled.outputs]
        logger.info(f"OpenVINO on {device}: {xml}")

    @classmethod
    def from_file(cls, cfg, model_path: str, threads: int | None = None):
        return cls(cfg, model_path, threads=threads)

    def run(self, batch):
        result = self.compiled(batch)
        return {name: result[port] for port, name in self.outputs}


def get_runtime(name: str) -> type:
    """The registered runtime class called ``name``."""
    by_name = {cls.name: cls for _, cls in RUNTIME_REGISTRY}
    if name not in by_name:
        raise ValueError(f"Unknown runtime {name!r}; registered: {sorted(by_name)}.")
    return by_name[name]


def runtime_names() -> list[str]:
    """Every registered ``--runtime``, sorted."""
    return sorted(cls.name for _, cls in RUNTIME_REGISTRY)


def add_runtime_arguments(parser) -> None:
    """The ``--config-file``, ``--runtime`` and ``--model`` flags of every script
    that runs a model on a chosen runtime (projects/speedup)."""
    files = "; ".join(
        f"{cls.name}: {cls.model_file}"
        for _, cls in sorted(RUNTIME_REGISTRY, key=lambda i: i[1].name)
        if cls.model_file
    )
    parser.add_argument("--config-file", required=True, metavar="FILE", help="the model's config")
    parser.add_argument("--runtime", required=True, choices=runtime_names(), help="where to run the model")
    parser.add_argument(
        "--model",
        default="",
        metavar="FILE",
        help=f"exported file ({files}); not used by --runtime pytorch (MODEL.WEIGHTS)",
    )


def build_runtime(name: str, cfg, model_path: str = "", threads: int | None = None) -> Runtime:
    """The registered runtime called ``name`` for ``cfg`` and the exported file
    ``model_path`` (unused by runtimes without a ``model_file``, such as
    "pytorch", which loads ``MODEL.WEIGHTS``). ``threads``: CPU threads of a
    runtime with its own pool (those whose ``options`` name it; PyTorch-based
    runtimes follow ``torch.set_num_threads``); None leaves the runtime's default."""
    by_name = {cls.name: cls for _, cls in RUNTIME_REGISTRY}
    if name not in by_name:
        raise ValueError(f"Unknown runtime {name!r}; registered: {sorted(by_name)}.")
    runtime = by_name[name]
    if runtime.model_file and not model_path:
        raise ValueError(f"The {name} runtime needs the exported model file ({runtime.model_file}): pass --model.")
    if runtime.model_file:
        check_model_file(name, model_path, by_name)
    options = {"threads": threads} if threads and "threads" in runtime.options else {}
    return runtime.from_file(cfg, model_path, **options)


def runtime_for_file(model_path: str) -> str:
    """The registered runtime that reads ``model_path``'s ending (the first by name
    when several do); ``ValueError`` naming the endings there are runtimes for."""
    ending = os.path.splitext(model_path)[1].lower()
    readers = sorted(cls.name for _, cls in RUNTIME_REGISTRY if cls.model_file.split()[:1] == [ending])
    if not readers:
        endings = sorted({cls.model_file.split()[0] for _, cls in RUNTIME_REGISTRY if cls.model_file})
        raise ValueError(
            f"No runtime reads a '{ending}' file ({model_path}); exported files end in "
            f"{', '.join(endings)}. A training checkpoint (.pth) runs with MODEL.WEIGHTS instead."
        )
    return readers[0]


def check_model_file(name: str, model_path: str, runtimes: dict[str, type]) -> None:
    """Refuse, before anything is loaded, a model file whose ending is not the one
    the runtime ``name`` reads (naming the runtime that reads it)."""
    wanted = runtimes[name].model_file.split()[0]
    if not wanted.startswith(".") or model_path.lower().endswith(wanted):
        return
    ending = os.path.splitext(model_path)[1].lower()
    readers = [n for n, cls in sorted(runtimes.items()) if cls.model_file.split()[:1] == [ending]]
    raise ValueError(
        f"--runtime {name} runs a {runtimes[name].model_file} file, but --model {model_path} is a "
        f"'{ending}' file" + (f": run it with --runtime {readers[0]}." if readers else ".")
    )
