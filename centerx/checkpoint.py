"""Reading weight files safely (no code from them runs) and strictly (no model
that is not the one asked for).

- ``.pth`` / ``.pt`` files go through ``torch.load(weights_only=True)``: tensors,
  numbers, strings and containers only.
- ``.pkl`` files (detectron2 / Caffe2 model zoo) go through a restricted
  unpickler that admits only numpy arrays, numbers, strings and containers; a
  pickle that asks for anything else (the way a crafted file runs code) is
  refused with :class:`UnsafeWeightsError`.
- :class:`StrictCheckpointer` refuses a checkpoint that leaves a parameter or
  buffer of the model missing or mis-shaped, listing them
  (:class:`WeightsMismatchError`): what evaluation, export, inference and
  teachers use. Training loads leniently (fine-tuning), with one summary warning.
"""
import io
import logging
import os
import pickle
from typing import Any, Dict, List

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils.file_io import PathManager

logger = logging.getLogger(__name__)

# (module, name) a weights pickle may refer to: containers, numbers, strings and
# what numpy needs to rebuild arrays and scalars (numpy >= 2 names its core _core)
_SAFE_GLOBALS = {
    ("builtins", name) for name in ("dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "str",
                                    "bytes", "bytearray", "bool")
} | {
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
} | {(core, name) for core in ("numpy.core.multiarray", "numpy._core.multiarray")
     for name in ("_reconstruct", "scalar")}


class WeightsDownloadError(OSError):
    """A weights URL that cannot be fetched (no network, wrong address)."""


def local_weights_path(path: str, key: str = "MODEL.WEIGHTS") -> str:
    """The local file of a weights location, fetched through detectron2's
    ``PathManager`` when it is remote.

    Accepts a local path (``~`` expanded), ``file://`` + path, and every scheme
    the ``PathManager`` handles (``http://``, ``https://``, ``detectron2://`` for
    detectron2's model zoo, ...): those are downloaded once into its cache
    (``$FVCORE_CACHE``, default ``~/.torch/iopath_cache``) and read from there
    afterwards, as detectron2 does.

    Args:
        path: the location as written in the config.
        key: the config key it comes from, named in errors.

    Raises:
        FileNotFoundError: a local file that does not exist.
        WeightsDownloadError: a URL that cannot be fetched (one line naming the
            key, the URL and the reason).
    """
    if path.startswith("file://"):
        path = path[len("file://"):]
    if "://" not in path:
        local = os.path.expanduser(path)
        if not os.path.isfile(local):
            raise FileNotFoundError(f"{key}: weights file '{path}' does not exist.")
        return local
    try:
        local = PathManager.get_local_path(path)
    except Exception as e:  # urllib, socket and handler errors alike: the fetch failed
        reason = str(getattr(e, "reason", "") or e).splitlines()[0] if str(e) else type(e).__name__
        if getattr(e, "code", None) is not None:  # an HTTP error status
            reason = f"HTTP {e.code}: {reason}"
        raise WeightsDownloadError(f"{key}: cannot fetch '{path}' ({reason}). Without a network, download the "
                                   f"file elsewhere and set {key} to its local path.") from None
    if not os.path.isfile(local):
        raise WeightsDownloadError(f"{key}: '{path}' did not give a file.")
    return local


class UnsafeWeightsError(pickle.UnpicklingError):
    """A weights file that asks to run code, or to build objects that are not
    arrays, numbers, strings or containers."""


class MissingWeightsError(ValueError):
    """No weights given where a random model would be silently wrong."""


class WeightsMismatchError(ValueError):
    """A checkpoint that does not fill the model: missing or mis-shaped keys."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: str):
        super().__init__(file, encoding="latin1")
        self._path = path

    def find_class(self, module: str, name: str):
        if (module, name) in _SAFE_GLOBALS or (module == "numpy" and _is_numpy_scalar_type(name)):
            return super().find_class(module, name)
        raise UnsafeWeightsError(
            f"Refusing to load '{self._path}': its pickle asks for {module}.{name}, which could run code when "
            "loaded. A weights file may hold only numpy arrays, numbers, strings and containers. If you trust "
            "the file, convert it once to a plain state dict saved with torch.save."
        )


def _is_numpy_scalar_type(name: str) -> bool:
    import numpy as np

    return isinstance(getattr(np, name, None), type) and issubclass(getattr(np, name), np.generic)


def load_pickle(path: str) -> Any:
    """Unpickle ``path`` (Python 2 pickles too, latin-1) admitting only numpy
    arrays, numbers, strings and containers; :class:`UnsafeWeightsError` otherwise."""
    with PathManager.open(path, "rb") as f:
        return _RestrictedUnpickler(io.BytesIO(f.read()), path).load()


def load_torch(path: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with a clear error for a
    file that holds anything else."""
    try:
        with PathManager.open(path, "rb") as f:
            return torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeWeightsError(
            f"Refusing to load '{path}' with weights only: it holds objects that are not tensors, numbers, strings "
            f"or containers ({str(e).splitlines()[0]}). If you trust the file, load it yourself and save its "
            "state dict with torch.save."
        ) from e


class SafeCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` that reads ``.pkl`` files with :func:`load_pickle`
    and everything else with :func:`load_torch` (as detectron2 otherwise does,
    with the same handling of detectron2 / Caffe2 model-zoo files), and sums up
    missing, unexpected and mis-shaped keys in one warning. ``load`` takes any
    location :func:`local_weights_path` takes; ``weights_key`` names the config
    key it came from in errors."""

    weights_key = "MODEL.WEIGHTS"

    def load(self, path: str, checkpointables=None):
        if path and not os.path.isfile(path):
            path = local_weights_path(path, self.weights_key)
        return super().load(path, checkpointables=checkpointables)

    def _load_file(self, filename: str) -> Dict[str, Any]:
        if filename.endswith(".pkl"):
            data = load_pickle(filename)
            if not isinstance(data, dict):
                raise ValueError(f"'{filename}' holds a {type(data).__name__}, not a dict of weights.")
            if "model" in data and "__author__" in data:  # detectron2 model zoo
                return data
            data = data.get("blobs", data)  # Caffe2 / Detectron1 model zoo
            data = {k: v for k, v in data.items() if not k.endswith("_momentum")}
            return {"model": data, "__author__": "Caffe2", "matching_heuristics": True}
        return super()._load_file(filename)

    def _torch_load(self, f: str) -> Dict[str, Any]:
        return load_torch(f)

    def _log_incompatible_keys(self, incompatible) -> None:
        problems = describe_incompatible(incompatible)
        if problems:
            logger.warning("Loaded weights do not fit the model exactly (fine-tuning keeps what fits, the rest stays "
                           "as initialised): " + "; ".join(problems))


class StrictCheckpointer(SafeCheckpointer):
    """:class:`SafeCheckpointer` that refuses a checkpoint leaving any parameter or
    buffer of the model missing or mis-shaped (:class:`WeightsMismatchError`,
    naming them). BatchNorm's ``num_batches_tracked`` counters (absent from old
    checkpoints, unused in eval mode) may be missing; unexpected keys are logged."""

    def _load_model(self, checkpoint):
        incompatible = super()._load_model(checkpoint)
        missing = [k for k in incompatible.missing_keys if not k.endswith("num_batches_tracked")]
        shapes = [f"{key} (file {tuple(shape_file)} vs model {tuple(shape_model)})"
                  for key, shape_file, shape_model in incompatible.incorrect_shapes]
        if missing or shapes:
            raise WeightsMismatchError(
                "the weights do not fit this model's config: "
                + "; ".join(part for part in (_listed("missing", missing), _listed("mis-shaped", shapes)) if part)
                + ". Check MODEL.META_ARCHITECTURE, the number of classes, the backbone depth and the options "
                "of the config the weights were trained with.")
        return incompatible

    def _log_incompatible_keys(self, incompatible) -> None:
        if incompatible.unexpected_keys:
            logger.info("Keys of the checkpoint this model does not use: " + _listed("unused",
                                                                                   incompatible.unexpected_keys))


def describe_incompatible(incompatible) -> List[str]:
    """One phrase per kind of mismatch: missing, unexpected, mis-shaped keys."""
    missing = [k for k in incompatible.missing_keys if not k.endswith("num_batches_tracked")]
    shapes = [f"{key} (file {tuple(shape_file)} vs model {tuple(shape_model)})"
              for key, shape_file, shape_model in incompatible.incorrect_shapes]
    return [part for part in (_listed("missing", missing), _listed("mis-shaped", shapes),
                              _listed("unused", incompatible.unexpected_keys)) if part]


def _listed(kind: str, keys: List[str], limit: int = 8) -> str:
    if not keys:
        return ""
    shown = ", ".join(keys[:limit]) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")
    return f"{len(keys)} {kind} ({shown})"
