from .centernet_upsampler import CenterNetUpsampler, bilinear_init_

__all__ = ["CenterNetUpsampler", "bilinear_init_"]
