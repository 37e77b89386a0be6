"""The shell commands of the docs stay runnable as written: a dry run of each.

Every ``./run.sh`` and ``.venv/bin/python`` line in the ```bash blocks of README.md,
docs/, datasets/ and projects/*/README.md is checked without running its work:
the subcommand exists in run.sh, the script exists, its flags parse with the
script's own argument parser (as run.sh would call it), and for train / eval the
config file and every ``KEY VALUE`` override merge into the config and pass its
checks. Lines with placeholders (``...``, ``<file>``, ``CFG``) are checked up to
the script and subcommand.
"""

import argparse
import glob
import os
import re
import runpy
import shlex
import sys

import pytest
from fvcore.common.registry import Registry

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCS = [
    "README.md",
    "datasets/README.md",
    *sorted(glob.glob(os.path.join(REPO, "docs", "*.md"))),
    *sorted(glob.glob(os.path.join(REPO, "projects", "*", "README.md"))),
]
DEMO_CONFIG = "configs/shapes/ttfnet_r18_demo.yaml"
# run.sh subcommand -> (script, arguments run.sh puts first, when it adds the demo config)
SUBCOMMANDS = {
    "train": ("train_net.py", [], "config"),
    "eval": ("train_net.py", ["--eval-only"], "config"),
    "export": ("projects/speedup/export.py", [], "config"),
    "check-data": ("projects/data/check_data.py", [], "config"),
    "benchmark": ("projects/speedup/benchmark.py", [], "config"),
    "gpu-check": ("projects/benchmarks/gpu_check.py", [], None),
    "predict": ("projects/demo/predict.py", [], "model"),
    "demo": ("projects/demo/predict.py", [], "model"),
    "evaluate": ("projects/speedup/evaluate.py", [], "model"),
}
NO_SCRIPT = {"test", "lint", "setup", "help"}
OPTIONAL = re.compile(r"\[[^\]\"']*\]")  # usage notation: [--size 512], [KEY VALUE ...]
PLACEHOLDERS = ("...", "<", "CFG", "NAME")


def doc_commands() -> list[tuple[str, str]]:
    """(doc file, command line) of every run.sh / venv python line, continuation
    lines joined, shell variables of the same block substituted."""
    found = []
    for doc in DOCS:
        path = doc if os.path.isabs(doc) else os.path.join(REPO, doc)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for block in re.findall(r"```bash\n(.*?)```", text, re.S):
            variables: dict[str, str] = {}
            for line in block.replace("\\\n", " ").splitlines():
                line = line.strip()
                assignment = re.fullmatch(r"([A-Z_]+)=(\S+)", line)
                if assignment:
                    variables[assignment.group(1)] = assignment.group(2)
                    continue
                for name, value in variables.items():
                    line = line.replace(f"${name}", value)
                if line.startswith(("./run.sh", ".venv/bin/python ", "python ")):
                    found.append((os.path.relpath(path, REPO), line))
    return found


COMMANDS = doc_commands()


class Parsed(Exception):
    """Raised in place of the script's work once its arguments are parsed."""

    def __init__(self, args):
        super().__init__("parsed")
        self.namespace = args


def parse_with_script(script: str, argv: list[str]) -> argparse.Namespace:
    """The script's own parser on ``argv`` (its error exits as SystemExit 2)."""
    original = argparse.ArgumentParser.parse_args

    def parse_and_stop(parser, args=None, namespace=None):
        raise Parsed(original(parser, args, namespace))

    def register_again(registry, name, obj):  # a script run twice registers its classes twice
        registry._obj_map[name] = obj

    old_argv, old_register = sys.argv, Registry._do_register
    sys.argv = [script, *argv]
    argparse.ArgumentParser.parse_args = parse_and_stop
    Registry._do_register = register_again
    try:
        runpy.run_path(os.path.join(REPO, script), run_name="__main__")
    except Parsed as done:
        return done.namespace
    finally:
        argparse.ArgumentParser.parse_args = original
        Registry._do_register = old_register
        sys.argv = old_argv
    raise AssertionError(f"{script} did not parse its arguments")


def test_the_docs_have_commands():
    assert len(COMMANDS) > 60, len(COMMANDS)


@pytest.mark.parametrize("doc, line", COMMANDS, ids=[f"{d}:{i}" for i, (d, _) in enumerate(COMMANDS)])
def test_doc_command_is_runnable_as_written(doc, line, monkeypatch):
    monkeypatch.chdir(REPO)
    placeholder = any(p in shlex.split(line, comments=True) or p in line for p in PLACEHOLDERS)
    tokens = shlex.split(OPTIONAL.sub(" ", line), comments=True)
    if tokens[0] == "./run.sh":
        sub = tokens[1] if len(tokens) > 1 else "help"
        with open(os.path.join(REPO, "run.sh"), encoding="utf-8") as f:
            cases = re.findall(r"^  ([a-z|-]+)\)", f.read(), re.M)
        assert any(sub in case.split("|") for case in cases), f"{doc}: run.sh has no subcommand '{sub}'"
        if sub in NO_SCRIPT:
            return
        script, first, default = SUBCOMMANDS[sub]
        argv = first + tokens[2:]
        given = ("--config-file", "--model") if default == "model" else ("--config-file",)
        if default and not any(t in argv for t in given):
            argv = ["--config-file", DEMO_CONFIG] + argv
    else:
        script, argv = tokens[1], tokens[2:]
    assert os.path.isfile(os.path.join(REPO, script)), f"{doc}: {script} does not exist"
    if placeholder:
        return
    args = parse_with_script(script, argv)
    if script == "train_net.py":  # the config and every override: merged and checked as training does
        import train_net

        train_net.load_run_config(args)
