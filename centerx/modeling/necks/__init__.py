from .centernet_upsampler import CenterNetUpsampler, bilinear_init_
from .coord_conv import CoordConv, build_coord_conv, coordinate_channels
from .dla_up import DLAUpsampler
from .spp import SPP, build_spp
from .ttfnet_upsampler import TTFNetUpsampler

__all__ = [
    "CenterNetUpsampler",
    "DLAUpsampler",
    "bilinear_init_",
    "CoordConv",
    "build_coord_conv",
    "coordinate_channels",
    "SPP",
    "build_spp",
    "TTFNetUpsampler",
]
