#!/usr/bin/env bash
# centerX entry point. Every subcommand first makes sure the environment exists.
#
#   ./run.sh train [train_net.py args]   train (default: the shapes demo config) + COCO evaluation;
#                                        into a folder holding a run: --resume (continue) or --overwrite
#   ./run.sh eval  [train_net.py args]   evaluate MODEL.WEIGHTS (train_net.py --eval-only; writes OUTPUT_DIR/eval)
#   ./run.sh test  [pytest args]         the whole test suite, one pytest-xdist worker per core (-n 0: none)
#   ./run.sh lint  [ruff args]           ruff check with ruff.toml (pyflakes, bugbear, pyupgrade, import order),
#                                        then ruff format --check
#   ./run.sh export --format FORMAT.. [export.py args]   deployment export, one or several formats (formats below)
#   ./run.sh predict --input IMAGE|FOLDER|VIDEO|CAMERA --output DIR (--model FILE | MODEL.WEIGHTS W)
#                                        detect, draw, --save-json (projects/demo; `demo` is the same)
#   ./run.sh evaluate (--model FILE | MODEL.WEIGHTS W) [--dataset NAME] [--output DIR]
#                                        COCO AP of an exported file or a checkpoint on a dataset
#   ./run.sh check-data [--datasets N..] [--images K]   box statistics, histograms, images with ground truth
#   ./run.sh benchmark [--formats F..] MODEL.WEIGHTS W   size, latency, throughput, AP per export format
#   ./run.sh gpu-check [--skip-benchmarks]   AMP, EMA, DDP, FP16, ONNX Runtime CUDA, TensorRT checks on a GPU
#   ./run.sh setup                       only create / check the environment
#
# Environment: .venv next to this file (CENTERX_VENV overrides). If the Python
# running this script already imports detectron2 (built from source, or an
# active venv / conda env), the venv is made with --system-site-packages and
# that detectron2 and torch are used as they are; otherwise torch, torchvision
# and the PyPI repackaging of detectron2 are installed into the venv.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"

# ---- pinned versions: the only place they are set --------------------------
TORCH_VERSION="2.14.1"
TORCHVISION_VERSION="0.29.1"
DETECTRON2_FALLBACK="sal-detectron2==0.7.2"   # detectron2 main (2024), pure Python + _C for CPython 3.10
DEMO_CONFIG="configs/shapes/ttfnet_r18_demo.yaml"
# -----------------------------------------------------------------------------

PYTHON_BIN="${PYTHON:-python3}"
VENV="${CENTERX_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
STAMP="$VENV/.centerx-env"

log() { echo "[run.sh] $*"; }

env_fingerprint() {
  { echo "$TORCH_VERSION $TORCHVISION_VERSION $DETECTRON2_FALLBACK"; cat "$ROOT/setup.py"; } | sha256sum | cut -d' ' -f1
}

