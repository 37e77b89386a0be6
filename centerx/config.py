"""Every config key centerX adds to detectron2's defaults.

Each key has a default and a comment. ``add_centerx_config`` is idempotent and
must run before ``merge_from_file`` so that unknown keys in a user's YAML fail
with detectron2's usual ``KeyError: 'Non-existent config key: ...'``.
"""
from detectron2.config import CfgNode as CN


def add_centerx_config(cfg):
    """Add centerX's keys to a detectron2 config in place and return it."""
    if hasattr(cfg.MODEL, "CENTERNET"):
        return cfg
    _C = cfg

    # ---------------------------------------------------------------- backbone
    # Torchvision-layout ResNet registered in detectron2's BACKBONE_REGISTRY;
    # depth comes from detectron2's own MODEL.RESNETS.DEPTH (18, 34, 50, 101).
    _C.MODEL.CENTERX = CN()
    # Local ImageNet weights for the backbone: a torchvision ``.pth`` state dict
    # or a detectron2 / Caffe2 ``.pkl``. Empty = random initialisation.
    # Loaded when the model is built; MODEL.WEIGHTS (a full detector) overrides it.
    _C.MODEL.CENTERX.BACKBONE_WEIGHTS = ""
    # Normalisation in the backbone: "BN", "SyncBN" or "FrozenBN".
    _C.MODEL.CENTERX.BACKBONE_NORM = "BN"
    # Normalisation in the upsampler and heads: "BN" or "SyncBN".
    _C.MODEL.CENTERX.NECK_NORM = "BN"

    # --------------------------------------------------------------- CenterNet
    _C.MODEL.CENTERNET = CN()
    # Number of object classes (heatmap channels).
    _C.MODEL.CENTERNET.NUM_CLASSES = 80
    # Output channels of the three upsampling stages (each x2, stride 32 -> 4).
    _C.MODEL.CENTERNET.UPSAMPLE_CHANNELS = [256, 128, 64]
    # Use modulated deformable 3x3 convs in the upsampler
    # (torchvision.ops.deform_conv2d). Off for models meant for export.
    _C.MODEL.CENTERNET.DEFORMABLE = False
    # Hidden channels of each head (3x3 conv + ReLU + 1x1 conv).
    _C.MODEL.CENTERNET.HEAD_CHANNELS = 64
    # Initial bias of the heatmap logits: -2.19 = logit(0.1) as in the paper.
    _C.MODEL.CENTERNET.HEATMAP_BIAS = -2.19
    # Gaussian radius: minimum IoU a box shifted by the radius keeps with the
    # ground truth (CornerNet's min_overlap).
    _C.MODEL.CENTERNET.MIN_OVERLAP = 0.7
    # Which roots of CornerNet's radius quadratics to take:
    # "corrected" = the proper (smaller) roots, as CenterNet-better and centerX;
    # "original" = (b + sqrt(D)) / 2 in all three cases, as the original
    # CenterNet code that produced its published AP (much larger radii).
    _C.MODEL.CENTERNET.RADIUS_MODE = "corrected"
    # At most this many objects per image get targets; extra (smallest) ones
    # are skipped and counted in the log.
    _C.MODEL.CENTERNET.MAX_OBJECTS = 128
    # Penalty-reduced focal loss exponents (alpha on the prediction, beta on
    # the Gaussian penalty reduction).
    _C.MODEL.CENTERNET.FOCAL_ALPHA = 2.0
    _C.MODEL.CENTERNET.FOCAL_BETA = 4.0
    # Loss weights: heatmap focal loss, L1 on size (output-stride cells),
    # L1 on sub-cell offset.
    _C.MODEL.CENTERNET.HEATMAP_LOSS_WEIGHT = 1.0
    _C.MODEL.CENTERNET.WH_LOSS_WEIGHT = 0.1
    _C.MODEL.CENTERNET.OFFSET_LOSS_WEIGHT = 1.0
    # Detections with a lower score are dropped at inference (after top-K,
    # K = TEST.DETECTIONS_PER_IMAGE).
    _C.MODEL.CENTERNET.SCORE_THRESH_TEST = 0.01

    # ------------------------------------------------------------------- input
    # Square side (input pixels) of every training image after augmentation.
    _C.INPUT.TRAIN_SIZE = 512
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

    # ---------------------------------------------------------------- datasets
    # User datasets in COCO json format registered from the config, each a
    # triple (name, json_file, image_root), e.g.
    # DATASETS.COCO_JSON "[('mine_train', 'a/train.json', 'a/images')]".
    _C.DATASETS.COCO_JSON = []

    # -------------------------------------------------------------- dataloader
    # Training mapper: "centernet" (random scale + crop to INPUT.TRAIN_SIZE,
    # flip, colour jitter) or "default" (detectron2's DatasetMapper).
    _C.DATALOADER.TRAIN_MAPPER = "centernet"

    # ------------------------------------------------------------------ solver
    # Optimizer: "SGD" (detectron2's), "ADAM" or "ADAMW" (the CenterNet papers
    # train with Adam). Adam uses SOLVER.BASE_LR and SOLVER.WEIGHT_DECAY.
    _C.SOLVER.OPTIMIZER = "SGD"

    # -------------------------------------------------------------------- test
    # Evaluator for TEST datasets: "coco" (detectron2's COCOEvaluator) or
    # "none" (no evaluation).
    _C.TEST.EVALUATOR = "coco"
    return cfg
