"""centerX's config: every key it adds to detectron2's defaults, and the config a
command runs with. The config layer imports only detectron2's config and
centerX's leaf helpers (config files, the device, the user's imports, name suggestions): every
other layer may import it, it imports none of them (docs/design.md)."""

from .config import (
    DETECTOR_CONFIGS,
    FEATURE_CONFIGS,
    SENTINEL,
    ConfigOverrideError,
    ConfigValueError,
    add_centerx_config,
    check_config,
    check_overrides,
    exit_on_config_error,
    get_centerx_cfg,
    load_config,
    load_saved_config,
    merge_config_file,
    register_detector_config,
)

__all__ = [
    "DETECTOR_CONFIGS",
    "FEATURE_CONFIGS",
    "SENTINEL",
    "ConfigOverrideError",
    "ConfigValueError",
    "add_centerx_config",
    "check_config",
    "check_overrides",
    "exit_on_config_error",
    "get_centerx_cfg",
    "load_config",
    "load_saved_config",
    "merge_config_file",
    "register_detector_config",
]
