#!/usr/bin/env python
"""Train or evaluate centerX models with detectron2's trainer and launcher.

    python train_net.py --config-file configs/shapes/centernet_r18_demo.yaml
    python train_net.py --config-file ... --eval-only MODEL.WEIGHTS out/model_final.pth
    python train_net.py --config-file ... --resume
    python train_net.py --config-file ... --overwrite      # start over in a folder that holds a run
    python train_net.py --config-file ... --num-gpus 8 SOLVER.IMS_PER_BATCH 64

Trailing ``KEY VALUE`` pairs override the config (detectron2's usual syntax).
(``./run.sh train`` / ``./run.sh eval`` run this with the project's environment.)

Run folders belong to the run that trained in them: training into an
OUTPUT_DIR that already holds checkpoints stops, naming them, unless
``--resume`` (continue that run) or ``--overwrite`` (start over) is given, and
``--eval-only`` writes its config, log and results under OUTPUT_DIR/eval, never
over the training run's ``config.yaml``.

The console shows a summary of the run, one progress line every 20 iterations
(ETA, losses, learning rate, images/s), the evaluation results and every
warning; the environment, the full config and everything else go to
OUTPUT_DIR/log.txt (``--verbose`` puts it all on the console too). A run leaves
results.csv, plots/, model_best.pth and model_final_weights.pth (weights only)
beside detectron2's checkpoints.
"""

import glob
import logging
import math
import os
import warnings

# detectron2 scripts functions at import; torch >= 2.10 warns about it on every run
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

import centerx  # (registers everything)
from centerx.checkpoint import WEIGHTS_ERRORS
from centerx.config import exit_on_config_error, load_config
from centerx.console import on_screen, quiet_console
from centerx.data.datasets import ensure_datasets
from centerx.data.validation import DatasetError, validate_datasets
from centerx.engine import Trainer, load_weights_for_eval
from centerx.plugins import PluginImportError, add_imports_argument

EVAL_SUBDIR = "eval"


def load_run_config(args):
    """The user's modules (``--import``, the config's IMPORTS) imported, then the
    config file + ``KEY VALUE`` overrides, checked (centerx.check_config); with
    ``--eval-only``, OUTPUT_DIR becomes OUTPUT_DIR/eval (the run's folder is only read)."""
    try:
        cfg = load_config(args.config_file, args.opts, args.imports)
    except PluginImportError as e:
        raise SystemExit(str(e)) from None
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"--config-file {args.config_file}: {e}") from None
    try:
        centerx.check_config(cfg, training=not args.eval_only, world_size=args.num_gpus * args.num_machines)
    except ValueError as e:  # a value that cannot work: the message names the key and one that does
        raise SystemExit(str(e)) from None
    if args.eval_only:  # an evaluation writes beside the run it evaluates, never over it
        cfg.OUTPUT_DIR = os.path.join(cfg.OUTPUT_DIR, EVAL_SUBDIR)
    return cfg


def run_checkpoints(output_dir: str):
    """The files of a training run in ``output_dir`` that a new run would overwrite."""
    found = sorted(glob.glob(os.path.join(output_dir, "model_*.pth")))
    tag = os.path.join(output_dir, "last_checkpoint")
    return found + ([tag] if os.path.isfile(tag) else [])


def check_output_dir(cfg, args) -> None:
    """Stop a training run that would overwrite another run's checkpoints."""
    if args.eval_only or args.resume or args.overwrite:
        return
    existing = run_checkpoints(cfg.OUTPUT_DIR)
    if existing:
        shown = ", ".join(os.path.basename(f) for f in existing[:4]) + (" ..." if len(existing) > 4 else "")
        raise SystemExit(
            f"OUTPUT_DIR {cfg.OUTPUT_DIR} already holds a training run ({shown}); a new run would "
            "overwrite it. Pass --resume to continue that run, --overwrite to start over in it, or "
            "choose another folder: OUTPUT_DIR path/to/new_run."
        )


