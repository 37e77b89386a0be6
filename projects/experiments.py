"""What the experiment scripts of ``projects/`` share: shapes demo configs with a
rescaled schedule, dataset subsets and class splits of shapes, training and COCO
evaluation with results kept per run (and reused when the config is the same),
several seeds per setting, and markdown tables with mean +- standard deviation.

A script of ``projects/<folder>/`` imports it after putting ``projects/`` on its path::

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from experiments import run_cached  # noqa: E402

It is part of the repository, not of the installed package: it reads the demo
configs under ``configs/``.
"""

import argparse
import json
import logging
import os
import statistics
import time
from collections.abc import Sequence

import yaml
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.utils.logger import setup_logger

from centerx.config import get_centerx_cfg
from centerx.data.datasets import ensure_datasets, register_config_datasets
from centerx.engine import Trainer

logger = logging.getLogger(__name__)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES_CONFIGS = os.path.join(REPO, "configs", "shapes")
# per detector: (shapes demo config of its R18, meta-architecture)
ARCHS = {
    "centernet": (os.path.join(SHAPES_CONFIGS, "centernet_r18_demo.yaml"), "CenterNet"),
    "ttfnet": (os.path.join(SHAPES_CONFIGS, "ttfnet_r18_demo.yaml"), "TTFNet"),
}
RESULT_FILE = "result.json"


def add_common_args(parser: argparse.ArgumentParser, default_arch: str = "ttfnet", default_iters: int = 400) -> None:
    """Flags every experiment script takes."""
    parser.add_argument("--arch", choices=sorted(ARCHS), default=default_arch, help="detector of every model")
    parser.add_argument("--iters", type=int, default=default_iters, help="training iterations of each model")
    parser.add_argument("--train-images", type=int, default=0, help="use only the first N training images (0: all)")
    parser.add_argument("--test-images", type=int, default=0, help="evaluate on the first N test images (0: all)")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[1],
        help="train every compared model once per seed (SEED: data order, augmentation and "
        "initial weights); tables give mean +- std over them",
    )
    parser.add_argument("--rerun", action="store_true", help="retrain runs that have saved results")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides for every model")


def prepare_shapes(args) -> tuple[str, str]:
    """Set up logging, generate shapes if needed and register the ``--train-images`` /
    ``--test-images`` subsets. Returns (train dataset name, test dataset name)."""
    setup_logger(name="centerx")
    setup_logger(name="detectron2")
    ensure_datasets(["shapes_train", "shapes_val"])
    return subset_dataset("shapes_train", args.train_images), subset_dataset("shapes_val", args.test_images)


def subset_dataset(name: str, num_images: int) -> str:
    """Register the first ``num_images`` images of ``name`` under a new name (0: ``name`` itself)."""
    if num_images <= 0:
        return name
    new = f"{name}_first{num_images}"
    if new not in DatasetCatalog.list():
        DatasetCatalog.register(new, lambda: DatasetCatalog.get(name)[:num_images])
        MetadataCatalog.get(new).set(thing_classes=list(MetadataCatalog.get(name).thing_classes), evaluator_type="coco")
    return new


def class_split_dataset(name: str, classes: Sequence[str], part: tuple[int, int] = (0, 1)) -> str:
    """A singly-labelled dataset cut from ``name``: part ``k`` of ``n`` equal
    slices of its images, keeping only the annotations of ``classes``
    (renumbered 0..len-1 in that order). Objects of other classes stay in the
    images, unlabelled, as in a dataset labelled for other purposes.

    Returns:
        the new dataset's name; its metadata has ``thing_classes = classes``.
    """
    k, n = part
    new = f"{name}_{'_'.join(classes)}_part{k}of{n}"
    if new in DatasetCatalog.list():
        return new
    source = list(MetadataCatalog.get(name).thing_classes)
    remap = {source.index(c): i for i, c in enumerate(classes)}

    def load():
        dicts = DatasetCatalog.get(name)
        size = len(dicts) // n
        out = []
        for d in dicts[k * size : (k + 1) * size if k < n - 1 else len(dicts)]:
            annos = [
                dict(a, category_id=remap[a["category_id"]]) for a in d["annotations"] if a["category_id"] in remap
            ]
            out.append(dict(d, annotations=annos))
        return out

    DatasetCatalog.register(new, load)
    MetadataCatalog.get(new).set(thing_classes=list(classes), evaluator_type="coco")
    return new


def demo_config(args) -> str:
    """The R18 shapes demo config of ``--arch``."""
    return ARCHS[args.arch][0]


def num_classes_key(args) -> str:
    """NUM_CLASSES of the ``--arch`` detector's own config node."""
    return META_ARCH_REGISTRY.get(ARCHS[args.arch][1]).config_prefix + ".NUM_CLASSES"


