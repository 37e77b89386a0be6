"""Any image model of timm as a detectron2 backbone (MODEL.BACKBONE.NAME
"build_timm_backbone", keys MODEL.TIMM).

timm builds the model with ``features_only=True`` at the levels whose output
stride is 4, 8, 16 and 32 input pixels per cell (whatever their index in the
model: DLA-34's start at stride 1, MobileNetV3's at 2); they are returned as
``res2``..``res5``, the names detectron2's ResNet gives the same strides, so the
CenterNet and TTFNet upsamplers take them as they take the ResNet's.

Weights (MODEL.TIMM.WEIGHTS): none; timm's own pretrained ones from its hub; or
a local path or URL, fetched by centerX's weight loading (cache, checksums, a
complete file only) and read by timm's loader (``torch.load`` with
``weights_only=True``, or safetensors: no code runs from the file), strictly.
detectron2's controls: MODEL.BACKBONE.FREEZE_AT (with pretrained weights only:
freezing randomly initialised layers would keep them random) and
MODEL.CENTERX.BACKBONE_NORM ("FrozenBN", "SyncBN" convert the BatchNorms).
MODEL.TIMM.ACT_LAYER replaces the model's activation through its builder's
``act_layer`` (e.g. "relu" in place of LCNet's hard-swish, which an INT8 graph
runs in float between quantisations); models whose builder has none refuse it.
MODEL.TIMM.MODEL_ARGS passes more keyword arguments to ``timm.create_model``
(e.g. a ResNet's ``channels``, ``layers``, ``stem_type``), parsed by
:func:`parse_model_args`; the arguments the backbone sets itself are refused.
"""

import ast
import logging
import math

import timm
import torch
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from timm.layers import get_act_layer
from torch import nn

from ...checkpoint import (
    NotWeightsFileError,
    UnsafeWeightsError,
    WeightsDownloadError,
    local_weights_path,
    read_weights,
)
from ...config import ConfigValueError

__all__ = ["TIMM_STRIDES", "TimmBackbone", "build_timm_backbone", "parse_model_args"]

logger = logging.getLogger(__name__)

# output strides the detectors' upsamplers take, input pixels per cell
TIMM_STRIDES = (4, 8, 16, 32)
NORMS = ("BN", "SyncBN", "FrozenBN")
# create_model's arguments the backbone sets itself, and the key that sets each
RESERVED_ARGS = {
    "features_only": "the backbone always builds the features_only model",
    "out_indices": "the backbone picks the levels at strides 4, 8, 16, 32",
    "pretrained": "set MODEL.TIMM.WEIGHTS",
    "pretrained_cfg_overlay": "set MODEL.TIMM.WEIGHTS",
    "act_layer": "set MODEL.TIMM.ACT_LAYER",
}


def check_model_args(model_args: dict) -> None:
    """Refuse keyword arguments that the backbone sets itself (ConfigValueError naming
    the key to use instead)."""
    for name in model_args:
        if name in RESERVED_ARGS:
            raise ConfigValueError(f"MODEL.TIMM.MODEL_ARGS may not set '{name}': {RESERVED_ARGS[name]}.")


