from .trainer import Trainer, build_optimizer, build_train_mapper

__all__ = ["Trainer", "build_optimizer", "build_train_mapper"]
