from .centernet import CenterNet

__all__ = ["CenterNet"]
