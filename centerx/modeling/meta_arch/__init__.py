from .build import detector_class, detector_config, student_config, trains_student
from .centernet import CenterNet
from .distiller import Distiller
from .point_detector import PointDetector
from .ttfnet import TTFNet

__all__ = [
    "CenterNet",
    "Distiller",
    "PointDetector",
    "TTFNet",
    "detector_class",
    "detector_config",
    "student_config",
    "trains_student",
]
