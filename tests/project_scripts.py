"""Import a command-line script of projects/ as a module (the scripts are not a package)."""

import importlib.util
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script(folder: str, name: str):
    """The module of ``projects/<folder>/<name>.py``, freshly executed."""
    spec = importlib.util.spec_from_file_location(
        f"{folder}_{name}_cli", os.path.join(REPO, "projects", folder, f"{name}.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
