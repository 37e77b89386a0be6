"""A user's own code in every command: the modules named by ``--import`` and by
the config's ``IMPORTS`` key are imported before the config is built, so that
what they register (a detector and its config keys, a backbone, a dataset, an
exporter and its runtime, a hook) is there when the config file is merged.

An entry is a module name (``my_project.detector``; looked up on ``PYTHONPATH``
and in the current directory) or the path of a ``.py`` file (imported under its
file name, with its folder added to ``sys.path`` so that it can import its
siblings). A path inside a config file is relative to that file, as ``_BASE_``
is; on the command line, to the current directory. The config a run saves
records every entry (paths made absolute), so that the saved ``config.yaml``
alone is enough for evaluation, export, prediction and benchmarks later.

Each module is imported once per process, whichever way it is named.
"""

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from types import ModuleType

import yaml
from detectron2.config import CfgNode

from .config_files import base_path, check_config_file
from .text_files import read_text

__all__ = [
    "IMPORTS_KEY",
    "PluginImportError",
    "absolute_entry",
    "add_imports_argument",
    "import_modules",
    "imports_in_config_file",
    "imports_in_config_text",
    "imports_in_opts",
    "is_file_entry",
    "merge_imports",
    "preimport",
]

IMPORTS_KEY = "IMPORTS"


class PluginImportError(ValueError):
    """An ``IMPORTS`` / ``--import`` entry that cannot be imported: a missing file
    or module, a folder, a module name taken; the message names the entry."""


def add_imports_argument(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--import MODULE`` (repeatable) on a command's parser, stored in ``args.imports``."""
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import this Python module (a name, or the path of a .py file) before the config is "
        "read, e.g. one that registers your own detector, dataset or exporter; repeatable. "
        "Recorded in the config's IMPORTS, so a saved config.yaml brings it along.",
    )
    return parser


def is_file_entry(entry: str) -> bool:
    """Whether an ``IMPORTS`` entry is a file path (ends in ``.py`` or names a folder) rather than a module name."""
    return entry.endswith(".py") or os.sep in entry or "/" in entry


def absolute_entry(entry: str, relative_to: str) -> str:
    """A file entry made absolute from the folder ``relative_to``; a module name unchanged."""
    if not is_file_entry(entry):
        return entry
    entry = os.path.expanduser(entry)
    return entry if os.path.isabs(entry) else os.path.abspath(os.path.join(relative_to, entry))