def setup(args):
    """Config from file + command line, with centerX's keys and datasets registered.
    With ``--eval-only``, OUTPUT_DIR becomes OUTPUT_DIR/eval (the training run's
    folder is only read: its last checkpoint with ``--resume``)."""
    cfg = load_run_config(args)
    cfg.freeze()
    centerx.register_config_datasets(cfg)
    rank = comm.get_rank()
    if not args.verbose:
        # the loggers default_setup prints to, made first (setup_logger is cached by its arguments)
        setup_logger(cfg.OUTPUT_DIR, distributed_rank=rank, name="fvcore")
        setup_logger(cfg.OUTPUT_DIR, distributed_rank=rank)
        setup_centerx_logger(cfg.OUTPUT_DIR, rank)
        quiet_console()
        # collect_env imports torch's C++ extension builder, which warns that CUDA is absent on a CPU machine
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    default_setup(cfg, args)
    setup_centerx_logger(cfg.OUTPUT_DIR, rank)
    return cfg


def describe_run(cfg, args) -> str:
    """The one-line summary of a run the console starts with."""
    if args.eval_only:
        what = f"Evaluating {cfg.MODEL.META_ARCHITECTURE} on {', '.join(cfg.DATASETS.TEST)}"
    else:
        evaluation = (
            f"every {cfg.TEST.EVAL_PERIOD} iterations and at the end" if cfg.TEST.EVAL_PERIOD > 0 else "at the end"
        )
        length = f"{cfg.SOLVER.EPOCHS:g} epochs" if cfg.SOLVER.EPOCHS > 0 else f"{cfg.SOLVER.MAX_ITER} iterations"
        what = (
            f"Training {cfg.MODEL.META_ARCHITECTURE} on {', '.join(cfg.DATASETS.TRAIN)}: "
            f"{length} of batch {cfg.SOLVER.IMS_PER_BATCH} at {cfg.INPUT.TRAIN_SIZE} px, "
            f"{cfg.SOLVER.OPTIMIZER} lr {cfg.SOLVER.BASE_LR:g}, {cfg.MODEL.DEVICE}"
            f"{' mixed precision' if cfg.SOLVER.AMP.ENABLED else ''}"
        )
        if len(cfg.DATASETS.TEST):
            what += f"; evaluated on {', '.join(cfg.DATASETS.TEST)} {evaluation}"
    return f"{what}. Output: {cfg.OUTPUT_DIR} (log.txt has the environment and the full config)."


def setup_centerx_logger(output_dir: str, rank: int):
    """The "centerx" logger: console (rank 0) and OUTPUT_DIR/log.txt. detectron2's
    setup_logger is cached by its arguments, so ``prepare`` and ``setup`` in one
    process share one set of handlers (each line printed once)."""
    return setup_logger(output_dir, distributed_rank=rank, name="centerx")


def weights_error(cfg, error: Exception) -> str:
    """One line for a weights file that cannot be loaded, naming its key once: the
    message's own (MODEL.WEIGHTS, MODEL.TIMM.WEIGHTS, ...) or else MODEL.WEIGHTS."""
    return str(error) if str(error).startswith("MODEL.") else f"MODEL.WEIGHTS {cfg.MODEL.WEIGHTS!r}: {error}"


@exit_on_config_error
def main(args):
    cfg = setup(args)
    on_screen(logging.getLogger("centerx"), describe_run(cfg, args))
    try:  # only the sets it evaluates with --eval-only
        validate_datasets(cfg, names=list(dict.fromkeys(cfg.DATASETS.TEST)) if args.eval_only else None)
    except DatasetError as e:  # the data, not the code: the message says what to fix, no traceback
        raise SystemExit(str(e)) from None
    if args.eval_only:
        try:  # a backbone's weights file (MODEL.TIMM.WEIGHTS, ...) is read as the model is built
            model = Trainer.build_model(cfg)
            load_weights_for_eval(
                cfg,
                model,
                cfg.MODEL.WEIGHTS,
                resume=args.resume,
                allow_random=args.allow_random_weights,
                run_dir=os.path.dirname(cfg.OUTPUT_DIR),
            )
        except WEIGHTS_ERRORS as e:
            raise SystemExit(weights_error(cfg, e)) from None
        return Trainer.test(cfg, model)
    cfg = iterations_from_epochs(cfg)
    save_run_config(cfg)
    try:
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=args.resume)
    except WEIGHTS_ERRORS as e:
        raise SystemExit(weights_error(cfg, e)) from None
    return trainer.train()


