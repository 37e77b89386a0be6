"""What an exported file says about itself, so that it runs with nothing beside it.

Every export carries the same string properties (:func:`describe_model`): the
architecture, class names, input size, pixel format and normalisation, the
score threshold, centerX's version and the whole deployment config (YAML), from
which :func:`config_from_model_file` rebuilds the config a runtime needs.

Where they are kept, per format:

- ONNX (``.onnx``, FP32 and INT8): the model's ``metadata_props``;
- TorchScript (``.ts``): an extra file ``centerx.json`` in the archive;
- OpenVINO (``.xml``): the model's ``rt_info`` entry ``centerx`` (a JSON string);
- Caffe (``.prototxt``) and TensorRT (``.engine``), which have no place for them:
  a ``<file>.centerx.json`` beside the file.
"""

import json
import os
from collections.abc import Sequence

from ..config import ConfigOverrideError, load_config, load_saved_config
from ..modeling.meta_arch.teachers import class_names
from ..plugins import PluginImportError, absolute_entry, import_modules, merge_imports
from ..version import __version__
from .runtimes import Runtime, build_runtime, num_classes, runtime_for_file, score_threshold

CONFIG_KEY = "centerx_config"
TORCHSCRIPT_ENTRY = "centerx.json"
OPENVINO_SECTION = "centerx"
SIDECAR_SUFFIX = ".centerx.json"


class ModelInfoError(ValueError):
    """An exported file without centerX's properties, where they are needed."""


def describe_model(cfg, raw: bool = False) -> dict[str, str]:
    """The properties an export of the deployment config ``cfg`` carries, as strings.

    Class names are MODEL.CENTERX.CLASS_NAMES, else those of the config's
    datasets (metadata only); ``cfg``'s config is saved with them filled in."""
    names = class_names(cfg)
    saved = cfg.clone()
    saved.defrost()
    if names is not None:
        saved.MODEL.CENTERX.CLASS_NAMES = tuple(names)
    height, width = cfg.EXPORT.INPUT_SIZE
    return {
        "producer": "centerX",
        "centerx_version": __version__,
        "architecture": cfg.MODEL.META_ARCHITECTURE,
        "num_classes": str(num_classes(cfg)),
        "class_names": json.dumps(names),
        "input_size": json.dumps([int(height), int(width)]),
        "input_format": cfg.INPUT.FORMAT,
        "pixel_mean": json.dumps([float(v) for v in cfg.MODEL.PIXEL_MEAN]),
        "pixel_std": json.dumps([float(v) for v in cfg.MODEL.PIXEL_STD]),
        "score_threshold": str(score_threshold(cfg)),
        "detections_per_image": str(cfg.TEST.DETECTIONS_PER_IMAGE),
        "outputs": "raw" if raw else "decoded",
        CONFIG_KEY: saved.dump(),
    }


def sidecar_path(path: str) -> str:
    """The JSON file beside a Caffe / TensorRT export that holds its properties."""
    return path + SIDECAR_SUFFIX


def write_sidecar(path: str, info: dict[str, str]) -> str:
    """Write ``info`` beside ``path``; returns the JSON file's path."""
    out = sidecar_path(path)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(info, f, indent=1)
    return out


def read_model_info(path: str) -> dict[str, str] | None:
    """The centerX properties of the exported file ``path``, or None when it has none
    (exported before they existed, or not by centerX)."""
    ending = os.path.splitext(path)[1].lower()
    info: dict[str, str] | None = None
    if ending == ".onnx":
        import onnx

        model = onnx.load(path, load_external_data=False)
        info = {p.key: p.value for p in model.metadata_props}
    elif ending == ".ts":
        import torch

        extra = {TORCHSCRIPT_ENTRY: ""}
        torch.jit.load(path, map_location="cpu", _extra_files=extra)
        info = json.loads(extra[TORCHSCRIPT_ENTRY]) if extra[TORCHSCRIPT_ENTRY] else None
    elif ending == ".xml":
        import openvino as ov

        model = ov.Core().read_model(path)
        if model.has_rt_info([OPENVINO_SECTION]):
            info = json.loads(model.get_rt_info([OPENVINO_SECTION]).astype(str))
    if info is None and os.path.isfile(sidecar_path(path)):
        with open(sidecar_path(path), encoding="utf-8") as f:
            info = json.load(f)
    return info if info and CONFIG_KEY in info else None


def config_from_model_file(path: str, opts: Sequence[str] = ()):
    """The deployment config saved in the exported file ``path``, with ``opts``
    (``KEY VALUE`` pairs) merged on top; the modules of its ``IMPORTS`` imported
    first (centerx.plugins).

    Raises:
        ModelInfoError: the file carries no centerX config (say which to give instead).
    """
    info = read_model_info(path)
    if info is None:
        raise ModelInfoError(
            f"{path} carries no centerX config (exported before centerX wrote one, or not by "
            "centerX): give the config it was exported from with --config-file."
        )
    return load_saved_config(info[CONFIG_KEY], opts)


def saved_config_text(path: str) -> str | None:
    """The config YAML the exported file ``path`` carries, or None (none, or a file
    its reader cannot open: the command's own checks say why)."""
    try:
        info = read_model_info(path)
    except Exception:  # any reader's error; reported when the command opens the file itself
        return None
    return info[CONFIG_KEY] if info else None


def load_model_config(config_file: str = "", model: str = "", opts: Sequence[str] = (), imports: Sequence[str] = ()):
    """The config a command that runs a model uses (predict, evaluate): ``config_file``
    with ``opts`` merged, else the config saved in the exported ``model``; the
    modules of ``imports`` (``--import``) and of the config's IMPORTS imported first.

    Raises:
        ValueError: a file is missing or unreadable, a module cannot be imported
            (PluginImportError), overrides cannot be merged (ConfigOverrideError), or
            neither file is given; the message names the flag and what to pass.
    """
    if config_file:
        if not os.path.isfile(config_file):
            raise ValueError(f"--config-file {config_file}: no such file")
        try:
            return load_config(config_file, opts, imports)
        except (ConfigOverrideError, PluginImportError):
            raise
        except (FileNotFoundError, ValueError) as e:
            raise ValueError(f"--config-file {config_file}: {e}") from None
    if not model:
        raise ValueError(
            "give the model: --model FILE (an exported file), or --config-file FILE with "
            "MODEL.WEIGHTS <checkpoint> (PyTorch)"
        )
    if not os.path.isfile(model):
        raise ValueError(f"--model {model}: no such file")
    entries = [absolute_entry(e, os.getcwd()) for e in imports]
    import_modules(entries)
    try:
        cfg = config_from_model_file(model, opts)
    except (ConfigOverrideError, ModelInfoError, PluginImportError):
        raise
    except Exception as e:  # not a model file its reader can open
        first = str(e).splitlines()[0] if str(e) else ""
        raise ValueError(
            f"--model {model}: cannot read it as a {os.path.splitext(model)[1]} model ({type(e).__name__}: {first})"
        ) from None
    cfg.IMPORTS = merge_imports(cfg.IMPORTS, entries)
    return cfg


def open_exported(model_path: str, runtime: str | None = None, opts: Sequence[str] = ()) -> Runtime:
    """The exported file ``model_path`` ready to run, with nothing else: its config
    from the file (:func:`config_from_model_file`, ``opts`` merged on top), its
    runtime the one that reads its ending unless ``runtime`` names another.
    ``open_exported("model.onnx")([bgr_image])`` gives detections."""
    return build_runtime(runtime or runtime_for_file(model_path), config_from_model_file(model_path, opts), model_path)
