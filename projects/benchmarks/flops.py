#!/usr/bin/env python
"""Size and compute of a detector: parameters and multiply-adds of its network
(backbone, neck, heads; fvcore's count, one multiply-add per MAC; GFLOPs = 2 x GMACs,
as Ultralytics and the papers quote them), for a config and, with ``--backbones``,
for the same config on other timm backbones (MODEL.TIMM.NAME).

    .venv/bin/python projects/benchmarks/flops.py --config-file configs/shapes/ttfnet_nano_demo.yaml --size 256 \\
        --backbones lcnet_050 lcnet_075 mobilenetv3_small_100 mobilenetv3_large_075 ghostnet_100 efficientnet_lite0

Peak masking and decoding are not counted (a few element-wise passes). Prints a
markdown table (and writes it to ``--output``).
"""

import argparse
import logging
import os
import sys

import torch
from detectron2.modeling import build_model
from fvcore.nn import FlopCountAnalysis
from tabulate import tabulate

from centerx.config import load_config
from centerx.plugins import PluginImportError, add_imports_argument

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # projects/experiments.py
from experiments import report


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--size", type=int, default=256, help="square input side in pixels (multiple of 32)")
    p.add_argument("--backbones", nargs="*", default=[], metavar="TIMM_NAME", help="timm backbones to compare")
    p.add_argument("--output", default="", help="also write the markdown table to this file")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    add_imports_argument(p)
    args = p.parse_args(argv)
    if args.size <= 0 or args.size % 32:
        p.error(f"--size must be a positive multiple of 32, got {args.size}")
    return args


class Network(torch.nn.Module):
    """A detector's network alone: normalised images -> its raw output maps."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return tuple(self.model.predict(x).values())


def count(cfg, size: int) -> tuple[float, float]:
    """(parameters in millions, GMACs at size x size) of the config's network."""
    model = build_model(cfg).eval()
    flops = FlopCountAnalysis(Network(model), torch.zeros(1, 3, size, size))
    flops.unsupported_ops_warnings(False)
    flops.uncalled_modules_warnings(False)
    with torch.no_grad():
        macs = flops.total()
    return sum(p.numel() for p in model.parameters()) / 1e6, macs / 1e9


def main(argv=None) -> list[list]:
    args = parse_args(argv)
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    try:
        base = load_config(args.config_file, args.opts, args.imports)
    except PluginImportError as e:
        raise SystemExit(str(e)) from None
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"--config-file {args.config_file}: {e}") from None
    base.MODEL.DEVICE = "cpu"
    base.MODEL.CENTERX.CHANNELS_LAST = False
    variants = [("(the config's)", base)]
    for name in args.backbones:
        cfg = base.clone()
        cfg.MODEL.BACKBONE.NAME = "build_timm_backbone"
        cfg.MODEL.TIMM.NAME = name
        variants.append((name, cfg))
    rows = []
    for label, cfg in variants:
        params, gmacs = count(cfg, args.size)
        backbone = cfg.MODEL.TIMM.NAME if cfg.MODEL.BACKBONE.NAME == "build_timm_backbone" else cfg.MODEL.BACKBONE.NAME
        rows.append([label, cfg.MODEL.META_ARCHITECTURE, backbone, f"{params:.2f}", f"{gmacs:.3f}", f"{2 * gmacs:.3f}"])
    table = tabulate(
        rows,
        headers=["variant", "detector", "backbone", "params (M)", "GMACs", "GFLOPs"],
        tablefmt="github",
        disable_numparse=True,
        colalign=("left",) * 3 + ("right",) * 3,
    )
    report(f"{args.config_file} at {args.size} x {args.size}", table, args.output)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