def iterations_from_epochs(cfg):
    """With SOLVER.EPOCHS > 0, the config with SOLVER.MAX_ITER = ceil(EPOCHS x the
    training sets' images / IMS_PER_BATCH) (the same in every process: each counts
    the registered dataset dicts); else ``cfg`` as it is."""
    if cfg.SOLVER.EPOCHS <= 0:
        return cfg
    images = sum(len(DatasetCatalog.get(name)) for name in cfg.DATASETS.TRAIN)
    iterations = max(1, math.ceil(cfg.SOLVER.EPOCHS * images / cfg.SOLVER.IMS_PER_BATCH))
    on_screen(
        logging.getLogger("centerx"),
        f"SOLVER.EPOCHS {cfg.SOLVER.EPOCHS:g} over {images} training images at batch "
        f"{cfg.SOLVER.IMS_PER_BATCH}: SOLVER.MAX_ITER {iterations}.",
    )
    cfg = cfg.clone()
    cfg.defrost()
    cfg.SOLVER.MAX_ITER = iterations
    cfg.freeze()
    return cfg


def save_run_config(cfg) -> None:
    """Write the run's ``config.yaml`` again (main process) as the run trains it:
    SOLVER.MAX_ITER as resolved from SOLVER.EPOCHS, and MODEL.CENTERX.CLASS_NAMES
    set to the training set's class names when the config leaves it empty, so that
    the run's config alone names the classes for predict, export and eval later,
    even where the dataset is gone."""
    if not comm.is_main_process():
        return
    saved = cfg.clone()
    saved.defrost()
    names = MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).get("thing_classes") if len(cfg.DATASETS.TRAIN) else None
    if names and not len(cfg.MODEL.CENTERX.CLASS_NAMES):
        saved.MODEL.CENTERX.CLASS_NAMES = tuple(names)
    path = os.path.join(cfg.OUTPUT_DIR, "config.yaml")
    with open(path + ".tmp", "w") as f:
        f.write(saved.dump())
    os.replace(path + ".tmp", path)


def prepare(args):
    """Once, before the workers start: check the config, generate built-in datasets it uses."""
    cfg = load_run_config(args)
    check_output_dir(cfg, args)
    setup_centerx_logger(cfg.OUTPUT_DIR, 0)
    if args.resume and not args.eval_only and not os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint")):
        logging.getLogger("centerx").warning(
            f"--resume: OUTPUT_DIR {cfg.OUTPUT_DIR} holds no checkpoint (no last_checkpoint file), so the run "
            "starts at iteration 0 from MODEL.WEIGHTS; to continue a run, give its OUTPUT_DIR."
        )
    ensure_datasets(list(cfg.DATASETS.TEST) if args.eval_only else list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST))


def argument_parser():
    """detectron2's default parser, plus --allow-random-weights for --eval-only."""
    parser = default_argument_parser()
    add_imports_argument(parser)
    parser.add_argument(
        "--allow-random-weights",
        action="store_true",
        help="with --eval-only: evaluate a randomly initialised model when MODEL.WEIGHTS is empty (refused otherwise)",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="print everything detectron2 logs (environment, full config, metric lines) on the "
        "console too, not only in OUTPUT_DIR/log.txt",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="train into an OUTPUT_DIR that holds another run's checkpoints, starting over "
        "(refused otherwise; --resume continues that run instead)",
    )
    return parser


if __name__ == "__main__":
    args = argument_parser().parse_args()
    prepare(args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
