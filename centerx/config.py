"""Every config key centerX adds to detectron2's defaults.

Each key has a default and a comment. ``add_centerx_config`` is idempotent and
must run before ``merge_from_file`` so that unknown keys in a user's YAML fail
with detectron2's usual ``KeyError: 'Non-existent config key: ...'``.
"""
import logging

from detectron2.config import CfgNode as CN

# the node only centerX creates: its presence means the keys were added already
# (MODEL.CENTERNET would not do: CenterNet2's add_centernet_config creates one too)
SENTINEL = "CENTERX"


def add_centerx_config(cfg):
    """Add centerX's keys to a detectron2 config in place and return it.

    A ``MODEL.CENTERNET`` node from another extension (CenterNet2's
    ``add_centernet_config``) is replaced by centerX's, with a warning: the two
    define different keys under the same name.
    """
    if hasattr(cfg.MODEL, SENTINEL):
        return cfg
    if hasattr(cfg.MODEL, "CENTERNET"):
        logging.getLogger(__name__).warning(
            "add_centerx_config: the config already has a MODEL.CENTERNET node of another extension (CenterNet2?); "
            "it is replaced by centerX's MODEL.CENTERNET keys.")
    _C = cfg

    # ---------------------------------------------------------------- backbone
    # Options every centerX detector shares: backbone weights (the backbones are
    # a torchvision-layout ResNet of depth MODEL.RESNETS.DEPTH 18 / 34 / 50 / 101
    # and DarkNet), norms, memory layout and PP-YOLO's neck and head options.
    _C.MODEL.CENTERX = CN()
    # Local ImageNet weights for the backbone: a torchvision ``.pth`` state dict
    # or a detectron2 / Caffe2 ``.pkl``. Empty = random initialisation.
    # Loaded when the model is built; MODEL.WEIGHTS (a full detector) overrides it.
    _C.MODEL.CENTERX.BACKBONE_WEIGHTS = ""
    # Normalisation in the backbone: "BN", "SyncBN" or "FrozenBN".
    _C.MODEL.CENTERX.BACKBONE_NORM = "BN"
    # Normalisation in the upsampler (CenterNet's and TTFNet's): any name of
    # detectron2's get_norm, e.g. "BN", "SyncBN" (CUDA, across processes),
    # "naiveSyncBN" (any backend, e.g. gloo on CPU) or "GN".
    _C.MODEL.CENTERX.NECK_NORM = "BN"
    # Normalisation after each hidden 3x3 conv of the heads, same names as
    # NECK_NORM; "" = none (as in both papers).
    _C.MODEL.CENTERX.HEAD_NORM = ""
    # Channels-last (NHWC) memory layout for the weights (set by the trainer)
    # and the input batch: the same numbers, computed faster by oneDNN's
    # bfloat16 convolutions on CPU and by tensor cores on GPU (about 1.8x per
    # training step of the shapes demo under CPU bfloat16 autocast).
    _C.MODEL.CENTERX.CHANNELS_LAST = False
    # PP-YOLO's neck and head options, for CenterNet and TTFNet (all off: the
    # papers' models, same parameter names). The last (stride-32) backbone
    # feature goes through CoordConv, then SPP, before the upsampler.
    # CoordConv: two coordinate channels (x and y, -1 to 1 across the map)
    # appended, then a 1x1 conv back to the feature's channels + NECK_NORM + ReLU.
    _C.MODEL.CENTERX.COORD_CONV = False
    # Spatial pyramid pooling: the feature concatenated with stride-1 "same"
    # max-pools of each of POOL_SIZES (odd, in stride-32 cells), then a 1x1 conv
    # back to the feature's channels + NECK_NORM + ReLU.
    _C.MODEL.CENTERX.SPP = CN()
    _C.MODEL.CENTERX.SPP.ENABLED = False
    _C.MODEL.CENTERX.SPP.POOL_SIZES = (5, 9, 13)
    # DropBlock (Ghiasi et al. 2018) after each hidden conv + ReLU of every head,
    # in training only: square blocks of BLOCK_SIZE (odd) output-stride cells
    # are zeroed so that about DROP_PROB of the units are dropped, the rest
    # rescaled to keep the mean.
    _C.MODEL.CENTERX.DROPBLOCK = CN()
    _C.MODEL.CENTERX.DROPBLOCK.ENABLED = False
    _C.MODEL.CENTERX.DROPBLOCK.DROP_PROB = 0.1
    _C.MODEL.CENTERX.DROPBLOCK.BLOCK_SIZE = 3

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
    # "original" = (b + sqrt(D)) / 2 in all three cases, as the original
    # CenterNet code behind its published AP and CenterNet-better (both at
    # MIN_OVERLAP 0.7); "corrected" = the proper (smaller) roots, as centerX and
    # mmdetection, which train with MIN_OVERLAP 0.3. A 10x10-cell box gets
    # r = 2 from either reference pairing but r = 0 from "corrected" at 0.7.
    _C.MODEL.CENTERNET.RADIUS_MODE = "original"
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

    # ------------------------------------------------------------------ TTFNet
    _C.MODEL.TTFNET = CN()
    # Number of object classes (heatmap channels).
    _C.MODEL.TTFNET.NUM_CLASSES = 80
    # Output channels of the upsampling stages (each x2: stride 32 -> 16 -> 8 -> 4).
    _C.MODEL.TTFNET.UPSAMPLE_CHANNELS = [256, 128, 64]
    # 3x3 convs in the shortcut from the backbone stage of each upsampling
    # stage's output stride (16, 8, 4); 0 = no shortcut for that stage.
    _C.MODEL.TTFNET.SHORTCUT_CONVS = [1, 2, 3]
    # Use modulated deformable 3x3 convs in the upsampling stages, as the paper
    # (torchvision.ops.deform_conv2d). Off for models meant for export.
    _C.MODEL.TTFNET.DEFORMABLE = False
    # Heatmap head: hidden channels and number of 3x3 conv + ReLU layers.
    _C.MODEL.TTFNET.HEATMAP_HEAD_CHANNELS = 128
    _C.MODEL.TTFNET.HEATMAP_HEAD_CONVS = 2
    # Box (l, t, r, b) head: hidden channels and number of 3x3 conv + ReLU layers.
    _C.MODEL.TTFNET.BOX_HEAD_CHANNELS = 64
    _C.MODEL.TTFNET.BOX_HEAD_CONVS = 2
    # Initial bias of the heatmap logits: -2.19 = logit(0.1) as in the paper.
    _C.MODEL.TTFNET.HEATMAP_BIAS = -2.19
    # Box distances are ReLU(head output) * BOX_BASE input pixels.
    _C.MODEL.TTFNET.BOX_BASE = 16.0
    # Initial bias of the box head's outputs. 0 (the authors') starts every cell
    # with an empty box, where GIoU has no useful gradient and the ReLU can die
    # (a pitfall users of the authors' code reported); 1 starts with BOX_BASE pixels on each side.
    _C.MODEL.TTFNET.BOX_HEAD_BIAS = 0.0
    # Heatmap Gaussian extent: sigma = ALPHA * box side / 6 (per axis).
    _C.MODEL.TTFNET.ALPHA = 0.54
    # Regression samples: cells of the box where a Gaussian of extent BETA is non-zero.
    _C.MODEL.TTFNET.BETA = 0.54
    # Loss weights: heatmap focal loss and Gaussian-weighted GIoU box loss.
    _C.MODEL.TTFNET.HEATMAP_LOSS_WEIGHT = 1.0
    _C.MODEL.TTFNET.BOX_LOSS_WEIGHT = 5.0
    # IoU-aware scoring (PP-YOLO): the box head gets an output ``iou`` (logit
    # of the IoU of each cell's predicted box with its object), trained at the
    # box-regression samples with binary cross-entropy against that IoU
    # (prediction detached), weighted like the GIoU loss (loss_iou, times
    # LOSS_WEIGHT). At inference the score is
    # sigmoid(heatmap)^(1 - ALPHA) * sigmoid(iou)^ALPHA, before peak masking
    # and top-K (and so in every exported graph).
    _C.MODEL.TTFNET.IOU_AWARE = CN()
    _C.MODEL.TTFNET.IOU_AWARE.ENABLED = False
    _C.MODEL.TTFNET.IOU_AWARE.LOSS_WEIGHT = 1.0
    # Weight of the predicted IoU in the score, in [0, 1].
    _C.MODEL.TTFNET.IOU_AWARE.ALPHA = 0.5
    # Detections with a lower score are dropped at inference (after top-K,
    # K = TEST.DETECTIONS_PER_IMAGE).
    _C.MODEL.TTFNET.SCORE_THRESH_TEST = 0.01

    # ----------------------------------------------------------------- DarkNet
    # DarkNet backbone (MODEL.BACKBONE.NAME "build_darknet_backbone").
    _C.MODEL.DARKNET = CN()
    # Residual blocks of the five stride-2 stages dark1..dark5; DarkNet-53 = [1, 2, 8, 8, 4].
    _C.MODEL.DARKNET.STAGE_BLOCKS = [1, 2, 8, 8, 4]
    # Stages returned to the detector: dark{k} has stride 2^k and 32 * 2^k channels.
    _C.MODEL.DARKNET.OUT_FEATURES = ["dark2", "dark3", "dark4", "dark5"]

    # ------------------------------------------------------------------ export
    # Deployment (centerx.deploy, projects/speedup): ONNX, Caffe, TensorRT.
    _C.EXPORT = CN()
    # Input (height, width) in pixels, multiples of 32: the size the graph is
    # traced at (ONNX keeps N, H, W dynamic), the fixed input of the Caffe net
    # and of the TensorRT profile, and the letterbox size of the runtimes.
    _C.EXPORT.INPUT_SIZE = (512, 512)
    # Fold flip test-time augmentation (TEST.FLIP_TEST) into the exported graph
    # (ONNX, ONNX INT8, TensorRT; Caffe has no flip layer and refuses it).
    _C.EXPORT.FLIP_TEST = False
    # TensorRT engine: largest batch of the optimisation profile (the input
    # size is fixed to INPUT_SIZE) and builder workspace limit in MiB.
    _C.EXPORT.TENSORRT_MAX_BATCH = 8
    _C.EXPORT.TENSORRT_WORKSPACE_MB = 2048
    # INT8 export (--format onnx-int8): number of calibration images, evenly
    # spread over the calibration dataset, and that dataset ("" =
    # DATASETS.TEST[0], else DATASETS.TRAIN[0]; any registered name, including
    # DATASETS.COCO_JSON / IMAGE_FOLDERS entries). export.py's
    # --calibration-images / --calibration-dataset override them.
    _C.EXPORT.CALIBRATION_IMAGES = 32
    _C.EXPORT.CALIBRATION_DATASET = ""

    # ------------------------------------------------------------ distillation
    # Knowledge distillation (docs/distillation.md), used by MODEL.META_ARCHITECTURE
    # "Distiller": the rest of the config describes the student; each teacher
    # is built from its own config file and kept frozen.
    _C.MODEL.DISTILL = CN()
    # Meta-architecture of the student ("CenterNet" or "TTFNet"). Teachers must
    # have the same one; its checkpoints load into this plain student config.
    _C.MODEL.DISTILL.STUDENT_META_ARCHITECTURE = "CenterNet"
    # Teachers, each a triple (config file, weights file, classes). classes: the
    # student classes it teaches, either by name (looked up in the thing_classes
    # of the teacher's and the student's datasets, DATASETS.TEST then TRAIN) or
    # as student class indices, one per teacher heatmap channel in order;
    # empty = all the teacher's classes, by name when both sides have names,
    # else channel i -> student class i. No class may have two teachers, e.g.
    # "[('t_a.yaml', 't_a.pth', ('circle', 'rectangle')), ('t_b.yaml', 't_b.pth', (2, 3))]".
    _C.MODEL.DISTILL.TEACHERS = []
    # True: the distillation losses are added to the student's own losses
    # (computed on images that have labels; image-folder images get
    # distillation losses only). False: label-free, distillation losses only.
    _C.MODEL.DISTILL.USE_LABELS = True
    # Overall weight of every distillation loss term (the original's 10).
    _C.MODEL.DISTILL.WEIGHT = 10.0
    # Per-head weights, multiplied by WEIGHT: heatmap MSE (all meta-architectures),
    # size and offset L1 (CenterNet), box GIoU (TTFNet).
    _C.MODEL.DISTILL.HEATMAP_WEIGHT = 1.0
    _C.MODEL.DISTILL.WH_WEIGHT = 1.0
    _C.MODEL.DISTILL.OFFSET_WEIGHT = 0.1
    _C.MODEL.DISTILL.BOX_WEIGHT = 1.0
    # The output-map (logit) distillation terms above, loss_kd_<teacher>_<head>.
    # False: adversarial feature distillation only (needs ADVERSARIAL.ENABLED).
    _C.MODEL.DISTILL.LOGIT_KD = True
    # Adversarial feature distillation: per teacher and feature level, a small
    # discriminator learns to tell the teacher's feature map (real) from the
    # student's (fake, brought to the teacher's channels by a 1x1 conv adapter
    # when they differ), and the student is trained to fool it
    # (loss_adv_<teacher>_<level>, non-saturating GAN loss). Discriminators and
    # adapters are training state only: saved in checkpoints under
    # "adversarial", restored on --resume, never part of the exported student.
    _C.MODEL.DISTILL.ADVERSARIAL = CN()
    _C.MODEL.DISTILL.ADVERSARIAL.ENABLED = False
    # Levels to distil: output feature names of the student's backbone (e.g.
    # "res4", "res5"; the teachers' backbones must have them at the same stride)
    # and/or "upsampler" (the stride-4 map the heads read).
    _C.MODEL.DISTILL.ADVERSARIAL.FEATURES = ("upsampler",)
    # Weight of each student fooling term loss_adv_<teacher>_<level>.
    _C.MODEL.DISTILL.ADVERSARIAL.WEIGHT = 1.0
    # The discriminators' own Adam optimizer, stepped after every training step
    # with this constant learning rate (SOLVER's schedule, warm-up and gradient
    # clipping do not apply to it) and these (beta1, beta2).
    _C.MODEL.DISTILL.ADVERSARIAL.BASE_LR = 1e-4
    _C.MODEL.DISTILL.ADVERSARIAL.BETAS = (0.5, 0.999)
    # Hidden channels of each discriminator (two stride-2 3x3 convs, then a
    # 1x1 conv to one real/fake logit per cell of the stride-4x coarser map).
    _C.MODEL.DISTILL.ADVERSARIAL.CHANNELS = 64

    # ------------------------------------------------------ loss balancing
    # Constant-magnitude loss weighting (docs/distillation.md): each listed loss term L
    # becomes c * L / stopgrad(L), so its value stays c and its gradient is
    # c * grad(L) / L. Off by default: it changes the optimisation of every
    # published recipe. Works for every meta-architecture, Distiller included.
    _C.MODEL.LOSS_BALANCE = CN()
    # Switch the weighting on.
    _C.MODEL.LOSS_BALANCE.ENABLED = False
    # (loss name, magnitude c) pairs, names exactly as in the loss dict. Terms
    # not listed are left as they are; listed names a model does not produce are
    # ignored. Defaults: the original's CenterNet values (heatmap 1.5, size 0.3,
    # offset 0.1) and TTFNet's box term at the heatmap's magnitude (an equal
    # pull; our choice, the original has no TTFNet). Distillation
    # terms must be listed by name, e.g. ("loss_kd_t0_heatmap", 1.5).
    _C.MODEL.LOSS_BALANCE.MAGNITUDES = [
        ("loss_heatmap", 1.5), ("loss_wh", 0.3), ("loss_offset", 0.1), ("loss_box", 1.5),
    ]
    # Divide by "current" (the term's value at this step) or "running_mean" (an
    # exponential moving average of its absolute value, smoother).
    _C.MODEL.LOSS_BALANCE.NORMALIZER = "current"
    # Weight of the old average in "running_mean".
    _C.MODEL.LOSS_BALANCE.MOMENTUM = 0.99
    # Divisor floor: a term is divided by max(normaliser, MIN_NORMALIZER), which
    # caps its gradient gain at c / MIN_NORMALIZER and maps a zero term to 0.
    _C.MODEL.LOSS_BALANCE.MIN_NORMALIZER = 1e-6

    # Image-only datasets, each a pair (name, folder): every image below the
    # folder, without annotations, for label-free distillation, e.g.
    # DATASETS.IMAGE_FOLDERS "[('unlabelled', 'data/images')]". Registered when
    # a Distiller is built; needs DATALOADER.FILTER_EMPTY_ANNOTATIONS False.
    _C.DATASETS.IMAGE_FOLDERS = []

    # --------------------------------------------------------------- model EMA
    # Exponential moving average of the weights (params and buffers):
    # ema = d * ema + (1 - d) * w after every step, d = DECAY * (1 - exp(-k / WARMUP_ITERS))
    # at step k (so early steps follow the fast-changing weights closely).
    _C.MODEL_EMA = CN()
    _C.MODEL_EMA.ENABLED = False
    _C.MODEL_EMA.DECAY = 0.9998
    # Iterations over which the decay ramps up to DECAY (0: DECAY from the start).
    _C.MODEL_EMA.WARMUP_ITERS = 2000
    # Evaluate (during training and with --eval-only) with the EMA weights
    # instead of the trained ones. The EMA is saved with every checkpoint
    # (key "ema") and restored on --resume.
    _C.MODEL_EMA.USE_FOR_EVAL = True

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
    _C.INPUT.MIXUP.ENABLED = False
    # Probability that a training image is mixed with a second one.
    _C.INPUT.MIXUP.PROB = 0.5
    # lam ~ Beta(ALPHA, ALPHA) (1.5 as in the paper).
    _C.INPUT.MIXUP.ALPHA = 1.5
    # No mixup in the last OFF_LAST_ITERS iterations of SOLVER.MAX_ITER
    # (training ends on plain images); 0 = mixup to the end.
    _C.INPUT.MIXUP.OFF_LAST_ITERS = 0

    # ---------------------------------------------------------------- datasets
    # User datasets in COCO json format registered from the config, each a
    # triple (name, json_file, image_root), e.g.
    # DATASETS.COCO_JSON "[('mine_train', 'a/train.json', 'a/images')]".
    _C.DATASETS.COCO_JSON = []
    # Before training or evaluation every dataset of DATASETS.TRAIN / TEST is
    # checked once (centerx/data/validation.py): its classes against the model's,
    # box sizes, and its image files, decoded to find missing or unreadable ones
    # (skipped in training and evaluation, counted in the log). This many images
    # of each training dataset are decoded, evenly spread: -1 = all, 0 = none
    # (test datasets: always all, evaluation reads them all anyway).
    _C.DATASETS.CHECK_IMAGES = -1

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

    # ------------------------------------------------------------------ solver
    # Optimizer: "SGD" (detectron2's), "ADAM" or "ADAMW" (the CenterNet papers
    # train with Adam). Adam uses SOLVER.BASE_LR and SOLVER.WEIGHT_DECAY.
    _C.SOLVER.OPTIMIZER = "SGD"

    # -------------------------------------------------------------------- test
    # Flip test-time augmentation (CenterNet's --flip_test) in evaluation and
    # DefaultPredictor: each image and its mirror image go through the network
    # in one batch; heatmap probabilities and box sizes (CenterNet) or
    # distances (TTFNet) are averaged before peak masking (CenterNet's offsets
    # come from the unflipped image). About 2x the network's inference cost.
    # EXPORT.FLIP_TEST puts it in exported graphs.
    _C.TEST.FLIP_TEST = False
    # Evaluator for TEST datasets: "coco" (detectron2's COCOEvaluator) or
    # "none" (no evaluation).
    _C.TEST.EVALUATOR = "coco"
    # At each evaluation during training, draw the predictions of the model on
    # the first VIS_IMAGES images of DATASETS.TEST[0] and write them to
    # TensorBoard (detectron2's event writer); 0 = off.
    _C.TEST.VIS_IMAGES = 4
    # Only detections scoring above this are drawn in those images.
    _C.TEST.VIS_SCORE_THRESH = 0.3
    return cfg


