#!/usr/bin/env python
"""Train or evaluate centerX models with detectron2's trainer and launcher.

    python train_net.py --config-file configs/shapes/centernet_r18_demo.yaml
    python train_net.py --config-file ... --eval-only MODEL.WEIGHTS out/model_final.pth
    python train_net.py --config-file ... --resume
    python train_net.py --config-file ... --num-gpus 8 SOLVER.IMS_PER_BATCH 64

Trailing ``KEY VALUE`` pairs override the config (detectron2's usual syntax).
"""
import os
import sys

from detectron2.config import get_cfg
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import centerx  # noqa: E402  (registers everything)
from centerx.data.datasets import ensure_datasets  # noqa: E402
from centerx.engine import Trainer, load_weights_for_eval  # noqa: E402


def setup(args):
    """Config from file + command line, with centerX's keys and datasets registered."""
    cfg = centerx.add_centerx_config(get_cfg())
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    centerx.register_coco_json_datasets(cfg.DATASETS.COCO_JSON)
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
    if args.eval_only:
        model = Trainer.build_model(cfg)
        load_weights_for_eval(cfg, model, cfg.MODEL.WEIGHTS, resume=args.resume)
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def prepare(args):
    """Once, before the workers start: generate built-in datasets the config uses."""
    cfg = centerx.add_centerx_config(get_cfg())
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    setup_centerx_logger(cfg.OUTPUT_DIR, 0)
    ensure_datasets(list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST))


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
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
