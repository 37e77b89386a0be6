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
import pickletools
import re
import urllib.parse
import zipfile
from typing import Any

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils.file_io import PathManager

from .downloads import DownloadError

logger = logging.getLogger(__name__)

# (module, name) a weights pickle may refer to: containers, numbers, strings and
# what numpy needs to rebuild arrays and scalars (numpy >= 2 names its core _core)
_SAFE_GLOBALS = (
    {
        ("builtins", name)
        for name in (
            "dict",
            "list",
            "tuple",
            "set",
            "frozenset",
            "int",
            "float",
            "complex",
            "str",
            "bytes",
            "bytearray",
            "bool",
        )
    }
    | {
        ("collections", "OrderedDict"),
        ("_codecs", "encode"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }
    | {
        (core, name)
        for core in ("numpy.core.multiarray", "numpy._core.multiarray")
        for name in ("_reconstruct", "scalar")
    }
)


class WeightsDownloadError(OSError):
    """A weights URL that cannot be fetched (no network, wrong address, a
    download that broke off or does not match its hash)."""


def local_weights_path(path: str, key: str = "MODEL.WEIGHTS") -> str:
    """The local file of a weights location, fetched through detectron2's
    ``PathManager`` when it is remote.

    Accepts a local path (``~`` expanded), ``file://`` + path, and every scheme
    the ``PathManager`` handles (``http://``, ``https://``, ``detectron2://`` for
    detectron2's model zoo, ...). URLs are fetched with
    :mod:`centerx.downloads` (cache keyed by the whole URL, bounded waits,
    complete files only, ``#sha256=`` checks, revalidation), and a downloaded
    file is kept only when it reads as a weights file (:func:`read_weights`).

    Args:
        path: the location as written in the config.
        key: the config key it comes from, named in errors.

    Raises:
        FileNotFoundError: a local file that does not exist.
        WeightsDownloadError: a URL that cannot be fetched (one line naming the
            key, the URL and the reason).
    """
    if path.startswith("file://"):
        path = path[len("file://") :]
    if "://" not in path:
        local = os.path.expanduser(path)
        if not os.path.isfile(local):
            raise FileNotFoundError(f"{key}: weights file '{path}' does not exist.")
        return local
    pickled = urllib.parse.urlparse(path).path.endswith(".pkl")
    kwargs = (
        {"validate": lambda tmp: read_weights(tmp, pickled=pickled)} if path.startswith(("http://", "https://")) else {}
    )
    try:
        local = PathManager.get_local_path(path, **kwargs)
    except DownloadError as e:
        raise WeightsDownloadError(
            f"{key}: {e} Without a network, download the file elsewhere and set {key} to its local path."
        ) from None
    except Exception as e:  # other handlers' errors (detectron2://, ...): the fetch failed
        reason = str(getattr(e, "reason", "") or e).splitlines()[0] if str(e) else type(e).__name__
        if getattr(e, "code", None) is not None:  # an HTTP error status
            reason = f"HTTP {e.code}: {reason}"
        raise WeightsDownloadError(
            f"{key}: cannot fetch '{path}' ({reason}). Without a network, download the "
            f"file elsewhere and set {key} to its local path."
        ) from None
    if not os.path.isfile(local):
        raise WeightsDownloadError(f"{key}: '{path}' did not give a file.")
    return local


class NotWeightsFileError(ValueError):
    """A file given as weights that is no weights file at all (empty, a web page,
    a config, an archive without tensors, a damaged file); the message says what
    it is."""


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


def describe_non_weights(path: str) -> str | None:
    """What ``path`` is when it plainly is not a weights file (``"an empty file"``,
    ``"an HTML page"``, ``"a YAML file"``, ``"a zip archive without tensors"``, ...),
    else None. Looks at the first bytes only (and, for a zip, its file list)."""
    size = os.path.getsize(path)
    if size == 0:
        return "an empty file (0 bytes)"
    with open(path, "rb") as f:
        head = f.read(4096)
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except zipfile.BadZipFile:
            return f"a damaged or truncated zip / PyTorch file ({size} bytes)"
        if not any(n.endswith("data.pkl") for n in names):
            shown = ", ".join(names[:4]) + (" ..." if len(names) > 4 else "")
            return f"a zip archive without tensors (it holds {shown or 'nothing'}), not a PyTorch checkpoint"
        return None
    if head[:1] == b"\x80":  # a pickle (protocol 2 and later): detectron2 .pkl, legacy torch .pth
        return None
    try:
        text = head.decode("utf-8-sig").lstrip()
    except UnicodeDecodeError:
        return None
    if not text.isprintable() and not all(c.isprintable() or c.isspace() for c in text[:512]):
        return None
    lower = text[:512].lower()
    if lower.startswith("<") and ("<html" in lower or "<!doctype" in lower or "<head" in lower):
        return "an HTML page (a web page saved in place of the file?)"
    if lower.startswith("<"):
        return "an XML / markup text file"
    if lower.startswith(("{", "[")):
        return "a JSON text file"
    if re.match(r"^(_base_|model|solver|datasets|input|test)\s*:", lower, re.MULTILINE) or "\nmodel:" in lower:
        return "a YAML config (give it with --config-file; MODEL.WEIGHTS takes the trained .pth / .pkl file)"
    if re.match(r"^[\w.-]+\s*:", lower):
        return "a YAML text file"
    return None  # other text: left to the loaders (a protocol-0 pickle is text too)


def _refuse_non_weights(path: str) -> None:
    what = describe_non_weights(path)
    if what is not None:
        raise NotWeightsFileError(
            f"'{path}' is {what}, not a weights file (.pth / .pt from torch.save, or a detectron2 / Caffe2 .pkl)."
        )


def load_pickle(path: str) -> Any:
    """Unpickle ``path`` (Python 2 pickles too, latin-1) admitting only numpy
    arrays, numbers, strings and containers; :class:`UnsafeWeightsError` otherwise,
    :class:`NotWeightsFileError` for a file that is no pickle or is cut short."""
    _refuse_non_weights(path)
    with open(path, "rb") as f:
        data = f.read()
    try:
        return _RestrictedUnpickler(io.BytesIO(data), path).load()
    except UnsafeWeightsError:
        raise
    except Exception as e:  # whatever a damaged pickle makes the unpickler raise (EOF, struct, index errors)
        raise NotWeightsFileError(
            f"'{path}' is not a readable pickle of weights: damaged or truncated "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})."
        ) from None


