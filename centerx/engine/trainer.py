"""detectron2 ``DefaultTrainer`` with the mapper, evaluator and optimizer chosen by config."""
import os

import torch
from detectron2.data import DatasetMapper, build_detection_train_loader
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import COCOEvaluator
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping

from ..data import CenterNetDatasetMapper

TRAIN_MAPPERS = ("centernet", "default")
EVALUATORS = ("coco", "none")
OPTIMIZERS = ("SGD", "ADAM", "ADAMW")


def _check_choice(key: str, value: str, choices) -> None:
    if value not in choices:
        raise ValueError(f"{key}='{value}' is not one of {choices}.")


def build_train_mapper(cfg):
    """The training mapper named by ``DATALOADER.TRAIN_MAPPER``."""
    _check_choice("DATALOADER.TRAIN_MAPPER", cfg.DATALOADER.TRAIN_MAPPER, TRAIN_MAPPERS)
    if cfg.DATALOADER.TRAIN_MAPPER == "centernet":
        return CenterNetDatasetMapper(cfg)
    return DatasetMapper(cfg, is_train=True)


def build_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    """SGD (detectron2's own), Adam or AdamW as ``SOLVER.OPTIMIZER`` says, with
    detectron2's per-parameter weight-decay / lr rules and gradient clipping."""
    name = cfg.SOLVER.OPTIMIZER.upper()
    _check_choice("SOLVER.OPTIMIZER", name, OPTIMIZERS)
    if name == "SGD":
        return DefaultTrainer.build_optimizer(cfg, model)
    params = get_default_optimizer_params(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
        weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
    )
    opt = torch.optim.Adam if name == "ADAM" else torch.optim.AdamW
    return maybe_add_gradient_clipping(cfg, opt(params, lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY))


class Trainer(DefaultTrainer):
    """``DefaultTrainer`` whose train mapper (DATALOADER.TRAIN_MAPPER), evaluator
    (TEST.EVALUATOR) and optimizer (SOLVER.OPTIMIZER) come from the config."""

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=build_train_mapper(cfg))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        _check_choice("TEST.EVALUATOR", cfg.TEST.EVALUATOR, EVALUATORS)
        if cfg.TEST.EVALUATOR == "none":
            raise NotImplementedError("TEST.EVALUATOR is 'none'")
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
        return COCOEvaluator(dataset_name, output_dir=output_folder)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)
