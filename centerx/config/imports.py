"""The IMPORTS key: the user's modules a config needs (centerx.plugins imports them)."""

__all__ = ["add_imports_config"]


def add_imports_config(cfg):
    """The ``IMPORTS`` key (top level, as mmdetection's ``custom_imports``)."""
    _C = cfg
    # Python modules imported before this config is built: module names or paths of .py files (relative to the
    # config file that names them). A user's detector, backbone, dataset, exporter or hook lives in one of them;
    # every command's --import adds to this list, and a run saves it in its config.yaml.
    _C.IMPORTS = ()
    return cfg