pip_quiet() {
  # pip's warnings about unreachable local index folders are noise here
  "$PY" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

setup_env() {
  local want; want="$(env_fingerprint)"
  if [ -x "$PY" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    return 0
  fi
  local t0=$SECONDS
  if ! "$PYTHON_BIN" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "centerX needs Python >= 3.10 ('$PYTHON_BIN' is $("$PYTHON_BIN" --version 2>&1)); set PYTHON=..." >&2
    exit 1
  fi
  if [ ! -x "$PY" ]; then
    if "$PYTHON_BIN" -c 'import detectron2' 2>/dev/null; then
      log "creating $VENV on top of $PYTHON_BIN's site-packages (its detectron2 is used as is)"
      "$PYTHON_BIN" -m venv --system-site-packages "$VENV"
    else
      log "creating $VENV"
      "$PYTHON_BIN" -m venv "$VENV"
    fi
  fi
  if "$PY" -c 'import torch, torchvision' 2>/dev/null; then
    log "torch $("$PY" -c 'import torch; print(torch.__version__)') already present"
  else
    log "installing torch==$TORCH_VERSION torchvision==$TORCHVISION_VERSION (large download on first run)"
    pip_quiet install -q "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
  fi
  # centerX and its dependencies first, the detectron2 repackaging last: it declares
  # requirements it does not need (numpy<2, black), and pip's resolver would print
  # an ERROR about them on every later install into the environment
  log "installing centerX (editable) with its dependencies and the dev/export/data extras"
  pip_quiet install -q "setuptools<81" wheel
  pip_quiet install -q --no-build-isolation -e "$ROOT[dev,export,data]"
  if "$PY" -c 'import detectron2' 2>/dev/null; then
    log "detectron2 $("$PY" -c 'import detectron2; print(detectron2.__version__)') already present: using it"
  else
    local site; site="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    log "detectron2 not found: installing the PyPI repackaging $DETECTRON2_FALLBACK into $site"
    pip_quiet install -q --no-deps --only-binary=:all: --python-version 3.10 --implementation cp \
      --upgrade --target "$site" "$DETECTRON2_FALLBACK"
  fi
  "$PY" -c 'import detectron2, torch, centerx' >/dev/null
  echo "$want" > "$STAMP"
  log "environment ready in $((SECONDS - t0)) s ($PY)"
}

has_config_arg() {
  for a in "$@"; do [ "$a" = "--config-file" ] && return 0; done
  return 1
}

# a config or an exported --model (which carries its own config) given
has_model_arg() {
  for a in "$@"; do [ "$a" = "--config-file" ] || [ "$a" = "--model" ] && return 0; done
  return 1
}

cmd="${1:-help}"
[ $# -gt 0 ] && shift
case "$cmd" in
  setup)
    setup_env ;;
  train)
    setup_env
    if has_config_arg "$@"; then set -- "$@"; else set -- --config-file "$DEMO_CONFIG" "$@"; fi
    t0=$SECONDS
    "$PY" train_net.py "$@"
    log "train finished in $((SECONDS - t0)) s" ;;
  eval)
    setup_env
    if has_config_arg "$@"; then set -- "$@"; else set -- --config-file "$DEMO_CONFIG" "$@"; fi
    "$PY" train_net.py --eval-only "$@" ;;
  test)
    setup_env
    # Each passed test's tmp_path is deleted when it ends (its checkpoints run to
    # hundreds of MB); a failed test's is kept, from the last run only. At its
    # peak the suite holds about 3 GB there.
    tmp_free_mb=$(df -Pm "${TMPDIR:-/tmp}" | awk 'NR==2 {print $4}')
    if [ "${tmp_free_mb:-0}" -lt 5000 ]; then
      log "warning: only ${tmp_free_mb} MB free under ${TMPDIR:-/tmp}; the suite needs about 3 GB there at its peak"
    fi
    # One worker per core, each test file on one worker (its module fixtures built once),
    # every worker on one thread (tests/conftest.py); the slowest 15 tests are listed.
    "$PY" -m pytest tests -n auto --dist loadfile --durations 15 \
      -o tmp_path_retention_policy=failed -o tmp_path_retention_count=1 "$@" ;;
  lint)
    setup_env
    "$PY" -m ruff check "$ROOT" "$@"
    "$PY" -m ruff format --check "$ROOT" ;;
  export)
    setup_env
    if has_config_arg "$@"; then set -- "$@"; else set -- --config-file "$DEMO_CONFIG" "$@"; fi
    "$PY" projects/speedup/export.py "$@" ;;
  check-data)
    setup_env
    if has_config_arg "$@"; then set -- "$@"; else set -- --config-file "$DEMO_CONFIG" "$@"; fi
    "$PY" projects/data/check_data.py "$@" ;;
  benchmark)
    setup_env
    if has_config_arg "$@"; then set -- "$@"; else set -- --config-file "$DEMO_CONFIG" "$@"; fi
    "$PY" projects/speedup/benchmark.py "$@" ;;
  gpu-check)
    setup_env
    "$PY" projects/benchmarks/gpu_check.py "$@" ;;
  predict|demo)
    setup_env
    if has_model_arg "$@"; then set -- "$@"; else set -- --config-file "$DEMO_CONFIG" "$@"; fi
    "$PY" projects/demo/predict.py "$@" ;;
  evaluate)
    setup_env
    if has_model_arg "$@"; then set -- "$@"; else set -- --config-file "$DEMO_CONFIG" "$@"; fi
    "$PY" projects/speedup/evaluate.py "$@" ;;
  help|-h|--help)
    sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'
    if [ -x "$PY" ]; then  # the registered export formats and runtimes, once the environment exists
      "$PY" -c "from centerx.deploy.exporters import exporter_formats
from centerx.deploy.runtimes import runtime_names
print('export formats (--format):', ' '.join(exporter_formats()))
print('runtimes (--runtime):', ' '.join(runtime_names()))" 2>/dev/null || true
    fi ;;
  *)
    echo "unknown subcommand '$cmd'; see ./run.sh help" >&2
    exit 2 ;;
esac
