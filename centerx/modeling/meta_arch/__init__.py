from .centernet import CenterNet
from .distiller import Distiller  # noqa: F401  (registers the Distiller meta-architecture)
from .point_detector import PointDetector
from .ttfnet import TTFNet

__all__ = ["CenterNet", "PointDetector", "TTFNet"]