def _check_entries(value, where: str) -> list[str]:
    """``value`` as a list of non-empty strings, or a ValueError naming ``where``."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(
            f"{where}: IMPORTS must be a list of module names or .py paths, got {value!r}; "
            "e.g. IMPORTS: ['my_project.detector', 'tools/my_dataset.py']."
        )
    return [v.strip() for v in value]


def imports_in_config_file(path: str) -> list[str]:
    """The ``IMPORTS`` of ``path`` and of its ``_BASE_`` chain, bases first, file
    entries made absolute (relative to the file that names them). The chain is
    checked as :func:`centerx.config_files.check_config_file` does."""
    check_config_file(path)
    chain = []
    file = path
    while file:
        data = yaml.safe_load(read_text(file, "config file")) or {}
        chain.append((file, data))
        base = data.get("_BASE_")
        file = base_path(base, file) if base else None
    entries: list[str] = []
    for file, data in reversed(chain):
        if IMPORTS_KEY in data:
            folder = os.path.dirname(os.path.abspath(file))
            entries += [absolute_entry(e, folder) for e in _check_entries(data[IMPORTS_KEY], file)]
    return _unique(entries)


def imports_in_config_text(text: str) -> list[str]:
    """The ``IMPORTS`` of a whole config dumped as YAML (a run's ``config.yaml``,
    the config an exported model carries); its entries are absolute already."""
    data = yaml.safe_load(text) or {}
    return _check_entries(data.get(IMPORTS_KEY, []), "the saved config") if isinstance(data, dict) else []


def imports_in_opts(opts: Sequence) -> list[str]:
    """The entries of an ``IMPORTS`` override among ``KEY VALUE`` pairs (file
    entries relative to the current directory)."""
    opts = list(opts)
    entries: list[str] = []
    for key, value in zip(opts[0::2], opts[1::2]):
        if key == IMPORTS_KEY:
            decoded = CfgNode._decode_cfg_value(value) if isinstance(value, str) else value
            entries = [absolute_entry(e, os.getcwd()) for e in _check_entries(decoded, "the IMPORTS override")]
    return entries


def merge_imports(*lists: Iterable[str]) -> tuple:
    """The entries of ``lists`` in order, each once: the value a config records."""
    return tuple(_unique([e for entries in lists for e in entries]))


def _unique(entries: Iterable[str]) -> list[str]:
    seen: list[str] = []
    for e in entries:
        if e not in seen:
            seen.append(e)
    return seen


def import_modules(entries: Iterable[str], relative_to: str = "") -> list[ModuleType]:
    """Import each entry (see the module docstring); file entries that are not
    absolute are taken relative to ``relative_to`` (default: the current directory).

    Raises:
        PluginImportError (a ValueError): a file that does not exist, a module that cannot be found, or a
            file whose module name is taken by another module; the message names
            the entry and what to pass instead. An error raised by the module's
            own code reaches the caller unchanged, with its traceback.
    """
    return [_import_one(absolute_entry(e, relative_to or os.getcwd())) for e in entries]


def _import_one(entry: str) -> ModuleType:
    if is_file_entry(entry):
        return _import_file(entry)
    if os.getcwd() not in sys.path:  # python puts the script's folder there, not the current directory
        sys.path.append(os.getcwd())
    try:
        return importlib.import_module(entry)
    except ModuleNotFoundError as e:
        if e.name is None or not (entry == e.name or entry.startswith(e.name + ".")):
            raise  # the module was found; something it imports is missing
        raise PluginImportError(
            f"import '{entry}': no module named '{e.name}' on PYTHONPATH or in "
            f"{os.getcwd()}. Pass a module name that `python -c 'import NAME'` accepts there, "
            "or the path of its .py file."
        ) from None


def _import_file(path: str) -> ModuleType:
    if os.path.isdir(path):
        raise PluginImportError(
            f"import '{path}': a folder; pass the .py file, or add its parent folder to PYTHONPATH "
            "and pass the package's name."
        )
    if not os.path.isfile(path):
        raise PluginImportError(f"import '{path}': no such file (--import or the config's IMPORTS).")
    real = os.path.realpath(path)
    name = os.path.splitext(os.path.basename(path))[0]
    loaded = sys.modules.get(name)
    if loaded is not None:
        if os.path.realpath(getattr(loaded, "__file__", "") or "") == real:
            return loaded
        raise PluginImportError(
            f"import '{path}': a module named '{name}' is imported already (from "
            f"{getattr(loaded, '__file__', 'a built-in')}); rename the file."
        )
    folder = os.path.dirname(real)
    if folder not in sys.path:
        sys.path.append(folder)
    spec = importlib.util.spec_from_file_location(name, real)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def preimport(argv: Sequence[str] | None = None, model_config: Callable[[str], str | None] | None = None) -> None:
    """Import the modules a command line names before its parser is built, so that
    the formats, runtimes and detectors they register are offered as choices:
    those of ``--import``, of ``--config-file``'s ``IMPORTS``, and, given
    ``model_config`` (exported file -> its saved config text, or None), of the
    config ``--model`` carries. A config file or model that cannot be read is
    left to the command's own checks, which name it.

    Raises:
        SystemExit: an entry cannot be imported (the message names it).
    """
    parser = argparse.ArgumentParser(add_help=False)
    add_imports_argument(parser)
    parser.add_argument("--config-file", default="")
    parser.add_argument("--model", default="")
    known, _ = parser.parse_known_args(sys.argv[1:] if argv is None else list(argv))
    entries = [absolute_entry(e, os.getcwd()) for e in known.imports]
    try:
        if known.config_file and os.path.isfile(known.config_file):
            entries = imports_in_config_file(known.config_file) + entries
        if known.model and model_config is not None and os.path.isfile(known.model):
            text = model_config(known.model)
            entries = (imports_in_config_text(text) if text else []) + entries
    except (OSError, ValueError, yaml.YAMLError):
        pass
    try:
        import_modules(_unique(entries))
    except PluginImportError as e:
        raise SystemExit(str(e)) from None
