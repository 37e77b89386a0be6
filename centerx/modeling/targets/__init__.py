from .centernet import centernet_targets, concat_objects, rank_in_image
from .gaussian import RADIUS_MODES, draw_gaussians, gaussian_patches, gaussian_radius
from .ttfnet import ttfnet_targets

__all__ = ["centernet_targets", "concat_objects", "rank_in_image", "draw_gaussians", "gaussian_radius", "RADIUS_MODES",
           "gaussian_patches", "ttfnet_targets"]
