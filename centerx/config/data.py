"""The keys of the data pipeline: input sizes and augmentation (INPUT), the
datasets a config names (DATASETS) and the loader's sampling (DATALOADER). The
code that reads them is in centerx.data."""

from detectron2.config import CfgNode as CN

__all__ = ["add_dataloader_config", "add_datasets_config", "add_input_config"]


def add_input_config(cfg):
    """Training input and augmentation keys (INPUT.*, INPUT.MIXUP).

    Part of :func:`centerx.add_centerx_config`; the comment above each key is its
    documentation (docs/config.md is generated from it)."""
    _C = cfg

    # ------------------------------------------------------------------- input
    # Square side (input pixels) of every training image after augmentation.
    _C.INPUT.TRAIN_SIZE = 512
    # Multi-scale ("random shapes") training: square sides (input pixels,
    # positive multiples of 32) to draw from, one per iteration, shared by all
    # images of the batch on all processes and drawn from (SEED, iteration), so
    # --resume continues the same sequence, e.g. (320, 384, 448, 512, 576, 640).
    # Empty = TRAIN_SIZE always. Needs DATALOADER.TRAIN_MAPPER "centernet" and
    # SAMPLER_TRAIN "ResumableTrainingSampler".
    _C.INPUT.TRAIN_SIZES = ()
    # Random scale range of the training resize, relative to fitting the
    # longer image side to TRAIN_SIZE; a TRAIN_SIZE crop is then taken (padded
    # with the pixel mean where the image is smaller).
    _C.INPUT.SCALE_RANGE = (0.6, 1.4)
    # Probability of a horizontal flip during training.
    _C.INPUT.HFLIP_PROB = 0.5
    # Strength of the random brightness / contrast / saturation jitter
    # (factor drawn from [1 - s, 1 + s]); 0 disables it.
    _C.INPUT.COLOR_JITTER = 0.4
    # Boxes narrower or lower than this (input pixels) after augmentation and
    # clipping are dropped (and counted in the log).
    _C.INPUT.MIN_BOX_SIZE = 2.0
    # Mixup for detection ("Bag of Freebies for Training Object Detection"):
    # a training image is blended with a second one, lam * a + (1 - lam) * b,
    # both box sets kept, each object's losses weighted by its image's share
    # (lam or 1 - lam). Drawn from (SEED, stream position), so --resume
    # continues exactly. Needs DATALOADER.TRAIN_MAPPER "centernet" and
    # SAMPLER_TRAIN "ResumableTrainingSampler"; works for CenterNet, TTFNet and
    # a Distiller's student.
    _C.INPUT.MIXUP = CN()
    # Blend training images as described above.
    _C.INPUT.MIXUP.ENABLED = False
    # Probability that a training image is mixed with a second one.
    _C.INPUT.MIXUP.PROB = 0.5
    # lam ~ Beta(ALPHA, ALPHA) (1.5 as in the paper).
    _C.INPUT.MIXUP.ALPHA = 1.5
    # No mixup in the last OFF_LAST_ITERS iterations of SOLVER.MAX_ITER
    # (training ends on plain images); 0 = mixup to the end.
    _C.INPUT.MIXUP.OFF_LAST_ITERS = 0
    return cfg


def add_datasets_config(cfg):
    """Dataset registration and checking keys (DATASETS.*).

    Part of :func:`centerx.add_centerx_config`; the comment above each key is its
    documentation (docs/config.md is generated from it)."""
    _C = cfg

    # ---------------------------------------------------------------- datasets
    # User datasets in COCO json format registered from the config, each a
    # triple (name, json_file, image_root), e.g.
    # DATASETS.COCO_JSON "[('mine_train', 'a/train.json', 'a/images')]".
    _C.DATASETS.COCO_JSON = []
    # User datasets in Pascal VOC format (detectron2's register_pascal_voc layout:
    # ImageSets/Main/<split>.txt, Annotations/<id>.xml, JPEGImages/<id>.jpg), each
    # (name, folder, split) with class names read from the annotations (sorted),
    # or (name, folder, split, class names), e.g.
    # DATASETS.PASCAL_VOC "[('voc_train', 'data/VOC2012', 'train', ('cat', 'dog'))]".
    _C.DATASETS.PASCAL_VOC = []
    # User datasets in YOLO txt format, each (name, images folder, labels folder,
    # class names): labels/<same relative path>.txt per image, lines "class cx cy
    # w h" normalised to [0, 1]; class names as a list or a names file (one per
    # line, or a YAML with names:), e.g.
    # DATASETS.YOLO "[('mine', 'data/images/train', 'data/labels/train', 'data/classes.txt')]".
    _C.DATASETS.YOLO = []
    # Before training or evaluation every dataset of DATASETS.TRAIN / TEST is
    # checked once (centerx/data/validation.py): its classes against the model's,
    # box sizes, and its image files, decoded to find missing or unreadable ones
    # (skipped in training and evaluation, counted in the log). This many images
    # of each training dataset are decoded, evenly spread: -1 = all, 0 = none
    # (test datasets: always all, evaluation reads them all anyway).
    _C.DATASETS.CHECK_IMAGES = -1
    # Image-only datasets, each a pair (name, folder): every image below the
    # folder, without annotations, for label-free distillation, e.g.
    # DATASETS.IMAGE_FOLDERS "[('unlabelled', 'data/images')]". Registered when
    # a Distiller is built; needs DATALOADER.FILTER_EMPTY_ANNOTATIONS False.
    _C.DATASETS.IMAGE_FOLDERS = []
    return cfg


def add_dataloader_config(cfg):
    """Data loader keys (DATALOADER.TRAIN_MAPPER, SAMPLER_TRAIN's default).

    Part of :func:`centerx.add_centerx_config`; the comment above each key is its
    documentation (docs/config.md is generated from it)."""
    _C = cfg

    # -------------------------------------------------------------- dataloader
    # Training mapper: "centernet" (random scale + crop to INPUT.TRAIN_SIZE,
    # flip, colour jitter) or "default" (detectron2's DatasetMapper).
    _C.DATALOADER.TRAIN_MAPPER = "centernet"
    # Training sampler. centerX's default, "ResumableTrainingSampler", is
    # detectron2's infinite shuffled stream made exactly resumable: each sample
    # (image and augmentation) depends only on its position in the stream and
    # on SEED (random when < 0, then saved in the checkpoint), and --resume
    # continues from the next position (centerx/data/samplers.py). detectron2's
    # own samplers ("TrainingSampler", "RepeatFactorTrainingSampler",
    # "RandomSubsetTrainingSampler") still work but restart on resume.
    _C.DATALOADER.SAMPLER_TRAIN = "ResumableTrainingSampler"
    return cfg