def distill_overrides(args, teachers: Sequence, use_labels: bool) -> list:
    """Config overrides that turn the ``--arch`` demo config into a Distiller of it."""
    return [
        "MODEL.META_ARCHITECTURE",
        "Distiller",
        "MODEL.DISTILL.STUDENT_META_ARCHITECTURE",
        ARCHS[args.arch][1],
        "MODEL.DISTILL.TEACHERS",
        list(teachers),
        "MODEL.DISTILL.USE_LABELS",
        use_labels,
    ]


def balanced_distill_overrides(num_teachers: int) -> list:
    """Config overrides that switch MODEL.LOSS_BALANCE on for a Distiller: every
    label term at its default magnitude and every teacher's term
    (``loss_kd_t<i>_<head>``) at the magnitude of the label term it mirrors, so
    no distillation weight is tuned by hand."""
    labels = [tuple(pair) for pair in get_centerx_cfg().MODEL.LOSS_BALANCE.MAGNITUDES]
    teachers = [(f"loss_kd_t{i}_{name[len('loss_') :]}", c) for i in range(num_teachers) for name, c in labels]
    return ["MODEL.LOSS_BALANCE.ENABLED", True, "MODEL.LOSS_BALANCE.MAGNITUDES", labels + teachers]


def experiment_cfg(
    config_file: str,
    args,
    output_dir: str,
    train: Sequence[str],
    test: Sequence[str],
    extra: list | None = None,
    iters: int | None = None,
    seed: int | None = None,
):
    """``config_file`` with the demo's schedule rescaled to ``iters`` (default
    ``args.iters``; lr steps at the same fractions, warm-up likewise), the given
    datasets, SEED ``seed`` (default the first of ``args.seeds``), the user's
    overrides, then ``extra`` (the experiment's own settings, last)."""
    iters = iters or args.iters
    cfg = get_centerx_cfg()
    cfg.merge_from_file(config_file)
    scale = iters / cfg.SOLVER.MAX_ITER
    cfg.merge_from_list(
        [
            "SOLVER.MAX_ITER",
            iters,
            "SOLVER.STEPS",
            tuple(sorted({min(iters - 1, max(1, round(s * scale))) for s in cfg.SOLVER.STEPS})),
            "SOLVER.WARMUP_ITERS",
            round(cfg.SOLVER.WARMUP_ITERS * scale),
            "SOLVER.CHECKPOINT_PERIOD",
            iters,
            "TEST.EVAL_PERIOD",
            0,
            "DATASETS.TRAIN",
            tuple(train),
            "DATASETS.TEST",
            tuple(test),
            "OUTPUT_DIR",
            output_dir,
            "SEED",
            args.seeds[0] if seed is None else seed,
        ]
    )
    cfg.merge_from_list(args.opts)
    cfg.merge_from_list(extra or [])
    cfg.freeze()
    return cfg


def seed_dir(directory: str, seed: int) -> str:
    """Output folder of one seed of a setting."""
    return os.path.join(directory, f"seed{seed}")


