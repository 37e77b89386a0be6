"""Config files read before detectron2 merges them: encoding, YAML and the
``_BASE_`` chain checked, so that a broken file is named instead of failing deep
in detectron2 (a ``RecursionError`` for a cycle, a bare ``UnicodeDecodeError``)."""

import os

import yaml

from .text_files import read_text

__all__ = ["ConfigFileError", "base_path", "check_config_file"]


class ConfigFileError(ValueError):
    """A config file that cannot be read: not UTF-8, not YAML, not a mapping, or a
    ``_BASE_`` chain that is broken or loops; the message names the files."""


def base_path(base: str, including_file: str) -> str:
    """A ``_BASE_`` entry resolved as detectron2 resolves it: ``~`` expanded, then
    relative to the including file unless absolute or a URL."""
    base = os.path.expanduser(base)
    if base.startswith(("/", "http://", "https://")):
        return base
    return os.path.join(os.path.dirname(including_file), base)


def check_config_file(path: str) -> None:
    """Read ``path`` and every file of its ``_BASE_`` chain as detectron2 will, and
    raise a clear error for what would otherwise fail deep in detectron2: a
    missing file (naming the file whose ``_BASE_`` names it), text that is not
    UTF-8 (file, line, byte), YAML that does not parse, a file that is not a
    mapping of keys, or a ``_BASE_`` cycle (the files of the cycle, in order).

    Raises:
        FileNotFoundError, ConfigFileError (a ``ValueError``).
    """
    chain = []

    def visit(file: str) -> None:
        real = os.path.realpath(file)
        if real in [os.path.realpath(f) for f in chain]:
            loop = " -> ".join(chain[[os.path.realpath(f) for f in chain].index(real) :] + [file])
            raise ConfigFileError(f"config _BASE_ cycle: {loop}. Remove the _BASE_ that points back.")
        if not os.path.isfile(file):
            raise FileNotFoundError(
                f"config file '{file}' does not exist" + (f" (the _BASE_ of '{chain[-1]}')" if chain else "") + "."
            )
        text = read_text(file, "config file")
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigFileError(f"config file '{file}' is not valid YAML: {' '.join(str(e).split())}") from None
        if data is None:
            return
        if not isinstance(data, dict):
            raise ConfigFileError(
                f"config file '{file}' holds a YAML {type(data).__name__}, not a mapping of config "
                "keys (e.g. MODEL: {META_ARCHITECTURE: TTFNet})."
            )
        base = data.get("_BASE_")
        if base:
            if not isinstance(base, str):
                raise ConfigFileError(f"config file '{file}': _BASE_ must be one file name, got {base!r}.")
            chain.append(file)
            visit(base_path(base, file))
            chain.pop()

    visit(path)
