"""ONNX export of a :class:`DeployModel` (the export contract: docs/design.md).

Uses torch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``):
in torch 2.14 the default dynamo exporter needs ``onnxscript``, which centerX does
not install; the TorchScript one records the ``Shape``/``Gather`` arithmetic of
the decode, so N, H and W stay dynamic. torchvision registers no ONNX symbolic
for ``deform_conv2d``; this module maps it to ONNX ``DeformConv`` (opset 19).
"""

import logging
import os
import warnings

import onnx
import torch
from torch.onnx import symbolic_helper

from ..modeling.deform_conv import ModulatedDeformConv2d
from .wrapper import DeployModel, ExportError

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 17
# ONNX has DeformConv from opset 19.
DEFORM_CONV_OPSET = 19


@symbolic_helper.parse_args("v", "v", "v", "v", "v", "i", "i", "i", "i", "i", "i", "i", "i", "b")
def _deform_conv2d_symbolic(
    g,
    input,
    weight,
    offset,
    mask,
    bias,
    stride_h,
    stride_w,
    pad_h,
    pad_w,
    dil_h,
    dil_w,
    n_weight_grps,
    n_offset_grps,
    use_mask,
):
    """``torchvision::deform_conv2d`` -> ONNX ``DeformConv`` (same offset layout:
    (dy, dx) pairs per kernel position, row-major)."""
    inputs = [input, weight, offset, bias] + ([mask] if use_mask else [])
    return g.op(
        "DeformConv",
        *inputs,
        dilations_i=[dil_h, dil_w],
        group_i=n_weight_grps,
        kernel_shape_i=symbolic_helper._get_tensor_sizes(weight)[2:],
        offset_group_i=n_offset_grps,
        pads_i=[pad_h, pad_w, pad_h, pad_w],
        strides_i=[stride_h, stride_w],
    )


def has_deformable_convs(model: torch.nn.Module) -> bool:
    """Whether ``model`` has modulated deformable convolutions (ONNX ``DeformConv``)."""
    return any(isinstance(m, ModulatedDeformConv2d) for m in model.modules())


def check_deformable(model: DeployModel, opset: int) -> bool:
    """Whether the model has deformable convs; raises :class:`ExportError` where
    ``opset`` cannot express them."""
    if not has_deformable_convs(model):
        return False
    if opset < DEFORM_CONV_OPSET:
        raise ExportError(
            f"This model has deformable convolutions ({model.deformable_key} True), which ONNX has only from "
            f"opset {DEFORM_CONV_OPSET} (DeformConv) and many runtimes (TensorRT among them) lack. Export a "
            f"plain-conv model ({model.deformable_key} False, trained that way), or pass --opset "
            f"{DEFORM_CONV_OPSET} for a runtime with DeformConv (ONNX Runtime has it)."
        )
    torch.onnx.register_custom_op_symbolic("torchvision::deform_conv2d", _deform_conv2d_symbolic, DEFORM_CONV_OPSET)
    return True


def _dynamic_axes(names: list[str], raw: bool):
    axes = {"images": {0: "batch", 2: "height", 3: "width"}}
    for name in names:
        axes[name] = {0: "batch", 2: "height_out", 3: "width_out"} if raw else {0: "batch"}
    return axes


def simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnxslim's graph simplification; the model as it is (and a log line) when it fails."""
    try:
        import onnxslim

        return onnxslim.slim(model)
    except Exception as e:  # onnxslim raises many kinds of errors on graphs it cannot handle
        logger.warning(f"onnxslim could not simplify the graph ({type(e).__name__}: {e}); keeping it unsimplified.")
        return model


def export_onnx(
    model: DeployModel,
    path: str,
    input_size: tuple[int, int],
    opset: int = DEFAULT_OPSET,
    batch_size: int = 1,
    metadata: dict[str, str] | None = None,
) -> list[str]:
    """Trace ``model`` and write it to ``path``.

    Args:
        model: the wrapper, in eval mode, on CPU or GPU.
        input_size: (H, W) of the traced input; the graph accepts any batch and
            any H, W (multiples of 32).
        opset: ONNX opset (17 by default; deformable convs need 19).
        batch_size: batch of the traced input.
        metadata: written into the file's ``metadata_props`` (what the model is,
            e.g. ``{"num_classes": "4"}``; ONNX Runtime reads it back with
            ``InferenceSession.get_modelmeta().custom_metadata_map``).

    Returns:
        The output names, in order: ``boxes, scores, classes`` or, in raw mode,
        ``heatmap`` and the regression maps.

    The file is simplified with onnxslim where it can be, then checked with
    ``onnx.checker``. Raises :class:`ExportError` for models the opset cannot express.
    """
    if model.training:
        raise ValueError("Export needs the model in eval mode (BatchNorm statistics are frozen into the graph).")
    deformable = check_deformable(model, opset)
    device = next(model.parameters()).device
    images = torch.rand(batch_size, 3, *input_size, device=device) * 255
    with torch.no_grad():
        names = list(model(images).keys())
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with warnings.catch_warnings():
        # top-K's K = min(K, C*H*W) is read once while tracing and kept constant on purpose
        # (TensorRT needs a constant K); the legacy exporter's deprecation notice is known.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        try:
            torch.onnx.export(
                model,
                (images,),
                path,
                dynamo=False,
                opset_version=opset,
                input_names=["images"],
                output_names=names,
                dynamic_axes=_dynamic_axes(names, model.raw),
                do_constant_folding=True,
            )
        except Exception as e:
            if deformable:
                raise ExportError(
                    f"torch's ONNX exporter failed on the deformable convs ({type(e).__name__}: {e}). Set "
                    f"{model.deformable_key} False for a model meant for export."
                ) from e
            raise
    onnx_model = simplify(onnx.load(path))
    for key, value in (metadata or {}).items():
        entry = onnx_model.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.checker.check_model(onnx_model, full_check=True)
    onnx.save(onnx_model, path)
    logger.info(f"Wrote {path} (opset {opset}, outputs {', '.join(names)}).")
    return names
