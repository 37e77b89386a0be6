"""Deployment: the export-friendly forward, exporters (ONNX, Caffe, TensorRT)
and per-runtime inference. Only the wrapper is imported here; each exporter
module imports its runtime's package (onnx, tensorrt) itself."""
from .wrapper import (
    DeployModel,
    ExportError,
    build_deploy_model,
    check_input_size,
    decode_raw_outputs,
    deploy_config,
)

__all__ = ["DeployModel", "ExportError", "build_deploy_model", "check_input_size", "decode_raw_outputs",
           "deploy_config"]
