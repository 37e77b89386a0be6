from .batching import batch_ground_truth, pad_object_weights, pad_objects
from .centernet import centernet_radii, centernet_targets, centernet_window, rank_in_image
from .gaussian import RADIUS_MODES, draw_gaussians, draw_peak_weights, gaussian_patches, gaussian_radius
from .ttfnet import ttfnet_targets, ttfnet_window

__all__ = [
    "batch_ground_truth",
    "pad_objects",
    "pad_object_weights",
    "centernet_radii",
    "centernet_targets",
    "centernet_window",
    "rank_in_image",
    "draw_gaussians",
    "draw_peak_weights",
    "gaussian_radius",
    "RADIUS_MODES",
    "gaussian_patches",
    "ttfnet_targets",
    "ttfnet_window",
]
