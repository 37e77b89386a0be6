"""Register every dataset a config lists (``DATASETS.COCO_JSON``, ``PASCAL_VOC``,
``YOLO``, ``IMAGE_FOLDERS``); what train_net.py and the scripts call once the
config is read."""
from .builtin import register_coco_json_datasets
from .image_folder import register_image_folders
from .voc_yolo import register_voc_datasets, register_yolo_datasets

__all__ = ["register_config_datasets"]


def register_config_datasets(cfg) -> None:
    """Register the user datasets of ``cfg`` (harmless when already registered)."""
    register_coco_json_datasets(cfg.DATASETS.COCO_JSON)
    register_voc_datasets(cfg.DATASETS.PASCAL_VOC)
    register_yolo_datasets(cfg.DATASETS.YOLO)
    register_image_folders(cfg.DATASETS.IMAGE_FOLDERS)
