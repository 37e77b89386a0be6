"""Datasets: the synthetic shapes set, builtin registrations and format converters."""
from .builtin import (
    convert_crowdhuman_odgt,
    convert_widerface_txt,
    ensure_datasets,
    register_all_builtin,
    register_coco_json_datasets,
)
from .shapes import SHAPES_CLASSES, ensure_shapes, generate_shapes

__all__ = [
    "SHAPES_CLASSES",
    "generate_shapes",
    "ensure_shapes",
    "ensure_datasets",
    "register_all_builtin",
    "register_coco_json_datasets",
    "convert_crowdhuman_odgt",
    "convert_widerface_txt",
]
