"""Datasets: the synthetic shapes set, builtin registrations and format converters."""
from .builtin import ensure_datasets, register_all_builtin, register_coco_json_datasets
from .crowdhuman import convert_crowdhuman_odgt
from .registration import register_config_datasets
from .shapes import SHAPES_CLASSES, ensure_shapes, generate_shapes
from .widerface import convert_widerface_txt
from .voc_yolo import load_voc, load_yolo, register_voc_datasets, register_yolo_datasets

__all__ = [
    "SHAPES_CLASSES",
    "generate_shapes",
    "ensure_shapes",
    "ensure_datasets",
    "register_all_builtin",
    "register_coco_json_datasets",
    "register_config_datasets",
    "register_voc_datasets",
    "register_yolo_datasets",
    "load_voc",
    "load_yolo",
    "convert_crowdhuman_odgt",
    "convert_widerface_txt",
]
