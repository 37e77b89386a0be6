"""Importing this package registers centerX's backbones and meta-architectures."""

from . import backbones, meta_arch  # noqa: F401
from .meta_arch import CenterNet

__all__ = ["CenterNet"]
