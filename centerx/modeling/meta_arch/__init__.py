from .centernet import CenterNet
from .distiller import Distiller, detector_class
from .point_detector import PointDetector
from .ttfnet import TTFNet

__all__ = ["CenterNet", "Distiller", "PointDetector", "TTFNet", "detector_class"]
