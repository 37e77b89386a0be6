from .mapper import CenterNetDatasetMapper, build_centernet_train_augmentations, centernet_train_augmentations
from .mixup import Mixup, mix_samples

__all__ = [
    "CenterNetDatasetMapper",
    "build_centernet_train_augmentations",
    "centernet_train_augmentations",
    "Mixup",
    "mix_samples",
]
