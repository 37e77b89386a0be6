"""projects/ablation/ablation.py: every variant is a valid config that switches on
exactly its trick, and one tiny variant runs end to end over two seeds, is cached
and tabulated."""

import json
import os

import pytest

from project_scripts import load_experiments, load_script


@pytest.fixture(scope="module")
def ablation():
    return load_script("ablation", "ablation")


# the key each trick variant must change from its default, and to what
TRICK_KEYS = {
    "mixup": ("INPUT.MIXUP.ENABLED", True),
    "multi-scale": ("INPUT.TRAIN_SIZES", (128, 160, 192, 224, 256)),
    "coordconv": ("MODEL.CENTERX.COORD_CONV", True),
    "spp": ("MODEL.CENTERX.SPP.ENABLED", True),
    "dropblock": ("MODEL.CENTERX.DROPBLOCK.ENABLED", True),
    "iou-aware": ("MODEL.TTFNET.IOU_AWARE.ENABLED", True),
}


def _get(cfg, key):
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


@pytest.mark.parametrize("arch", ["centernet", "ttfnet"])
def test_variants_are_valid_configs(ablation, arch, tmp_path):
    """Each variant merges into the demo config; the baseline has every trick off,
    each single-trick variant turns on its own trick only, "all tricks" all of them;
    the KD variants set the distillation modes; IoU-aware exists for TTFNet only."""
    args = ablation.parse_args(["--arch", arch, "--iters", "50"])
    teacher = ("t.yaml", "t.pth", ())
    variants = ablation.trick_variants(args) + ablation.kd_variants(args, teacher)
    names = [n for n, _ in variants]
    expected = ["baseline", "mixup", "multi-scale", "coordconv", "spp", "dropblock"]
    expected += ["iou-aware"] if arch == "ttfnet" else []
    kept = "mixup + spp" + (" + iou-aware" if arch == "ttfnet" else "")
    assert names == expected + ["all tricks", kept, "logit KD", "adversarial KD", "logit + adversarial KD"]
    trick_keys = {k: v for k, v in TRICK_KEYS.items() if k in names}
    cfgs = {
        n: ablation.experiment_cfg(ablation.demo_config(args), args, str(tmp_path), ["shapes_train"], ["shapes_val"], o)
        for n, o in variants
    }
    for key, value in trick_keys.values():
        assert _get(cfgs["baseline"], key) != value
        assert _get(cfgs["all tricks"], key) == value
    assert {n for n, (k, v) in trick_keys.items() if _get(cfgs[kept], k) == v} == {"mixup", "spp", "iou-aware"} & set(
        trick_keys
    )
    for name in trick_keys:
        on = {n for n in trick_keys if _get(cfgs[name], trick_keys[n][0]) == trick_keys[n][1]}
        assert on == {name}
    assert cfgs["mixup"].INPUT.MIXUP.OFF_LAST_ITERS == 5
    for name, logit, adversarial in [
        ("logit KD", True, False),
        ("adversarial KD", False, True),
        ("logit + adversarial KD", True, True),
    ]:
        cfg = cfgs[name]
        assert cfg.MODEL.META_ARCHITECTURE == "Distiller"
        assert (cfg.MODEL.DISTILL.LOGIT_KD, cfg.MODEL.DISTILL.ADVERSARIAL.ENABLED) == (logit, adversarial)
        assert cfg.MODEL.DISTILL.TEACHERS == [teacher]


def test_radius_variants_set_the_radius_keys(ablation, tmp_path):
    """The radius group: the default (original roots at 0.7) and the two corrected
    settings; refused for TTFNet, whose Gaussians have no CornerNet radius."""
    args = ablation.parse_args(["--arch", "centernet", "--groups", "radius"])
    variants = ablation.radius_variants(args)
    cfgs = [
        ablation.experiment_cfg(ablation.demo_config(args), args, str(tmp_path), ["shapes_train"], ["shapes_val"], o)
        for _, o in variants
    ]
    assert [(c.MODEL.CENTERNET.RADIUS_MODE, c.MODEL.CENTERNET.MIN_OVERLAP) for c in cfgs] == [
        ("original", 0.7),
        ("corrected", 0.3),
        ("corrected", 0.7),
    ]
    default = ablation.experiment_cfg(ablation.demo_config(args), args, str(tmp_path), ["shapes_train"], ["shapes_val"])
    assert (default.MODEL.CENTERNET.RADIUS_MODE, default.MODEL.CENTERNET.MIN_OVERLAP) == ("original", 0.7)
    with pytest.raises(SystemExit, match="--arch centernet"):
        ablation.radius_variants(ablation.parse_args(["--arch", "ttfnet", "--groups", "radius"]))


