"""docs/config.md is generated from centerx/config/: it must list every key
centerX adds, with its current default, and be regenerated when they change."""

from detectron2.config import get_cfg

from centerx.config import FEATURE_CONFIGS

from project_scripts import load_file

config_reference = load_file("docs/config_reference.py", "config_reference")


def _leaves(cfg, prefix=""):
    out = {}
    for k, v in cfg.items():
        if isinstance(v, dict):
            out.update(_leaves(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def test_reference_file_is_up_to_date():
    with open(config_reference.REFERENCE) as f:
        assert f.read() == config_reference.render(), "run: .venv/bin/python docs/config_reference.py"


def test_every_added_key_is_documented_with_a_comment():
    """The keys in the reference are exactly those add_centerx_config adds to
    detectron2's defaults or gives another default (DATALOADER.SAMPLER_TRAIN),
    and each has a comment of its own (or its group's: consecutive keys under
    one comment), so no row of docs/config.md has an empty description."""
    cfg = get_cfg()
    for add in FEATURE_CONFIGS:  # centerX's own keys (not those of detectors other tests register)
        add(cfg)
    ours, detectron2s = _leaves(cfg), _leaves(get_cfg())
    added = {k for k, v in ours.items() if k not in detectron2s or detectron2s[k] != v}
    documented = {k: (node, c) for k, node, c in config_reference.documented_keys()}
    assert {k for k, (node, _) in documented.items() if not node} == added
    assert sorted(k for k in added if not documented[k][1]) == []


def test_check_flag_reports_a_stale_file(tmp_path, monkeypatch):
    stale = tmp_path / "config.md"
    stale.write_text("old\n")
    monkeypatch.setattr(config_reference, "REFERENCE", str(stale))
    assert config_reference.main(["--check"]) == 1
    assert config_reference.main([]) == 0
    assert config_reference.main(["--check"]) == 0


def test_shipped_configs_that_change_a_default_are_listed(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "Base.yaml").write_text("MODEL:\n  TTFNET:\n    DEFORMABLE: True\n    NUM_CLASSES: 80\n")
    (tmp_path / "sub" / "demo.yaml").write_text(
        '_BASE_: "../Base.yaml"\nSOLVER:\n  AMP:\n    FP32_MODULES: ("heads.ltrb",)\n'
    )
    assert config_reference.shipped_settings(str(tmp_path)) == {
        "MODEL.TTFNET.DEFORMABLE": [("Base.yaml", True)],
        "MODEL.TTFNET.NUM_CLASSES": [("Base.yaml", 80)],
        "SOLVER.AMP.FP32_MODULES": [("sub/demo.yaml", ("heads.ltrb",))],
    }
    rows = {
        line.split(" | ")[0].strip("| `"): line
        for line in config_reference.render().splitlines()
        if line.startswith("| `")
    }
    # the real configs: Base-TTFNet turns deformable convs on; a key set to its default is not listed
    assert rows["MODEL.TTFNET.DEFORMABLE"].endswith("| `Base-TTFNet.yaml`: `True` |")
    assert rows["MODEL.TTFNET.NUM_CLASSES"].endswith(
        "| `photos/ttfnet_nano_demo.yaml`: `10`; `photos/ttfnet_r18_demo.yaml`: `10`; "
        "`shapes/ttfnet_r18_demo.yaml`: `4` |"
    )