def check_config(cfg, training: bool = True, world_size: int = 1) -> None:
    """Refuse settings that would fail later with a message that does not say what
    to change; each error names the key and a value that works.

    Args:
        training: also check what only training uses (INPUT.TRAIN_SIZE, SOLVER.MAX_ITER).
        world_size: number of processes the run will have (detectron2 rescales the
            schedule to it from SOLVER.REFERENCE_WORLD_SIZE).
    """
    if training:
        size = cfg.INPUT.TRAIN_SIZE
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0 or size % 32:
            raise ValueError(f"INPUT.TRAIN_SIZE must be a positive multiple of 32 (the training input side in "
                             f"pixels), got {size!r}; e.g. INPUT.TRAIN_SIZE 512.")
        if cfg.SOLVER.MAX_ITER < 1:
            raise ValueError(f"SOLVER.MAX_ITER must be at least 1 to train, got {cfg.SOLVER.MAX_ITER}; to evaluate "
                             "a trained model use --eval-only MODEL.WEIGHTS <checkpoint>.")
    reference, batch = cfg.SOLVER.REFERENCE_WORLD_SIZE, cfg.SOLVER.IMS_PER_BATCH
    if reference and reference != world_size and batch % reference:
        raise ValueError(
            f"SOLVER.IMS_PER_BATCH {batch} cannot be rescaled from SOLVER.REFERENCE_WORLD_SIZE {reference} (the "
            f"config's reference number of GPUs) to {world_size} process(es): it is not a multiple of {reference}. "
            f"Set SOLVER.IMS_PER_BATCH to a multiple of {reference} (the per-GPU batch times {reference}), or "
            "SOLVER.REFERENCE_WORLD_SIZE 0 to use the batch and schedule as given.")
