"""The package's imports, read from its source with ``ast``: one dependency
direction (docs/design.md, "Dependency direction"), no import cycle, no centerX
import inside a function, and a config layer that imports only detectron2's
config and the leaf helpers."""

import ast
import importlib
import os

import pytest
from package_layers import LAYERS, LEAF_HELPERS

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE = os.path.join(REPO, "centerx")


def package_modules() -> dict[str, tuple[str, bool]]:
    """{dotted module name: (path, is a package's __init__)} of every module of centerx."""
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                module = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
                is_package = module.endswith(".__init__")
                found[module[: -len(".__init__")] if is_package else module] = (path, is_package)
    return found


MODULES = package_modules()


def imported_names(module: str, node: ast.AST, is_package: bool) -> list[str]:
    """The absolute names an import statement of ``module`` brings in (for ``from X
    import a``: ``X.a`` when that is a module of centerx, else ``X``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        parts = module.split(".")[: None if is_package else -1]
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join(parts + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]


def owning_module(name: str) -> str:
    """The centerx module a dotted name belongs to (``centerx.config.load_config`` ->
    ``centerx.config``)."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def read_imports():
    """(edges {module: {centerx modules it imports}}, [(module, line, name) of centerx
    imports inside functions], {module: {every top-level name imported}})."""
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    local, everything = [], {m: set() for m in MODULES}
    for module, (path, is_package) in MODULES.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        in_functions = {
            id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) for n in ast.walk(f)
        }
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            names = imported_names(module, node, is_package)
            everything[module].update(names)
            for name in names:
                if name == "centerx" or name.startswith("centerx."):
                    edges[module].add(owning_module(name))
                    if id(node) in in_functions:
                        local.append((module, node.lineno, name))
    return edges, local, everything


EDGES, LOCAL, EVERYTHING = read_imports()


def layer_of(module: str) -> int:
    part = module.split(".")[1] if "." in module else "__init__"
    for i, names in enumerate(LAYERS):
        if part in names:
            return i
    raise AssertionError(
        f"{module}: its top-level name '{part}' is in no layer of docs/design.md; add it there and to "
        "LAYERS in tests/package_layers.py"
    )


def test_the_reader_sees_the_imports_it_should():
    """The reader itself, on imports whose targets are known."""
    assert "centerx.config" in EDGES["centerx.modeling.meta_arch.point_detector"]
    assert "centerx.modeling.meta_arch.centernet" in EDGES["centerx.deploy.caffe_export"]
    assert "centerx.plugins" in EDGES["centerx.config.config"]
    assert len(MODULES) > 80


def test_every_module_is_in_a_layer_and_imports_only_its_own_and_earlier_layers():
    wrong = [(a, b) for a, targets in EDGES.items() for b in targets if layer_of(b) > layer_of(a)]
    assert not wrong, "imports against docs/design.md's dependency direction: " + ", ".join(
        f"{a} -> {b}" for a, b in sorted(wrong)
    )


def test_the_package_has_no_import_cycle():
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(module: str) -> None:  # depth-first; state 1 = on the current path, 2 = done
        state[module] = 1
        path.append(module)
        for target in sorted(EDGES[module]):
            if target == module or target not in EDGES:
                continue
            if state.get(target) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(target) :] + [target]))
            if not state.get(target):
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(EDGES):
        if not state.get(module):
            visit(module)


def test_no_centerx_import_inside_a_function():
    assert not LOCAL, "function-local centerX imports (move them to the top of the module): " + ", ".join(
        f"{m}:{line} {name}" for m, line, name in LOCAL
    )


@pytest.mark.parametrize(
    "module", sorted(m for m in MODULES if m == "centerx.config" or m.startswith("centerx.config."))
)
def test_the_config_layer_imports_only_detectron2_config_and_leaf_helpers(module):
    allowed_centerx = {f"centerx.{name}" for name in LEAF_HELPERS} | {"centerx.config"}
    wrong = []
    for name in EVERYTHING[module]:
        top = name.split(".")[0]
        if top == "centerx":
            owner = owning_module(name)
            if owner not in allowed_centerx and not owner.startswith("centerx.config."):
                wrong.append(name)
        elif top == "detectron2" and not (name == "detectron2.config" or name.startswith("detectron2.config.")):
            wrong.append(name)
        elif top in ("torch", "torchvision", "numpy", "cv2"):
            wrong.append(name)
    assert not wrong, f"{module} imports {sorted(wrong)}"


@pytest.mark.parametrize(
    "module, new_home",
    [("centerx.experiments", "projects/experiments.py"), ("centerx.config_reference", "docs/config_reference.py")],
)
def test_a_module_that_left_the_package_names_its_new_home(module, new_home):
    with pytest.raises(ImportError, match=new_home):
        importlib.import_module(module)
    assert os.path.isfile(os.path.join(REPO, new_home))
