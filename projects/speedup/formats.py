#!/usr/bin/env python
"""Renamed: ``./run.sh benchmark`` (the per-format table) is projects/speedup/benchmark.py
since 0.2.0. Running this file says so."""

import sys

if __name__ == "__main__":
    sys.exit("projects/speedup/formats.py is projects/speedup/benchmark.py since 0.2.0 (./run.sh benchmark).")
