"""centerX: CenterNet-family detectors as a detectron2 extension.

``import centerx`` registers the backbones, meta-architectures and built-in
datasets with detectron2's registries; ``add_centerx_config`` adds every key.
"""

from detectron2.utils.file_io import PathManager

from . import modeling  # noqa: F401  (registers backbones and meta-architectures)
from .config import add_centerx_config, check_config, get_centerx_cfg
from .data.datasets import register_all_builtin, register_coco_json_datasets, register_config_datasets
from .downloads import register_download_handler
from .version import __version__

register_all_builtin()
register_download_handler(PathManager)  # http(s) weights: whole-URL cache key, timeouts, complete files, hashes

__all__ = [
    "__version__",
    "add_centerx_config",
    "check_config",
    "get_centerx_cfg",
    "register_coco_json_datasets",
    "register_config_datasets",
]