_GLOBAL_ASKED = re.compile(r"(?:Unsupported global: GLOBAL|global) ([\w.]+)")


def _parses_as_pickle(path: str) -> bool:
    """Whether ``path`` (its ``data.pkl`` for a zip / PyTorch file) reads as a pickle up to
    its STOP, opcode by opcode without running anything (pickletools.genops): PyTorch's
    weights-only loader reports an opcode it does not take ("Unsupported operand") alike
    for a pickle that builds objects and for a file that is no pickle at all."""

    def walk(stream) -> bool:
        try:
            for _ in pickletools.genops(stream):
                pass
            return True
        except Exception:  # an unknown opcode, an argument that does not parse, the end before STOP
            return False

    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
            return bool(pickles) and walk(io.BytesIO(archive.read(pickles[0])))
    with open(path, "rb") as f:
        return walk(f)


def load_torch(path: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU: tensors, numbers,
    strings and containers only. :class:`UnsafeWeightsError` for a file that holds
    anything else, :class:`NotWeightsFileError` for one that is not a PyTorch
    file or is cut short."""
    _refuse_non_weights(path)
    try:
        with open(path, "rb") as f:
            return torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        asked = _GLOBAL_ASKED.search(str(e))
        if asked is None and "weights only" not in str(e).lower():
            raise NotWeightsFileError(
                f"'{path}' is not a readable PyTorch file: damaged or truncated ({str(e).splitlines()[0]})."
            ) from None
        if asked is None and not _parses_as_pickle(path):
            raise NotWeightsFileError(
                f"'{path}' is not a weights file: it reads neither as a PyTorch file (.pth / .pt from "
                "torch.save) nor as a pickle (.pkl); check that the config names the file you meant."
            ) from None
        raise UnsafeWeightsError(
            f"Refusing to load '{path}': it holds objects other than tensors, numbers, strings and containers"
            + (f" (it asks for {asked.group(1)})" if asked else "")
            + ", and loading those could run code. A "
            "weights file holds a state dict; if you trust this file and know where it came from, load it in "
            "your own Python and save its state dict with torch.save."
        ) from None
    except Exception as e:  # a damaged file: zip, EOF, struct and runtime errors from torch's reader
        raise NotWeightsFileError(
            f"'{path}' is not a readable PyTorch file: damaged, truncated or of another "
            f"kind ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})."
        ) from None


def read_weights(path: str, pickled: bool | None = None) -> Any:
    """The one way every centerX path reads a local weights file: ``.pkl`` files
    with :func:`load_pickle`, everything else with :func:`load_torch`
    (``pickled`` overrides the choice by extension)."""
    if pickled is None:
        pickled = path.endswith(".pkl")
    return load_pickle(path) if pickled else load_torch(path)


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

    def _load_file(self, filename: str) -> dict[str, Any]:
        if filename.endswith(".pkl"):
            data = read_weights(filename, pickled=True)
            if not isinstance(data, dict):
                raise ValueError(f"'{filename}' holds a {type(data).__name__}, not a dict of weights.")
            if "model" in data and "__author__" in data:  # detectron2 model zoo
                return data
            data = data.get("blobs", data)  # Caffe2 / Detectron1 model zoo
            data = {k: v for k, v in data.items() if not k.endswith("_momentum")}
            return {"model": data, "__author__": "Caffe2", "matching_heuristics": True}
        data = read_weights(filename, pickled=False)
        if not isinstance(data, dict):
            raise NotWeightsFileError(f"'{filename}' holds a {type(data).__name__}, not a dict of weights.")
        return data if "model" in data else {"model": data}

    def _log_incompatible_keys(self, incompatible) -> None:
        problems = describe_incompatible(incompatible)
        if problems:
            logger.warning(
                "Loaded weights do not fit the model exactly (fine-tuning keeps what fits, the rest stays "
                "as initialised): " + "; ".join(problems)
            )


class StrictCheckpointer(SafeCheckpointer):
    """:class:`SafeCheckpointer` that refuses a checkpoint leaving any parameter or
    buffer of the model missing or mis-shaped (:class:`WeightsMismatchError`,
    naming them). BatchNorm's ``num_batches_tracked`` counters (absent from old
    checkpoints, unused in eval mode) may be missing; unexpected keys are logged."""

    def _load_model(self, checkpoint):
        incompatible = super()._load_model(checkpoint)
        missing = [k for k in incompatible.missing_keys if not k.endswith("num_batches_tracked")]
        shapes = [
            f"{key} (file {tuple(shape_file)} vs model {tuple(shape_model)})"
            for key, shape_file, shape_model in incompatible.incorrect_shapes
        ]
        if missing or shapes:
            kernels = [
                key
                for key, shape_file, shape_model in incompatible.incorrect_shapes
                if len(shape_file) == len(shape_model) == 4 and tuple(shape_file[:2]) == tuple(shape_model[:2])
            ]
            hint = (
                f" Only the kernel size differs for {_listed('conv weights', kernels)}: a kernel-size option (e.g. "
                "MODEL.TTFNET.SHORTCUT_KERNEL_SIZE, 3 in the nano configs before 0.2.1) is not the run's; "
                "the run's saved config.yaml has it."
                if kernels
                else ""
            )
            raise WeightsMismatchError(
                "the weights do not fit this model's config: "
                + "; ".join(part for part in (_listed("missing", missing), _listed("mis-shaped", shapes)) if part)
                + ". Check MODEL.META_ARCHITECTURE, the number of classes, the backbone depth and the options "
                "of the config the weights were trained with." + hint
            )
        return incompatible

    def _log_incompatible_keys(self, incompatible) -> None:
        if incompatible.unexpected_keys:
            logger.info(
                "Keys of the checkpoint this model does not use: " + _listed("unused", incompatible.unexpected_keys)
            )


def describe_incompatible(incompatible) -> list[str]:
    """One phrase per kind of mismatch: missing, unexpected, mis-shaped keys."""
    missing = [k for k in incompatible.missing_keys if not k.endswith("num_batches_tracked")]
    shapes = [
        f"{key} (file {tuple(shape_file)} vs model {tuple(shape_model)})"
        for key, shape_file, shape_model in incompatible.incorrect_shapes
    ]
    return [
        part
        for part in (
            _listed("missing", missing),
            _listed("mis-shaped", shapes),
            _listed("unused", incompatible.unexpected_keys),
        )
        if part
    ]


def _listed(kind: str, keys: list[str], limit: int = 8) -> str:
    if not keys:
        return ""
    shown = ", ".join(keys[:limit]) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")
    return f"{len(keys)} {kind} ({shown})"


# what a command that loads a weights file reports as one line (the user's file is at fault, not the code)
WEIGHTS_ERRORS = (
    MissingWeightsError,
    WeightsMismatchError,
    UnsafeWeightsError,
    NotWeightsFileError,
    WeightsDownloadError,
    FileNotFoundError,
)
