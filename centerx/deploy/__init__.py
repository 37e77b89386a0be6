"""Deployment: the export-friendly forward, exporters (ONNX, Caffe, TensorRT),
INT8 quantisation of the ONNX graph and per-runtime inference. Only the wrapper
and the quantisation entry points are imported here; each exporter module
imports its runtime's package (onnx, onnxruntime, tensorrt) itself, when used."""

from .quantize import CalibrationImages, calibration_files, calibration_reader, quantize_onnx
from .wrapper import (
    DeployModel,
    ExportError,
    build_deploy_model,
    check_input_size,
    decode_raw_outputs,
    deploy_config,
)

__all__ = [
    "CalibrationImages",
    "DeployModel",
    "ExportError",
    "build_deploy_model",
    "calibration_files",
    "calibration_reader",
    "check_input_size",
    "decode_raw_outputs",
    "deploy_config",
    "quantize_onnx",
]
