"""TensorRT engines built from the exported ONNX graph (TensorRT 10 Python API).

Importable without TensorRT: every function imports ``tensorrt`` when called
and raises :class:`TensorRTUnavailable` with the reason where TensorRT or a
CUDA GPU is missing. The equivalent command line is returned by
:func:`trtexec_command`.
"""

import logging
import os

import torch

logger = logging.getLogger(__name__)

# tensorrt.DataType names -> torch dtypes of the output buffers
_TORCH_DTYPES = {
    "FLOAT": torch.float32,
    "HALF": torch.float16,
    "INT32": torch.int32,
    "INT64": torch.int64,
    "BOOL": torch.bool,
}


class TensorRTUnavailable(RuntimeError):
    """TensorRT or a CUDA GPU is missing."""


def import_tensorrt():
    """The ``tensorrt`` module; :class:`TensorRTUnavailable` without it or without a GPU."""
    try:
        import tensorrt
    except ImportError as e:
        raise TensorRTUnavailable(
            f"TensorRT is not installed ({e}); on a machine with an NVIDIA GPU: pip install tensorrt-cu12"
        ) from e
    if not torch.cuda.is_available():
        raise TensorRTUnavailable("TensorRT needs an NVIDIA GPU; torch.cuda.is_available() is False here.")
    return tensorrt


def _profile_shapes(input_size: tuple[int, int], max_batch: int):
    """(min, opt, max) shapes of ``images``: batch 1 .. max_batch at the export size,
    tuned for batch 1 (latency)."""
    h, w = input_size
    return (1, 3, h, w), (1, 3, h, w), (max_batch, 3, h, w)


def trtexec_command(
    onnx_path: str, engine_path: str, input_size: tuple[int, int], max_batch: int, fp16: bool, workspace_mb: int
) -> str:
    """The ``trtexec`` command line that builds the same engine as :func:`build_engine`."""
    lo, opt, hi = (("x".join(str(d) for d in s)) for s in _profile_shapes(input_size, max_batch))
    return (
        f"trtexec --onnx={onnx_path} --saveEngine={engine_path} --minShapes=images:{lo} "
        f"--optShapes=images:{opt} --maxShapes=images:{hi} --memPoolSize=workspace:{workspace_mb}"
        + (" --fp16" if fp16 else "")
    )


def build_engine(
    onnx_path: str,
    engine_path: str,
    input_size: tuple[int, int],
    max_batch: int = 8,
    fp16: bool = False,
    workspace_mb: int = 2048,
) -> str:
    """Parse ``onnx_path``, build an FP32 (or FP16-enabled) engine for batches
    1..``max_batch`` at ``input_size`` and serialise it to ``engine_path``.

    FP16 keeps the peak mask exact: ``peak_mask`` is an ``Equal`` against the
    max-pool (see centerx/modeling/decode.py). TopK's K is a constant of the graph, as
    TensorRT requires (K <= 3840).
    """
    trt = import_tensorrt()
    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(onnx_path):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    profile.set_shape("images", *_profile_shapes(input_size, max_batch))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see its log above).")
    os.makedirs(os.path.dirname(os.path.abspath(engine_path)), exist_ok=True)
    with open(engine_path, "wb") as f:
        f.write(serialized)
    logger.info(
        f"Wrote {engine_path} ({'FP16' if fp16 else 'FP32'}); the same with trtexec: "
        + trtexec_command(onnx_path, engine_path, input_size, max_batch, fp16, workspace_mb)
    )
    return engine_path


def load_engine(engine_path: str):
    """Deserialise an engine file."""
    trt = import_tensorrt()
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    with open(engine_path, "rb") as f:
        engine = runtime.deserialize_cuda_engine(f.read())
    if engine is None:
        raise RuntimeError(f"TensorRT could not load {engine_path} (built by another TensorRT version or GPU?).")
    return engine


def execute(engine, context, images: torch.Tensor, stream: torch.cuda.Stream) -> dict[str, torch.Tensor]:
    """Run ``engine`` on ``images`` (float32 CUDA [N, 3, H, W]) and return its
    outputs by name as CUDA tensors, synchronised."""
    trt = import_tensorrt()
    images = images.contiguous()
    context.set_input_shape("images", tuple(images.shape))
    context.set_tensor_address("images", images.data_ptr())
    outputs = {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if engine.get_tensor_mode(name) != trt.TensorIOMode.OUTPUT:
            continue
        dtype = _TORCH_DTYPES[engine.get_tensor_dtype(name).name]
        outputs[name] = torch.empty(tuple(context.get_tensor_shape(name)), dtype=dtype, device=images.device)
        context.set_tensor_address(name, outputs[name].data_ptr())
    stream.wait_stream(torch.cuda.current_stream())
    if not context.execute_async_v3(stream.cuda_stream):
        raise RuntimeError("TensorRT execution failed.")
    stream.synchronize()
    return outputs
