#!/usr/bin/env python
"""Train or evaluate centerX models with detectron2's trainer and launcher.

    python train_net.py --config-file configs/shapes/centernet_r18_demo.yaml
    python train_net.py --config-file ... --eval-only MODEL.WEIGHTS out/model_final.pth
    python train_net.py --config-file ... --resume
    python train_net.py --config-file ... --num-gpus 8 SOLVER.IMS_PER_BATCH 64

Trailing ``KEY VALUE`` pairs override the config (detectron2's usual syntax).
"""

from detectron2.config import get_cfg
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

import centerx  # (registers everything)
from centerx.data.datasets import ensure_datasets
from centerx.data.validation import validate_datasets
from centerx.engine import Trainer, load_weights_for_eval


def load_config(args):
    """Config file + ``KEY VALUE`` overrides, checked (centerx.check_config)."""
    flags = [o for o in args.opts if isinstance(o, str) and o.startswith("--")]
    if flags:
        raise SystemExit(f"{' '.join(flags)} came after the KEY VALUE overrides, where it reads as a config key: put "
                         f"flags first, e.g. train_net.py --config-file FILE {' '.join(flags)} KEY VALUE ...")
    cfg = centerx.add_centerx_config(get_cfg())
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    centerx.check_config(cfg, training=not args.eval_only, world_size=args.num_gpus * args.num_machines)
    return cfg


def setup(args):
    """Config from file + command line, with centerX's keys and datasets registered."""
    cfg = load_config(args)
    cfg.freeze()
    centerx.register_config_datasets(cfg)
    default_setup(cfg, args)
    setup_centerx_logger(cfg.OUTPUT_DIR, comm.get_rank())
    return cfg


def setup_centerx_logger(output_dir: str, rank: int):
    """The "centerx" logger: console (rank 0) and OUTPUT_DIR/log.txt. detectron2's
    setup_logger is cached by its arguments, so ``prepare`` and ``setup`` in one
    process share one set of handlers (each line printed once)."""
    return setup_logger(output_dir, distributed_rank=rank, name="centerx")


def main(args):
    cfg = setup(args)
    validate_datasets(cfg)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        load_weights_for_eval(cfg, model, cfg.MODEL.WEIGHTS, resume=args.resume,
                              allow_random=args.allow_random_weights)
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def prepare(args):
    """Once, before the workers start: check the config, generate built-in datasets it uses."""
    cfg = load_config(args)
    setup_centerx_logger(cfg.OUTPUT_DIR, 0)
    ensure_datasets(list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST))


def argument_parser():
    """detectron2's default parser, plus --allow-random-weights for --eval-only."""
    parser = default_argument_parser()
    parser.add_argument("--allow-random-weights", action="store_true",
                        help="with --eval-only: evaluate a randomly initialised model when MODEL.WEIGHTS is empty "
                             "(refused otherwise)")
    return parser


if __name__ == "__main__":
    args = argument_parser().parse_args()
    print("Command Line Args:", args)
    prepare(args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
