from .mapper import CenterNetDatasetMapper, build_centernet_train_augmentations

__all__ = ["CenterNetDatasetMapper", "build_centernet_train_augmentations"]