def test_tiny_run_is_cached_and_tabulated(ablation, tmp_path, capsys):
    """One tiny variant trains once per seed, writes its figures and the table
    (mean +- std and each seed's AP); a second call reads the figures back
    instead of training again."""
    out = tmp_path / "ablation"
    argv = [
        "--arch",
        "ttfnet",
        "--groups",
        "tricks",
        "--only",
        "spp",
        "--iters",
        "2",
        "--train-images",
        "4",
        "--test-images",
        "2",
        "--latency-reps",
        "1",
        "--seeds",
        "1",
        "2",
        "--output-dir",
        str(out),
        "SOLVER.IMS_PER_BATCH",
        "2",
        "INPUT.TRAIN_SIZE",
        "64",
        "INPUT.MIN_SIZE_TEST",
        "64",
        "INPUT.MAX_SIZE_TEST",
        "64",
        "DATALOADER.NUM_WORKERS",
        "0",
        "TEST.VIS_IMAGES",
        "0",
    ]
    ablation.main(argv)
    figures = [json.loads((out / "spp" / f"seed{k}" / "result.json").read_text()) for k in (1, 2)]
    assert [f["iterations"] for f in figures] == [2, 2]
    assert all(f["train_s"] > 0 and f["AP"] is not None for f in figures)
    assert json.loads((out / "spp" / "latency.json").read_text())["latency_ms"] > 0
    mtime = os.path.getmtime(out / "spp" / "seed2" / "model_final.pth")
    capsys.readouterr()
    ablation.main(argv)
    assert os.path.getmtime(out / "spp" / "seed2" / "model_final.pth") == mtime
    table = (out / "table.md").read_text()
    assert table.splitlines()[0].startswith("| variant | iterations | AP | AP per seed")
    row = table.splitlines()[2]
    assert row.startswith("| spp | 2 |") and "(n=2)" in row
    assert f"| {figures[0]['AP']:.1f} / {figures[1]['AP']:.1f} |" in row
    (out / "spp" / "latency.json").write_text(json.dumps({"latency_ms": -1.0}))
    ablation.main(["--remeasure-latency"] + argv)  # a fresh measurement, without retraining
    assert os.path.getmtime(out / "spp" / "seed2" / "model_final.pth") == mtime
    latency = json.loads((out / "spp" / "latency.json").read_text())["latency_ms"]
    assert latency > 0
    assert (out / "table.md").read_text().splitlines()[2].endswith(f"| {latency:.1f} |")
    with pytest.raises(SystemExit, match=r"another config \(1 keys differ: SOLVER.IMS_PER_BATCH: 2 saved vs 1"):
        ablation.main(argv + ["SOLVER.IMS_PER_BATCH", "1"])
    with pytest.raises(SystemExit, match="unknown variants"):
        ablation.main(argv[:4] + ["--only", "nope"])


def test_saved_config_without_a_newer_key_matches_its_default(tmp_path):
    """Results saved before a key existed are still this config's when the key
    holds its default, whatever the EXPORT keys and wherever the folder was
    moved; another value of it, or of any other saved key, is refused."""
    import yaml

    from centerx import get_centerx_cfg

    check_same_config = load_experiments().check_same_config

    cfg = get_centerx_cfg()
    cfg.OUTPUT_DIR = str(tmp_path)
    saved = yaml.safe_load(cfg.dump())
    del saved["MODEL"]["DISTILL"]["HEATMAP_LOSS"]
    saved["OUTPUT_DIR"] = "output/trained/elsewhere"  # copied here from another experiment
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved))
    check_same_config(cfg)
    cfg.MODEL.DISTILL.HEATMAP_LOSS = "quality_focal"
    with pytest.raises(SystemExit, match=r"1 keys differ: MODEL.DISTILL.HEATMAP_LOSS: None saved vs 'quality_focal'"):
        check_same_config(cfg)
    cfg.MODEL.DISTILL.HEATMAP_LOSS = ""
    cfg.EXPORT.INPUT_SIZE = (64, 64)  # export settings change no training result
    check_same_config(cfg)
    cfg.SOLVER.BASE_LR = 1.0
    with pytest.raises(SystemExit, match="SOLVER.BASE_LR"):
        check_same_config(cfg)


def test_saved_run_without_detections_counts_as_ap_zero(tmp_path):
    """detectron2's COCOEvaluator gives NaN for every AP when a model detects
    nothing; read back, such a run counts as AP 0 (flagged), so a mean over seeds
    stays a number; a diverged run (no AP) and a normal run are read unchanged."""
    import json

    from centerx import get_centerx_cfg

    run_cached = load_experiments().run_cached

    cfg = get_centerx_cfg()
    cfg.OUTPUT_DIR = str(tmp_path)
    (tmp_path / "config.yaml").write_text(cfg.dump())
    for stored, expected in (
        (
            {"final_loss": 8.0, "iterations": 10, "AP": float("nan"), "AP50": float("nan"), "train_s": 5.0},
            {"final_loss": 8.0, "iterations": 10, "AP": 0.0, "AP50": 0.0, "train_s": 5.0, "no_detections": True},
        ),
        ({"final_loss": 9.0, "iterations": 4, "train_s": 1.0}, {"final_loss": 9.0, "iterations": 4, "train_s": 1.0}),
        (
            {"final_loss": 1.0, "iterations": 10, "AP": 12.5, "train_s": 5.0},
            {"final_loss": 1.0, "iterations": 10, "AP": 12.5, "train_s": 5.0},
        ),
    ):
        (tmp_path / "result.json").write_text(json.dumps(stored))
        assert run_cached(cfg) == expected
