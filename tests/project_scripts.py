"""Import the repository's scripts as modules: the command-line scripts of
projects/ (not a package), what they share (projects/experiments.py, imported as
the scripts import it) and docs/config_reference.py."""

import importlib
import importlib.util
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROJECTS = os.path.join(REPO, "projects")


def load_file(path: str, name: str):
    """The module of the repository file ``path`` (relative to the root), freshly executed as ``name``."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_script(folder: str, name: str):
    """The module of ``projects/<folder>/<name>.py``, freshly executed."""
    return load_file(os.path.join("projects", folder, f"{name}.py"), f"{folder}_{name}_cli")


def load_experiments():
    """``projects/experiments.py``, the one module object the scripts import by name."""
    if PROJECTS not in sys.path:
        sys.path.insert(0, PROJECTS)
    return importlib.import_module("experiments")
