from .centernet_upsampler import CenterNetUpsampler, bilinear_init_
from .ttfnet_upsampler import TTFNetUpsampler

__all__ = ["CenterNetUpsampler", "bilinear_init_", "TTFNetUpsampler"]
