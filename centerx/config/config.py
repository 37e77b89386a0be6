"""Every config key centerX adds to detectron2's defaults, and the config a
command runs with.

Each key has a default and a comment. ``add_centerx_config`` is idempotent and
must run before ``merge_from_file`` so that unknown keys in a user's YAML fail
(:func:`merge_config_file` names the key and the nearest ones).
"""

import functools
import logging
import os
from collections.abc import Sequence

from detectron2.config import CfgNode, get_cfg

from ..config_files import check_config_file
from ..device import check_device
from ..plugins import (
    absolute_entry,
    import_modules,
    imports_in_config_file,
    imports_in_config_text,
    imports_in_opts,
    merge_imports,
)
from ..suggestions import did_you_mean
from .data import add_dataloader_config, add_datasets_config, add_input_config
from .deploy import add_export_config
from .engine import add_ema_config, add_evaluation_config, add_solver_config
from .imports import add_imports_config
from .model import (
    add_centernet_config,
    add_darknet_config,
    add_distill_config,
    add_loss_balance_config,
    add_point_detector_config,
    add_timm_config,
    add_ttfnet_config,
)

# the node only centerX creates: its presence means the keys were added already
# (MODEL.CENTERNET would not do: CenterNet2's add_centernet_config creates one too)
SENTINEL = "CENTERX"


# Each feature's keys (centerx/config/<layer>.py), in the order docs/config.md lists them.
FEATURE_CONFIGS = (
    add_point_detector_config,
    add_centernet_config,
    add_ttfnet_config,
    add_darknet_config,
    add_timm_config,
    add_export_config,
    add_distill_config,
    add_loss_balance_config,
    add_ema_config,
    add_input_config,
    add_datasets_config,
    add_dataloader_config,
    add_solver_config,
    add_evaluation_config,
    add_imports_config,
)


# The point detectors whose config node add_centerx_config adds where a config lacks it: every subclass of
# centerx.modeling.meta_arch.PointDetector with a config_prefix enters itself here when its class is defined
# (its module imported), keyed by module and class name; the config layer imports no model to find them.
DETECTOR_CONFIGS: dict[str, type] = {}


def register_detector_config(detector: type) -> type:
    """Enter ``detector`` (a class with ``config_prefix``, ``has_config(cfg)`` and
    ``add_config(cfg)``) into :data:`DETECTOR_CONFIGS`; returns it."""
    DETECTOR_CONFIGS[f"{detector.__module__}.{detector.__qualname__}"] = detector
    return detector


def add_centerx_config(cfg):
    """Add centerX's keys to a detectron2 config in place and return it, and the
    config node of every point detector defined so far (:data:`DETECTOR_CONFIGS`)
    that the config lacks (a detector defined outside centerX brings its keys
    through its ``add_config``; docs/extending.md).

    A ``MODEL.CENTERNET`` node from another extension (CenterNet2's
    ``add_centernet_config``) is replaced by centerX's, with a warning: the two
    define different keys under the same name.
    """
    if not hasattr(cfg.MODEL, SENTINEL):
        if hasattr(cfg.MODEL, "CENTERNET"):
            logging.getLogger(__name__).warning(
                "add_centerx_config: the config already has a MODEL.CENTERNET node of another extension "
                "(CenterNet2?); it is replaced by centerX's MODEL.CENTERNET keys."
            )
        for add in FEATURE_CONFIGS:  # the first adds MODEL.CENTERX, the sentinel
            add(cfg)
    for detector in list(DETECTOR_CONFIGS.values()):
        if not detector.has_config(cfg):
            detector.add_config(cfg)
    return cfg


def get_centerx_cfg():
    """detectron2's default config with centerX's keys added."""
    return add_centerx_config(get_cfg())


class ConfigValueError(ValueError):
    """A config key whose value cannot work: refused by :func:`check_config`, or where
    the value is used (an unknown timm model, a ResNet depth torchvision lacks, a neck
    that needs a stride the backbone does not give, a malformed DATASETS.COCO_JSON
    entry, ...). The message names the key and what to set; the commands print it
    alone, without a traceback (:func:`exit_on_config_error`)."""


