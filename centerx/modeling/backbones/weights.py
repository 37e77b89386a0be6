"""Loading local ImageNet weights into torchvision-layout backbones.

Accepted files:
- torchvision ``.pth``/``.pt``: a state dict (optionally under "state_dict" or
  "model", optionally with a "module." prefix from DataParallel);
- detectron2 ``.pkl``: ``{"model": {name: ndarray}}`` in detectron2 naming
  (``stem.conv1.*``, ``res2.0.conv1.norm.*``, ...), as written by detectron2's
  torchvision converter, or in Caffe2/MSRA naming (``res2_0_branch2a_w``),
  which is first converted with detectron2's own ``convert_basic_c2_names``.

Files are read without running code from them (``centerx.checkpoint``). Names
are translated to torchvision's layout (``conv1``, ``bn1``,
``layer1.0.conv1``, ...); missing, unexpected and shape-mismatched keys are
reported in the log, never silently dropped.
"""

import logging
import os
import re
from collections.abc import Callable

import numpy as np
import torch
from detectron2.checkpoint.c2_model_loading import convert_basic_c2_names

from ...checkpoint import load_pickle, load_torch, local_weights_path

logger = logging.getLogger(__name__)

_D2_TO_TORCHVISION = [
    (re.compile(r"^stem\.conv1\.norm\."), "bn1."),
    (re.compile(r"^stem\.conv1\."), "conv1."),
    (re.compile(r"^res(\d)\.(\d+)\.shortcut\.norm\."), r"layer\1.\2.downsample.1."),
    (re.compile(r"^res(\d)\.(\d+)\.shortcut\."), r"layer\1.\2.downsample.0."),
    (re.compile(r"^res(\d)\.(\d+)\.conv(\d)\.norm\."), r"layer\1.\2.bn\3."),
    (re.compile(r"^res(\d)\.(\d+)\.conv(\d)\."), r"layer\1.\2.conv\3."),
]


def _d2_name_to_torchvision(name: str) -> str:
    for pattern, repl in _D2_TO_TORCHVISION:
        new, n = pattern.subn(repl, name)
        if n:
            # detectron2 numbers stages res2..res5, torchvision layer1..layer4
            return re.sub(r"^layer(\d)", lambda m: f"layer{int(m.group(1)) - 1}", new)
    return name


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        for prefix in ("module.", "backbone.bottom_up.", "backbone."):
            if k.startswith(prefix):
                k = k[len(prefix) :]
        out[k] = v
    return out


def read_weights_file(path: str) -> dict[str, torch.Tensor]:
    """Read a ``.pth``/``.pt``/``.pkl`` file (a local path or a URL, see
    :func:`~centerx.checkpoint.local_weights_path`) into a flat name -> tensor dict
    (names as stored in the file, minus DataParallel / detector prefixes)."""
    if not os.path.isfile(path):
        try:
            path = local_weights_path(path, "MODEL.CENTERX.BACKBONE_WEIGHTS")
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{e} Set it to a weights file or URL, or to '' for random init.") from None
    if path.endswith(".pkl"):
        data = load_pickle(path)
        if isinstance(data, dict) and "model" in data:
            data = data["model"]
        elif isinstance(data, dict) and "blobs" in data:
            data = data["blobs"]
        state = {k: torch.as_tensor(np.asarray(v)) for k, v in data.items() if not k.endswith("_momentum")}
        if any(k.endswith("_w") or k.endswith("_b") for k in state):
            names = convert_basic_c2_names(sorted(state.keys()))
            state = {new: state[old] for old, new in zip(sorted(state.keys()), names)}
    else:
        data = load_torch(path)
        for key in ("state_dict", "model"):
            if isinstance(data, dict) and key in data and isinstance(data[key], dict):
                data = data[key]
        state = dict(data)
    return _strip_prefixes(state)


def load_configured_backbone_weights(
    module: torch.nn.Module,
    cfg,
    rename: Callable[[str], str] | None = _d2_name_to_torchvision,
) -> dict[str, list] | None:
    """MODEL.CENTERX.BACKBONE_WEIGHTS into ``module`` when set (:func:`load_backbone_weights`);
    None when it is empty. With MODEL.CENTERX.BACKBONE_WEIGHTS_OPTIONAL, a file that
    cannot be fetched or found (no network, a wrong path, a checksum that differs)
    is a warning and the backbone keeps its random initialisation; a file that is
    read but does not fit the backbone is an error either way."""
    path = cfg.MODEL.CENTERX.BACKBONE_WEIGHTS
    if not path:
        return None
    try:
        state = read_weights_file(path)
    except OSError as e:
        if not cfg.MODEL.CENTERX.BACKBONE_WEIGHTS_OPTIONAL:
            raise
        logger.warning(
            f"MODEL.CENTERX.BACKBONE_WEIGHTS cannot be read ({e}); the backbone starts from random "
            "initialisation (MODEL.CENTERX.BACKBONE_WEIGHTS_OPTIONAL is True)."
        )
        return None
    return load_backbone_weights(module, path, rename, state=state)


def load_backbone_weights(
    module: torch.nn.Module,
    path: str,
    rename: Callable[[str], str] | None = _d2_name_to_torchvision,
    state: dict[str, torch.Tensor] | None = None,
) -> dict[str, list]:
    """Load a local weights file into ``module`` (non-strict, reported).

    Args:
        module: the backbone, with torchvision-style parameter names.
        path: ``.pth``/``.pt``/``.pkl`` file.
        rename: maps a file's parameter name to the module's; the default
            translates detectron2 ResNet names and leaves torchvision names as is.
        state: the file's tensors when already read (:func:`read_weights_file`).

    Returns:
        dict with the lists ``loaded``, ``missing`` (in the module, not in the
        file), ``unexpected`` (in the file, unused) and ``mismatched`` (shape).
    """
    state = read_weights_file(path) if state is None else state
    if rename is not None:
        state = {rename(k): v for k, v in state.items()}
    own = module.state_dict()
    loadable, mismatched = {}, []
    for k, v in state.items():
        if k in own:
            if tuple(own[k].shape) == tuple(v.shape):
                loadable[k] = v.to(own[k].dtype)
            else:
                mismatched.append(f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}")
    module.load_state_dict(loadable, strict=False)
    report = {
        "loaded": sorted(loadable),
        "missing": sorted(k for k in own if k not in loadable and not k.endswith("num_batches_tracked")),
        "unexpected": sorted(k for k in state if k not in own),
        "mismatched": mismatched,
    }
    logger.info("Loaded %d/%d backbone tensors from %s", len(loadable), len(own), path)
    for kind in ("missing", "unexpected", "mismatched"):
        if report[kind]:
            logger.warning(
                "Backbone weights %s: %d %s key(s): %s",
                path,
                len(report[kind]),
                kind,
                ", ".join(report[kind][:20]) + (" ..." if len(report[kind]) > 20 else ""),
            )
    if not loadable:
        raise ValueError(
            f"No tensor of '{path}' matches the backbone's parameters: is it a weights file "
            "for this backbone (MODEL.RESNETS.DEPTH / MODEL.BACKBONE.NAME)?"
        )
    return report
