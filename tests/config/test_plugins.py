"""A user's code from every command (centerx.plugins): ``--import`` and the config's
IMPORTS, imported before the config is built and recorded in the saved config.

The end-to-end test drives the shipped commands as subprocesses on
tests/user_project/toy_plugin.py, a project outside centerX with its own
detector, dataset, export format and runtime: train with ``--import``, then
evaluate, export, predict and benchmark from the saved config.yaml alone.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from centerx.config import load_config, load_saved_config
from centerx.plugins import PluginImportError, import_modules, imports_in_config_file, imports_in_opts, preimport

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLUGIN = os.path.join(REPO, "tests", "user_project", "toy_plugin.py")
DEMO = os.path.join(REPO, "configs", "shapes", "centernet_r18_demo.yaml")


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_a_config_file_imports_its_modules_before_its_keys_are_merged(tmp_path):
    """The module adds MODEL.PLUGIN_A_KEY; the file sets it, so merging it first
    would fail. The relative path is read from the config's folder, whatever the
    current directory, and recorded absolute."""
    write(
        tmp_path / "code" / "plugin_a.py",
        """
        from detectron2.modeling import META_ARCH_REGISTRY
        from centerx.modeling.meta_arch import CenterNet

        @META_ARCH_REGISTRY.register()
        class PluginANet(CenterNet):
            config_prefix = "MODEL.PLUGIN_A"

            @classmethod
            def add_config(cls, cfg):
                from detectron2.config import CfgNode
                cfg.MODEL.PLUGIN_A = CfgNode({"CHANNELS": 8, "DEFORMABLE": False})
                return cfg
        """,
    )
    config = write(
        tmp_path / "configs" / "a.yaml",
        f"""
        _BASE_: "{DEMO}"
        IMPORTS: ["../code/plugin_a.py"]
        MODEL:
          META_ARCHITECTURE: PluginANet
          PLUGIN_A:
            CHANNELS: 24
        """,
    )
    cfg = load_config(config)
    assert cfg.MODEL.PLUGIN_A.CHANNELS == 24
    assert cfg.IMPORTS == (str(tmp_path / "code" / "plugin_a.py"),)
    # the saved config alone brings the module along
    again = load_saved_config(cfg.dump(), ["MODEL.PLUGIN_A.CHANNELS", "32"])
    assert again.MODEL.PLUGIN_A.CHANNELS == 32 and again.IMPORTS == cfg.IMPORTS


def test_imports_of_a_base_chain_come_base_first_and_once(tmp_path):
    base = write(
        tmp_path / "base.yaml",
        f"""
        _BASE_: "{DEMO}"
        IMPORTS: ["json", "lib/one.py"]
        """,
    )
    child = write(
        tmp_path / "sub" / "child.yaml",
        """
        _BASE_: "../base.yaml"
        IMPORTS: ["json", "csv"]
        """,
    )
    assert imports_in_config_file(base) == ["json", str(tmp_path / "lib" / "one.py")]
    assert imports_in_config_file(child) == ["json", str(tmp_path / "lib" / "one.py"), "csv"]


def test_an_imports_override_is_relative_to_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert imports_in_opts(["SOLVER.MAX_ITER", "5", "IMPORTS", "('x.py', 'pkg.mod')"]) == [
        str(tmp_path / "x.py"),
        "pkg.mod",
    ]
    with pytest.raises(ValueError, match="IMPORTS must be a list of module names"):
        imports_in_opts(["IMPORTS", "(1, 2)"])


def test_a_file_is_imported_once_and_can_import_its_siblings(tmp_path):
    write(tmp_path / "sibling_helper_mod.py", "VALUE = 7\n")
    path = write(
        tmp_path / "plugin_counting.py",
        """
        import sibling_helper_mod
        RUNS = [sibling_helper_mod.VALUE]
        """,
    )
    (first,) = import_modules([path])
    (second,) = import_modules(["plugin_counting.py"], relative_to=str(tmp_path))
    assert first is second and first.RUNS == [7]


def test_imports_that_cannot_be_done_are_named(tmp_path):
    with pytest.raises(PluginImportError, match="no such file"):
        import_modules([str(tmp_path / "absent.py")])
    with pytest.raises(PluginImportError, match="no module named 'no_such_module_xyz'"):
        import_modules(["no_such_module_xyz"])
    with pytest.raises(PluginImportError, match="a folder"):
        import_modules([str(tmp_path) + "/"])
    taken = write(tmp_path / "json.py", "")
    with pytest.raises(PluginImportError, match="a module named 'json' is imported already"):
        import_modules([taken])
    # a module that is found but imports something missing: the user's error, unchanged
    broken = write(tmp_path / "plugin_broken.py", "import no_such_dependency_xyz\n")
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_xyz"):
        import_modules([broken])


def test_commands_refuse_an_import_they_cannot_do(tmp_path):
    import train_net

    args = train_net.argument_parser().parse_args(["--import", "no_such_module_xyz", "--config-file", DEMO])
    with pytest.raises(SystemExit, match="import 'no_such_module_xyz': no module named"):
        train_net.load_run_config(args)
    with pytest.raises(SystemExit, match="no such file"):
        preimport(["--import", str(tmp_path / "absent.py")])


def run(argv, env, cwd):
    result = subprocess.run([sys.executable, *argv], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(argv)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.mark.slow
def test_a_user_project_runs_through_every_command_from_its_saved_config(tmp_path):
    """Trained with --import (a few iterations); then evaluation, distillation with
    the project's own term, export to the project's own format, prediction with its
    own runtime and with PyTorch, and the benchmark, each given only the saved
    config.yaml or the exported file, from another directory. The project's runtime
    rebuilds the detector from the exported archive: its detections equal PyTorch's
    on the same image."""
    env = dict(os.environ, TOY_SQUARES_ROOT=str(tmp_path / "data"), OMP_NUM_THREADS="2", PYTHONPATH="")
    config = write(
        tmp_path / "toy.yaml",
        f"""
        _BASE_: "{DEMO}"
        MODEL:
          META_ARCHITECTURE: ToyNet
          TOYNET:
            CHANNELS: 16
          CENTERX:
            CHANNELS_LAST: False
        DATASETS:
          TRAIN: ("toy_squares_train",)
          TEST: ("toy_squares_val",)
        INPUT:
          TRAIN_SIZE: 96
          MIN_SIZE_TEST: 96
          MAX_SIZE_TEST: 96
        SOLVER:
          AMP:
            FP32_MODULES: ("heads.wh",)
          IMS_PER_BATCH: 4
          MAX_ITER: 10
          WARMUP_ITERS: 0
          STEPS: ()
          CHECKPOINT_PERIOD: 100000
        TEST:
          VIS_IMAGES: 0
          DETECTIONS_PER_IMAGE: 20
        EXPORT:
          INPUT_SIZE: (96, 96)
        """,
    )
    run_dir, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    elsewhere.mkdir()
    relative_plugin = os.path.relpath(PLUGIN, REPO)
    run(["train_net.py", "--import", relative_plugin, "--config-file", config, "OUTPUT_DIR", str(run_dir)], env, REPO)
    saved, weights = str(run_dir / "config.yaml"), str(run_dir / "model_final.pth")
    assert f"- {PLUGIN}" in (run_dir / "config.yaml").read_text()

    run(
        [os.path.join(REPO, "train_net.py"), "--config-file", saved, "--eval-only", "MODEL.WEIGHTS", weights],
        env,
        elsewhere,
    )
    assert "Evaluation results for bbox" in (run_dir / "eval" / "log.txt").read_text()

    # the trained ToyNet teaches a ToyNet student through the project's own distillation term, named in
    # the config; the term's adapter is in the checkpoint beside the plain student
    distill_dir = tmp_path / "distill"
    teachers = f"[('{saved}', '{weights}', ())]"
    run(
        [
            os.path.join(REPO, "train_net.py"),
            "--config-file",
            saved,
            "MODEL.META_ARCHITECTURE",
            "Distiller",
            "MODEL.DISTILL.STUDENT_META_ARCHITECTURE",
            "ToyNet",
            "MODEL.DISTILL.TEACHERS",
            teachers,
            "MODEL.DISTILL.TERMS",
            "('ToyFeatureMimic',)",
            "SOLVER.MAX_ITER",
            "3",
            "TEST.EVAL_PERIOD",
            "0",
            "DATASETS.TEST",
            "()",
            "OUTPUT_DIR",
            str(distill_dir),
        ],
        env,
        elsewhere,
    )
    assert "loss_mimic_t0" in (distill_dir / "metrics.json").read_text()
    checkpoint = torch.load(distill_dir / "model_final.pth", map_location="cpu", weights_only=False)
    assert {k.split(".")[-1] for k in checkpoint["distillation_terms"]} == {"weight", "bias"}

    run(
        [
            os.path.join(REPO, "projects", "speedup", "export.py"),
            "--config-file",
            saved,
            "--format",
            "npz-weights",
            "--output",
            str(tmp_path / "deploy"),
            "MODEL.WEIGHTS",
            weights,
        ],
        env,
        elsewhere,
    )
    archive = str(tmp_path / "deploy" / "weights.npz")
    assert os.path.isfile(archive + ".centerx.json")

    image = str(tmp_path / "data" / "toy_squares_val" / "000.png")
    predict = os.path.join(REPO, "projects", "demo", "predict.py")
    found = {}
    for name, argv in (("npz", ["--model", archive]), ("pytorch", ["--config-file", saved, "--runtime", "pytorch"])):
        out = tmp_path / f"{name}.json"
        result = run(
            [
                predict,
                *argv,
                "--input",
                image,
                "--save-json",
                str(out),
                "--confidence-threshold",
                "0.0",
                *(["MODEL.WEIGHTS", weights] if name == "pytorch" else []),
            ],
            env,
            elsewhere,
        )
        assert f"on {name}" in result.stdout + result.stderr
        found[name] = json.loads(out.read_text())
    assert found["npz"] and len(found["npz"]) == len(found["pytorch"])
    for a, b in zip(found["npz"], found["pytorch"]):
        assert a["category_id"] == b["category_id"] and a["score"] == pytest.approx(b["score"], abs=1e-5)
        assert a["bbox"] == pytest.approx(b["bbox"], abs=1e-3)

    result = run(
        [
            os.path.join(REPO, "projects", "speedup", "benchmark.py"),
            "--config-file",
            saved,
            "--formats",
            "pytorch",
            "npz-weights",
            "--reps",
            "2",
            "--warmup",
            "0",
            "--images",
            "2",
            "--output",
            str(tmp_path / "bench"),
            "MODEL.WEIGHTS",
            weights,
        ],
        env,
        elsewhere,
    )
    table = (tmp_path / "bench" / "table.md").read_text()
    assert "| npz-weights |" in table and "failed" not in table, table