def train_and_evaluate(cfg) -> tuple[dict[str, float], float]:
    """Train from scratch, evaluate on DATASETS.TEST once at the end.

    Writes ``config.yaml`` (the full config, usable as a teacher config) next to
    the checkpoints, and ``total_loss.csv`` (iteration, total loss as logged, and
    the sum of the unscaled terms under MODEL.LOSS_BALANCE); "final_loss" is the
    median of the last 20 of the latter.
    Returns ({"AP", "AP50", "AP-<class>", ..., "final_loss", "iterations"},
    training wall time in s); without the AP keys if training diverged
    (non-finite loss); AP 0.0 and "no_detections" if the model detects nothing.
    """

    register_config_datasets(cfg)
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    with open(os.path.join(cfg.OUTPUT_DIR, "config.yaml"), "w") as f:
        f.write(cfg.dump())
    start = time.perf_counter()
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    diverged = False
    try:
        trainer.train()
    except FloatingPointError:
        diverged = True
    elapsed = time.perf_counter() - start
    histories = trainer.storage.histories()
    losses = histories["total_loss"].values() if "total_loss" in histories else []
    # with MODEL.LOSS_BALANCE the total is constant; the sum of the unscaled terms is the real loss
    unscaled = [histories[k].values() for k in sorted(histories) if k.endswith("_unscaled")]
    real = [(sum(terms[i][0] for terms in unscaled), it) for i, (_, it) in enumerate(losses)] if unscaled else losses
    with open(os.path.join(cfg.OUTPUT_DIR, "total_loss.csv"), "w") as f:
        f.write("iteration,total_loss,unscaled_total_loss\n")
        f.write("".join(f"{it},{v:.6g},{r:.6g}\n" for (v, it), (r, _) in zip(losses, real)))
    last = sorted(v for v, _ in real[-20:])
    metrics = {"final_loss": last[len(last) // 2] if last else float("nan"), "iterations": trainer.iter}
    if not diverged:
        metrics.update({k[len("bbox/") :]: v.latest() for k, v in histories.items() if k.startswith("bbox/")})
    return no_detections_as_zero(metrics), elapsed


def no_detections_as_zero(metrics: dict[str, float]) -> dict[str, float]:
    """A model that finished training but detects nothing (a collapsed heatmap)
    gets NaN for every AP from detectron2's COCOEvaluator, which would turn every
    mean it enters into NaN. Its COCO AP is 0 (no detection, no recall): record
    0.0 and ``"no_detections": True`` instead. Diverged runs (no AP keys) and
    runs with detections are returned unchanged."""
    if "AP" not in metrics or metrics["AP"] == metrics["AP"]:
        return metrics
    zeroed = {k: 0.0 if k.startswith("AP") and v != v else v for k, v in metrics.items()}
    return dict(zeroed, no_detections=True)


def run_cached(cfg, rerun: bool = False) -> dict[str, float]:
    """:func:`train_and_evaluate` unless ``cfg.OUTPUT_DIR`` already holds the
    result of the same config (then read back; another config there is refused
    with the keys that differ). Returns the metrics plus ``train_s``."""
    path = os.path.join(cfg.OUTPUT_DIR, RESULT_FILE)
    if os.path.exists(path) and not rerun:
        check_same_config(cfg)
        with open(path) as f:
            return no_detections_as_zero(json.load(f))
    metrics, seconds = train_and_evaluate(cfg)
    result = dict(metrics, train_s=seconds)
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    return result


def check_same_config(cfg) -> None:
    """Refuse saved results that were trained with another config than ``cfg``
    (the ``config.yaml`` in its OUTPUT_DIR), naming the keys that differ. A key
    the saved config lacks (added to centerX since) counts as equal when ``cfg``
    holds its default; EXPORT keys are not compared (training and evaluation
    do not read them), nor OUTPUT_DIR (a results folder may be copied or moved:
    the teachers of one experiment reused by another)."""
    with open(os.path.join(cfg.OUTPUT_DIR, "config.yaml")) as f:
        saved = flatten(yaml.safe_load(f))
    now = flatten(yaml.safe_load(cfg.dump()))
    defaults = flatten(yaml.safe_load(get_centerx_cfg().dump()))
    differ = sorted(
        k
        for k in saved.keys() | now.keys()
        if saved.get(k) != now.get(k)
        and _compared(k)
        and not (k not in saved and k in defaults and now.get(k) == defaults[k])
    )
    if differ:
        shown = ", ".join(f"{k}: {saved.get(k)!r} saved vs {now.get(k)!r} now" for k in differ[:5])
        raise SystemExit(
            f"{cfg.OUTPUT_DIR} holds results of another config ({len(differ)} keys differ: {shown}). "
            "Pass the same options as when it was trained, --rerun to retrain, or another "
            "--output-dir."
        )


def _compared(key: str) -> bool:
    """Whether :func:`check_same_config` compares this flattened config key."""
    return not key.startswith("EXPORT.") and key != "OUTPUT_DIR"


def flatten(tree, prefix=""):
    """{"A.B": value} of a nested dict."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def mean_std(values: Sequence[float | None]) -> str | None:
    """ "m +- s (n)" of the values that are not None (sample standard deviation;
    a single value is shown alone); None when there is none."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    if len(vals) == 1:
        return f"{vals[0]:.1f}"
    missing = f", {len(values) - len(vals)} diverged" if len(vals) < len(values) else ""
    return f"{statistics.mean(vals):.1f} ± {statistics.stdev(vals):.1f} (n={len(vals)}{missing})"


def format_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """Markdown table; floats with one decimal, None as "-"."""

    def cell(v):
        if v is None:
            return "-"
        return f"{v:.1f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _print_and_save(text: str, output: str = "") -> None:
    """Print ``text``; write it to the file ``output`` too when given."""
    print(text, end="")
    if output:
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        with open(output, "w") as f:
            f.write(text)


def report(title: str, table: str, output: str = "") -> None:
    """Print ``title``, a blank line and ``table``; write the same to the file
    ``output`` when given (the benchmark scripts' tables)."""
    _print_and_save(f"{title}\n\n{table}\n", output)


def write_table(output_dir: str, table: str) -> None:
    """Print ``table`` and write it to ``output_dir``/table.md (the experiment scripts' tables)."""
    _print_and_save(table + "\n", os.path.join(output_dir, "table.md"))