def parse_model_args(items) -> dict:
    """MODEL.TIMM.MODEL_ARGS ("name=value" strings, each value a Python literal)
    as keyword arguments; a value that is no literal but a plain (dotted) name
    is kept as a string (``"stem_type=deep"``).

    Raises:
        ConfigValueError: an item without "=", a name that is no identifier, a value
            that is neither a literal nor a plain name (``"channels=(24, 48"``),
            a name given twice, or one of the arguments the backbone sets itself.
    """
    args = {}
    for item in items:
        name, sep, text = str(item).partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise ConfigValueError(
                f"MODEL.TIMM.MODEL_ARGS item {item!r} is not 'name=value' (e.g. 'stem_width=24', "
                "'channels=(24, 48, 96, 192)')."
            )
        check_model_args({name: None})
        if name in args:
            raise ConfigValueError(f"MODEL.TIMM.MODEL_ARGS sets '{name}' twice.")
        text = text.strip()
        try:
            args[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            if not text.replace(".", "_").isidentifier():
                raise ConfigValueError(
                    f"MODEL.TIMM.MODEL_ARGS item {item!r}: '{text}' is neither a Python literal nor a plain name "
                    "(check its brackets and quotes)."
                ) from None
            args[name] = text
    return args


def create_timm_model(name: str, model_args: dict, **options) -> nn.Module:
    """``timm.create_model(name, **model_args, **options)``; a keyword that the
    model's builder does not take is a ConfigValueError naming MODEL.TIMM.MODEL_ARGS."""
    try:
        return timm.create_model(name, **model_args, **options)
    except TypeError as e:
        unknown = [k for k in model_args if f"'{k}'" in str(e)]
        if unknown:
            raise ConfigValueError(
                f"MODEL.TIMM.MODEL_ARGS: the timm model '{name}' does not take {', '.join(unknown)} ({e})."
            ) from None
        raise


def feature_levels(name: str, model_args: dict | None = None) -> list[dict]:
    """timm's feature_info of model ``name`` built with ``model_args`` (one dict
    per level: ``num_chs``, ``reduction``, ``module``), read from a model built
    without weights."""
    if name not in timm.list_models():
        close = [m for m in timm.list_models() if name.split("_")[0] in m][:8]
        raise ConfigValueError(
            f"MODEL.TIMM.NAME '{name}' is not a timm model" + (f" (close: {', '.join(close)})" if close else "") + "."
        )
    return list(create_timm_model(name, model_args or {}, pretrained=False).feature_info)


def checked_weights_file(weights: str) -> str:
    """The local path of MODEL.TIMM.WEIGHTS ``weights`` (a URL fetched into the cache),
    read once with centerX's own weights reader before timm loads it: a file that is
    no weights file, or one whose objects could run code, is refused as with
    MODEL.WEIGHTS (:class:`NotWeightsFileError` / :class:`UnsafeWeightsError` naming
    the key) instead of through timm's loader, whose message suggests
    ``weights_only=False``. ``.safetensors`` files hold tensors only and go to timm as
    they are."""
    path = local_weights_path(weights, "MODEL.TIMM.WEIGHTS")
    if not path.endswith(".safetensors"):
        try:
            read_weights(path)
        except (NotWeightsFileError, UnsafeWeightsError) as e:
            raise type(e)(f"MODEL.TIMM.WEIGHTS '{weights}': {e}") from None
    return path


class TimmBackbone(Backbone):
    """A timm model's features at strides 4, 8, 16, 32.

    Input: [N, 3, H, W] normalised image (H, W multiples of 32). Output: dict of
    ``res2``..``res5`` feature maps [N, C_k, H / s_k, W / s_k], s_k = 4, 8, 16, 32
    (C_k: the model's channels at that level).
    """

    def __init__(
        self,
        name: str,
        weights: str = "",
        norm: str = "BN",
        freeze_at: int = 0,
        act_layer: str = "",
        model_args: dict | None = None,
    ):
        """
        Args:
            name: a timm model name.
            weights: "" (random), "timm" (timm's hub), or a local path / URL.
            norm: "BN", "SyncBN" or "FrozenBN".
            freeze_at: 0 = train everything; 1 = freeze the stem (what comes before the
                stride-4 level); k >= 2 = also the levels up to res<k>.
            act_layer: "" (the model's own activation) or a timm activation name
                (e.g. "relu") that replaces it wherever the model's builder takes one.
            model_args: more keyword arguments of ``timm.create_model`` (see
                :func:`parse_model_args`).
        """
        super().__init__()
        if norm not in NORMS:
            raise ConfigValueError(f"MODEL.CENTERX.BACKBONE_NORM '{norm}' is not one of {NORMS} for a timm backbone.")
        model_args = dict(model_args or {})
        check_model_args(model_args)
        levels = feature_levels(name, model_args)
        by_stride = {level["reduction"]: i for i, level in enumerate(levels)}
        missing = [s for s in TIMM_STRIDES if s not in by_stride]
        if missing:
            raise ConfigValueError(
                f"timm model '{name}' has no features at stride(s) {missing} (its levels: "
                f"{[level['reduction'] for level in levels]}); the detectors need strides {list(TIMM_STRIDES)}."
            )
        indices = tuple(by_stride[s] for s in TIMM_STRIDES)
        self.body = self._create(name, weights, indices, act_layer, model_args)
        self._out_features = [f"res{int(math.log2(s))}" for s in TIMM_STRIDES]
        self._out_feature_strides = dict(zip(self._out_features, TIMM_STRIDES))
        self._out_feature_channels = dict(zip(self._out_features, self.body.feature_info.channels()))
        if freeze_at and not weights:
            logger.info(
                f"MODEL.BACKBONE.FREEZE_AT {freeze_at} left out: the timm backbone '{name}' starts from random "
                "initialisation (MODEL.TIMM.WEIGHTS is empty), and frozen random layers would stay random."
            )
        elif freeze_at:
            self.freeze(freeze_at)
        if norm == "FrozenBN":
            self.body = FrozenBatchNorm2d.convert_frozen_batchnorm(self.body)
        elif norm == "SyncBN":
            self.body = nn.SyncBatchNorm.convert_sync_batchnorm(self.body)

    @staticmethod
    def _create(
        name: str, weights: str, indices: tuple, act_layer: str = "", model_args: dict | None = None
    ) -> nn.Module:
        """timm's features_only model built with ``model_args``, with its activation
        replaced (``act_layer``) and its weights loaded strictly."""
        options = {"features_only": True, "out_indices": indices}
        if act_layer:
            try:
                get_act_layer(act_layer)
            except KeyError:
                raise ConfigValueError(
                    f"MODEL.TIMM.ACT_LAYER '{act_layer}' is not a timm activation name (e.g. relu, hard_swish, "
                    "silu); '' keeps the model's own."
                ) from None
            options["act_layer"] = act_layer
        if weights:
            overlay = {} if weights == "timm" else {"file": checked_weights_file(weights)}
            options.update(pretrained=True, pretrained_cfg_overlay=overlay)
        try:
            return create_timm_model(name, model_args or {}, **options)
        except TypeError as e:
            if act_layer and "act_layer" in str(e):
                raise ConfigValueError(
                    f"MODEL.TIMM.ACT_LAYER '{act_layer}': the timm model '{name}' does not take another activation "
                    "(its builder has no act_layer); leave the key empty for it."
                ) from None
            raise
        except OSError as e:  # MODEL.TIMM.WEIGHTS "timm": the hub cannot be reached, or has no such file
            if weights != "timm":
                raise
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise WeightsDownloadError(
                f"MODEL.TIMM.WEIGHTS 'timm': timm's pretrained weights of '{name}' could not be fetched from its "
                f"hub ({first}). Without the network, give a local path or URL of a .pth / .safetensors state "
                f"dict of '{name}', or '' for random initialisation."
            ) from None
        except RuntimeError as e:  # load_state_dict(strict=True): keys or shapes that do not fit
            if not weights:
                raise
            first = " ".join(str(e).split())[:600]
            raise ConfigValueError(
                f"MODEL.TIMM.WEIGHTS '{weights}' does not fit the timm model '{name}' ({first}). Give a state "
                f"dict of '{name}' itself"
                + (f" built with MODEL.TIMM.MODEL_ARGS {model_args}" if model_args else "")
                + ", or '' for random initialisation."
            ) from None

    def freeze(self, freeze_at: int) -> None:
        """Stop the gradients of the stem (``freeze_at`` 1: every parameter before the
        stride-4 level's module) and of the levels up to res<freeze_at> (k >= 2), in the
        order timm registers them (its forward order), and turn the BatchNorms whose
        parameters are all frozen into FrozenBatchNorm2d."""
        names = [n for n, _ in self.body.named_parameters()]
        levels = self.body.feature_info.module_name()

        def span(module: str) -> list[int]:
            return [i for i, n in enumerate(names) if n.startswith(module + ".")]

        if freeze_at == 1:
            end = min(span(levels[0]))
        else:
            end = max(span(levels[min(freeze_at, len(levels) + 1) - 2])) + 1
        params = dict(self.body.named_parameters())
        for n in names[:end]:
            params[n].requires_grad_(False)
        for module_name, module in list(self.body.named_modules()):
            if isinstance(module, nn.BatchNorm2d) and not any(p.requires_grad for p in module.parameters()):
                parent_name, _, child = module_name.rpartition(".")
                parent = self.body.get_submodule(parent_name) if parent_name else self.body
                setattr(parent, child, FrozenBatchNorm2d.convert_frozen_batchnorm(module))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(zip(self._out_features, self.body(x)))

    @property
    def size_divisibility(self) -> int:
        return 32


@BACKBONE_REGISTRY.register()
def build_timm_backbone(cfg, input_shape: ShapeSpec) -> TimmBackbone:
    """The timm model MODEL.TIMM.NAME with MODEL.TIMM.WEIGHTS (see the module docstring)."""
    if input_shape.channels != 3:
        raise ValueError(f"The timm backbone expects 3 input channels, got {input_shape.channels}.")
    return TimmBackbone(
        cfg.MODEL.TIMM.NAME,
        cfg.MODEL.TIMM.WEIGHTS,
        cfg.MODEL.CENTERX.BACKBONE_NORM,
        cfg.MODEL.BACKBONE.FREEZE_AT,
        cfg.MODEL.TIMM.ACT_LAYER,
        parse_model_args(cfg.MODEL.TIMM.MODEL_ARGS),
    )
