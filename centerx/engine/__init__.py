from .adversarial import DiscriminatorStep, build_discriminator_optimizer
from .checkpoint import AtomicCheckpointer
from .ema import EMAHook, ModelEMA, load_ema_weights, load_weights_for_eval
from .predictor import Predictor
from .train_loader import build_train_mapper
from .trainer import Trainer, build_optimizer
from .visualization import PredictionImages, draw_detections

__all__ = [
    "AtomicCheckpointer",
    "DiscriminatorStep",
    "EMAHook",
    "ModelEMA",
    "load_ema_weights",
    "Trainer",
    "build_discriminator_optimizer",
    "build_optimizer",
    "build_train_mapper",
    "load_weights_for_eval",
    "PredictionImages",
    "Predictor",
    "draw_detections",
]