def exit_on_config_error(command):
    """Decorator for a command's entry function: a :class:`ConfigValueError` raised
    anywhere in it (building the model, the data or the trainer, or later) ends the
    command with the message alone, exit status 1, instead of a traceback."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ConfigValueError as e:
            raise SystemExit(str(e)) from None

    return run


def check_config(cfg, training: bool = True, world_size: int = 1) -> None:
    """Refuse settings that would fail later with a message that does not say what
    to change; each error names the key and a value that works.

    Args:
        training: also check what only training uses (INPUT.TRAIN_SIZE, SOLVER.MAX_ITER).
        world_size: number of processes the run will have (detectron2 rescales the
            schedule to it from SOLVER.REFERENCE_WORLD_SIZE).
    """
    check_device(cfg.MODEL.DEVICE)
    if training:
        size = cfg.INPUT.TRAIN_SIZE
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0 or size % 32:
            raise ConfigValueError(
                f"INPUT.TRAIN_SIZE must be a positive multiple of 32 (the training input side in "
                f"pixels), got {size!r}; e.g. INPUT.TRAIN_SIZE 512."
            )
        if cfg.SOLVER.EPOCHS < 0:
            raise ConfigValueError(
                f"SOLVER.EPOCHS must be 0 (train SOLVER.MAX_ITER iterations) or a positive number of "
                f"passes over the training sets, got {cfg.SOLVER.EPOCHS}."
            )
        if cfg.SOLVER.MAX_ITER < 1 and not cfg.SOLVER.EPOCHS:
            raise ConfigValueError(
                f"SOLVER.MAX_ITER must be at least 1 to train, got {cfg.SOLVER.MAX_ITER}; to evaluate "
                "a trained model use --eval-only MODEL.WEIGHTS <checkpoint>."
            )
        if cfg.SOLVER.IMS_PER_BATCH < 1:
            raise ConfigValueError(
                f"SOLVER.IMS_PER_BATCH must be at least 1 (images per step, over all processes), got "
                f"{cfg.SOLVER.IMS_PER_BATCH}; e.g. SOLVER.IMS_PER_BATCH 16."
            )
        if not cfg.SOLVER.BASE_LR > 0:
            raise ConfigValueError(
                f"SOLVER.BASE_LR must be positive (detectron2's learning-rate schedules are relative to it), "
                f"got {cfg.SOLVER.BASE_LR}; the demo configs use 0.002 with Adam."
            )
    if cfg.DATALOADER.NUM_WORKERS < 0:
        raise ConfigValueError(
            f"DATALOADER.NUM_WORKERS must be 0 (load in the main process) or more, got {cfg.DATALOADER.NUM_WORKERS}."
        )
    reference, batch = cfg.SOLVER.REFERENCE_WORLD_SIZE, cfg.SOLVER.IMS_PER_BATCH
    if reference and reference != world_size and batch % reference:
        raise ConfigValueError(
            f"SOLVER.IMS_PER_BATCH {batch} cannot be rescaled from SOLVER.REFERENCE_WORLD_SIZE {reference} (the "
            f"config's reference number of GPUs) to {world_size} process(es): it is not a multiple of {reference}. "
            f"Set SOLVER.IMS_PER_BATCH to a multiple of {reference} (the per-GPU batch times {reference}), or "
            "SOLVER.REFERENCE_WORLD_SIZE 0 to use the batch and schedule as given."
        )
    if training and (not reference or reference == world_size) and batch % world_size:
        raise ConfigValueError(
            f"SOLVER.IMS_PER_BATCH {batch} (images per step over all processes) does not split over the "
            f"{world_size} processes of this run: set it to a multiple of {world_size}."
        )


def load_config(config_file: str = "", opts: Sequence = (), imports: Sequence[str] = ()):
    """The config a command runs with: the user's modules imported first (``imports``
    from ``--import``, relative to the current directory; the ``IMPORTS`` of
    ``config_file``'s ``_BASE_`` chain; an ``IMPORTS`` among ``opts``), then
    detectron2's defaults with centerX's keys (and those of every detector the
    modules registered), ``config_file`` and the ``KEY VALUE`` pairs ``opts``
    merged. ``IMPORTS`` records every module, file paths made absolute, so that
    the config saved from it brings them along (centerx.plugins).

    Raises:
        FileNotFoundError, ValueError: a config file or an import that cannot be
            read or found, or overrides :func:`check_overrides` refuses (the
            message names it); errors of a module's own code are raised unchanged.
    """
    entries = merge_imports(
        imports_in_config_file(config_file) if config_file else [],
        imports_in_opts(opts),
        [absolute_entry(e, os.getcwd()) for e in imports],
    )
    import_modules(entries)
    cfg = get_centerx_cfg()
    if config_file:
        merge_config_file(cfg, config_file)
    check_overrides(cfg, opts)
    cfg.merge_from_list(list(opts))
    cfg.IMPORTS = entries
    return cfg


def load_saved_config(text: str, opts: Sequence = ()):
    """:func:`load_config` for a whole config saved as YAML text (a run's
    ``config.yaml`` read by the caller, the config an exported model carries):
    its ``IMPORTS`` imported first, ``opts`` merged on top."""
    entries = merge_imports(imports_in_config_text(text), imports_in_opts(opts))
    import_modules(entries)
    cfg = get_centerx_cfg()
    cfg.merge_from_other_cfg(CfgNode.load_cfg(text))
    check_overrides(cfg, opts)
    cfg.merge_from_list(list(opts))
    cfg.IMPORTS = entries
    return cfg


class ConfigOverrideError(ValueError):
    """Command-line ``KEY VALUE`` overrides that cannot be merged (:func:`check_overrides`)."""


def config_keys(cfg, prefix: str = "") -> list[str]:
    """Every leaf key of ``cfg``, dotted (``MODEL.TTFNET.NUM_CLASSES``)."""
    keys = []
    for name, value in cfg.items():
        key = prefix + name
        keys.extend(config_keys(value, key + ".") if isinstance(value, CfgNode) else [key])
    return keys


def unknown_key_message(cfg, key: str, where: str) -> str:
    """What to say of ``key``, which ``cfg`` does not have (``where``: where it was
    set): the config keys nearest to it, if any are near."""
    hint = did_you_mean(key, config_keys(cfg), cutoff=0.75)
    return f"{key} ({where}) is not a config key{hint} docs/config.md lists every key."


def check_overrides(cfg, opts: Sequence) -> None:
    """Refuse command-line ``KEY VALUE`` overrides that yacs would stop on deep in its
    merge (an ``AssertionError: Non-existent key`` traceback) or read wrongly: a
    ``--flag`` among them (argparse hands every word after the first override to the
    overrides, flags included), a key without a value, a key ``cfg`` does not have (the
    nearest keys suggested). Keys yacs knows as deprecated or renamed are left to it.

    Raises:
        ConfigOverrideError: naming the word and what to do.
    """
    words = [str(o) for o in opts]
    flags = [w for w in words if w.startswith("--")]
    if flags:
        raise ConfigOverrideError(
            f"{' '.join(flags)} came after the KEY VALUE overrides, where it reads as a config key: put "
            f"flags first, e.g. --config-file FILE {' '.join(flags)} KEY VALUE ..."
        )
    if len(words) % 2:
        raise ConfigOverrideError(f"KEY VALUE overrides come in pairs, but the last key, {words[-1]}, has no value.")
    for key in words[::2]:
        if cfg.key_is_deprecated(key) or cfg.key_is_renamed(key):
            continue
        node, found = cfg, True
        for name in key.split("."):
            found = isinstance(node, CfgNode) and name in node
            if not found:
                break
            node = node[name]
        if not found:
            raise ConfigOverrideError(unknown_key_message(cfg, key, "among the KEY VALUE overrides"))


def merge_config_file(cfg, path: str):
    """``cfg.merge_from_file(path)`` after :func:`check_config_file`; returns ``cfg``.

    Raises:
        ValueError: the file (or a ``_BASE_`` it names) sets a key ``cfg`` does not have:
            the key and its nearest keys named, instead of yacs' bare KeyError.
    """
    check_config_file(path)
    missing = "Non-existent config key: "
    try:
        cfg.merge_from_file(path)
    except KeyError as e:
        if not (e.args and str(e.args[0]).startswith(missing)):
            raise
        key = str(e.args[0])[len(missing) :]
        raise ValueError(unknown_key_message(cfg, key, f"set in {path} or a _BASE_ it names")) from None
    return cfg
