"""The keys of the models: every point detector's (MODEL.CENTERX), CenterNet's
(MODEL.CENTERNET), TTFNet's (MODEL.TTFNET), the DarkNet backbone's, distillation's
(MODEL.DISTILL) and constant-magnitude loss weighting's (MODEL.LOSS_BALANCE).
The code that reads them is in centerx.modeling."""

from detectron2.config import CfgNode as CN

from ..device import machine_device

__all__ = [
    "add_centernet_config",
    "add_darknet_config",
    "add_distill_config",
    "add_loss_balance_config",
    "add_point_detector_config",
    "add_timm_config",
    "add_ttfnet_config",
]


def add_point_detector_config(cfg):
    """Keys every point detector shares (MODEL.CENTERX): backbone weights and norms, neck and
    head norms, memory layout, PP-YOLO's neck and head options.

    Part of :func:`centerx.add_centerx_config`; the comment above each key is its
    documentation (docs/config.md is generated from it)."""
    _C = cfg

    # Device the model trains and runs on: "cpu", "cuda" or "cuda:N". The default
    # is the machine's (detectron2's is always "cuda"): "cuda" where torch sees a
    # CUDA GPU, else "cpu". A config or override asking for CUDA on a machine
    # without it is refused before anything is built.
    _C.MODEL.DEVICE = machine_device()

    # ---------------------------------------------------------------- backbone
    # Options every centerX detector shares: backbone weights (the backbones are
    # a torchvision-layout ResNet of depth MODEL.RESNETS.DEPTH 18 / 34 / 50 / 101
    # and DarkNet), norms, memory layout and PP-YOLO's neck and head options.
    _C.MODEL.CENTERX = CN()
    # ImageNet weights for the backbone: a torchvision ``.pth`` state dict or a
    # detectron2 / Caffe2 ``.pkl``, as a local path, file://, http(s):// or
    # detectron2:// URL (fetched once into detectron2's cache, like MODEL.WEIGHTS).
    # Empty = random initialisation. Loaded when the model is built; MODEL.WEIGHTS
    # (a full detector) overrides it.
    _C.MODEL.CENTERX.BACKBONE_WEIGHTS = ""
    # True: when BACKBONE_WEIGHTS cannot be fetched or found (no network, a wrong
    # path), warn and train from random initialisation instead of stopping; a
    # file that is read but does not fit the backbone still stops. The own-data
    # recipes set it with torchvision's ImageNet weights: used where reachable.
    _C.MODEL.CENTERX.BACKBONE_WEIGHTS_OPTIONAL = False
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
    # Names of the model's classes, one per heatmap channel in order, e.g.
    # "('circle', 'rectangle')". Empty = the thing_classes metadata of its
    # datasets (DATASETS.TEST first, then TRAIN). Read where names are needed
    # before any dataset is loaded: a distillation teacher's classes given by
    # name (a COCO json dataset's names are known only once it has been read).
    _C.MODEL.CENTERX.CLASS_NAMES = ()
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
    # Put the SPP block on the backbone's last feature.
    _C.MODEL.CENTERX.SPP.ENABLED = False
    # Max-pool kernel sizes, odd, in stride-32 cells (YOLOv4 / PP-YOLO: 5, 9, 13).
    _C.MODEL.CENTERX.SPP.POOL_SIZES = (5, 9, 13)
    # DropBlock (Ghiasi et al. 2018) after each hidden conv + ReLU of every head,
    # in training only: square blocks of BLOCK_SIZE (odd) output-stride cells
    # are zeroed so that about DROP_PROB of the units are dropped, the rest
    # rescaled to keep the mean.
    _C.MODEL.CENTERX.DROPBLOCK = CN()
    # Put DropBlock in the heads.
    _C.MODEL.CENTERX.DROPBLOCK.ENABLED = False
    # Fraction of the units dropped, in [0, 1).
    _C.MODEL.CENTERX.DROPBLOCK.DROP_PROB = 0.1
    # Side of the dropped squares in output-stride cells (odd).
    _C.MODEL.CENTERX.DROPBLOCK.BLOCK_SIZE = 3
    return cfg


def add_centernet_config(cfg):
    """CenterNet's keys (MODEL.CENTERNET).

    Part of :func:`centerx.add_centerx_config`; the comment above each key is its
    documentation (docs/config.md is generated from it)."""
    _C = cfg

    # --------------------------------------------------------------- CenterNet
    _C.MODEL.CENTERNET = CN()
    # Number of object classes (heatmap channels).
    _C.MODEL.CENTERNET.NUM_CLASSES = 80
    # The neck: "deconv" = three 3x3 conv + x2 transposed-conv stages on the stride-32 feature (the
    # paper's ResNet neck, UPSAMPLE_CHANNELS); "dla_up" = DLA-up + IDA-up over the stride-4..32 features
    # (the paper's DLA-34 neck; its output has the stride-4 feature's channels).
    _C.MODEL.CENTERNET.UPSAMPLER = "deconv"
    # Output channels of the three upsampling stages (each x2, stride 32 -> 4) of the "deconv" neck.
    _C.MODEL.CENTERNET.UPSAMPLE_CHANNELS = [256, 128, 64]
    # Use modulated deformable 3x3 convs in the neck
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
    return cfg


def add_ttfnet_config(cfg):
    """TTFNet's keys (MODEL.TTFNET).

    Part of :func:`centerx.add_centerx_config`; the comment above each key is its
    documentation (docs/config.md is generated from it)."""
    _C = cfg

    # ------------------------------------------------------------------ TTFNet
    _C.MODEL.TTFNET = CN()
    # Number of object classes (heatmap channels).
    _C.MODEL.TTFNET.NUM_CLASSES = 80
    # Output channels of the upsampling stages (each x2: stride 32 -> 16 -> 8 -> 4).
    _C.MODEL.TTFNET.UPSAMPLE_CHANNELS = [256, 128, 64]
    # Convs in the shortcut from the backbone stage of each upsampling
    # stage's output stride (16, 8, 4); 0 = no shortcut for that stage.
    _C.MODEL.TTFNET.SHORTCUT_CONVS = [1, 2, 3]
    # Kernel of the shortcut convs: 3 (TTFNet's) or 1 (pointwise, as FPN's
    # lateral connections; a ninth of their multiply-adds, for CPU-sized models).
    _C.MODEL.TTFNET.SHORTCUT_KERNEL_SIZE = 3
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
    # Add the IoU output, its loss and the fused score.
    _C.MODEL.TTFNET.IOU_AWARE.ENABLED = False
    # Weight of loss_iou, on top of the GIoU loss's sample weights.
    _C.MODEL.TTFNET.IOU_AWARE.LOSS_WEIGHT = 1.0
    # Weight of the predicted IoU in the score, in [0, 1].
    _C.MODEL.TTFNET.IOU_AWARE.ALPHA = 0.5
    # Detections with a lower score are dropped at inference (after top-K,
    # K = TEST.DETECTIONS_PER_IMAGE).
    _C.MODEL.TTFNET.SCORE_THRESH_TEST = 0.01
    return cfg


def add_darknet_config(cfg):
    """The DarkNet backbone's keys (MODEL.DARKNET).

    Part of :func:`centerx.add_centerx_config`; the comment above each key is its
    documentation (docs/config.md is generated from it)."""
    _C = cfg

    # ----------------------------------------------------------------- DarkNet
    # DarkNet backbone (MODEL.BACKBONE.NAME "build_darknet_backbone").
    _C.MODEL.DARKNET = CN()
    # Residual blocks of the five stride-2 stages dark1..dark5; DarkNet-53 = [1, 2, 8, 8, 4].
    _C.MODEL.DARKNET.STAGE_BLOCKS = [1, 2, 8, 8, 4]
    # Stages returned to the detector: dark{k} has stride 2^k and 32 * 2^k channels.
    _C.MODEL.DARKNET.OUT_FEATURES = ["dark2", "dark3", "dark4", "dark5"]
    return cfg


def add_timm_config(cfg):
    """The timm backbone's keys (MODEL.TIMM).

    Part of :func:`centerx.add_centerx_config`; the comment above each key is its
    documentation (docs/config.md is generated from it)."""
    _C = cfg

    # -------------------------------------------------------------------- timm
    # Any image model of timm that supports features_only (MODEL.BACKBONE.NAME "build_timm_backbone"),
    # e.g. "mobilenetv3_small_100", "efficientnet_lite0", "lcnet_050", "ghostnet_100", "dla34", "resnet18"
    # (timm.list_models() lists them). Its features at strides 4, 8, 16 and 32 are the backbone's outputs,
    # named res2..res5 as detectron2's ResNet names its own; MODEL.BACKBONE.FREEZE_AT freezes the stem (1)
    # and the stages up to res<k> (k), MODEL.CENTERX.BACKBONE_NORM converts its BatchNorms ("FrozenBN",
    # "SyncBN").
    _C.MODEL.TIMM = CN()
    # timm model name (timm.list_models()); its features_only variant is the backbone.
    _C.MODEL.TIMM.NAME = "mobilenetv3_small_100"
    # Its ImageNet weights: "" = random initialisation; "timm" = timm's own pretrained weights from its hub
    # (needs the network); else a local path or http(s) URL of a .pth / .safetensors state dict of that timm
    # model (the classifier may be left out), loaded strictly: a key missing or of another shape is an error.
    _C.MODEL.TIMM.WEIGHTS = ""
    # Its activation: "" = the model's own; else a timm activation name (e.g. "relu") put in its place wherever
    # the model's builder takes act_layer (MobileNetV3, LCNet, EfficientNet, ...). "relu" suits INT8 export:
    # quantised convolutions fuse it, while hard-swish runs in float between (de)quantisations.
    _C.MODEL.TIMM.ACT_LAYER = ""
    # More keyword arguments of timm.create_model, for the model's builder (timm's own --model-kwargs), each
    # "name=value" with a Python literal or a plain name as value (stem_type=deep), e.g. with "resnet18"
    # ["channels=(24, 48, 96, 192)", "layers=(1, 1, 1, 1)", "stem_type=deep", "stem_width=8"] (a ResNet-10 of
    # 3/8 the width, with a stem of three 3x3 convolutions, 8, 8 and 16 channels), or ["drop_path_rate=0.1"].
    # The arguments the backbone sets itself (features_only, out_indices, pretrained, act_layer) are refused.
    _C.MODEL.TIMM.MODEL_ARGS = []
    return cfg


def add_distill_config(cfg):
    """The Distiller's keys (MODEL.DISTILL).

    Part of :func:`centerx.add_centerx_config`; the comment above each key is its
    documentation (docs/config.md is generated from it)."""
    _C = cfg

    # ------------------------------------------------------------ distillation
    # Knowledge distillation (docs/distillation.md), used by MODEL.META_ARCHITECTURE
    # "Distiller": the rest of the config describes the student; each teacher
    # is built from its own config file and kept frozen.
    _C.MODEL.DISTILL = CN()
    # Meta-architecture of the student ("CenterNet" or "TTFNet"). Teachers must
    # have the same one; its checkpoints load into this plain student config.
    _C.MODEL.DISTILL.STUDENT_META_ARCHITECTURE = "CenterNet"
    # Teachers, each a triple (config file, weights file or URL, classes). classes: the
    # student classes it teaches, either by name (the teacher's and the
    # student's MODEL.CENTERX.CLASS_NAMES, else the thing_classes metadata of
    # their datasets, DATASETS.TEST then TRAIN) or
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
    # Heatmap term: "" = the student detector's own (for CenterNet and TTFNet the
    # mean squared difference of probabilities over every cell, as centerX);
    # "quality_focal" = binary cross-entropy against the teacher's probabilities
    # scaled by |teacher - student|^2 and divided by the teacher's peak mass,
    # i.e. per object the teacher sees (quality focal loss, GFL): not dominated by
    # the background as the MSE is on sparse heatmaps. Other names: those registered in
    # centerx.modeling.distillation_terms.HEATMAP_DISTILLATION_LOSS_REGISTRY.
    _C.MODEL.DISTILL.HEATMAP_LOSS = ""
    # More distillation terms, by name in centerx.modeling.distillation_terms.DISTILLATION_TERM_REGISTRY (a
    # user's, registered in a module given to --import): each adds its own losses; one with parameters or
    # buffers has them saved in the checkpoint ("distillation_terms") and restored by --resume.
    _C.MODEL.DISTILL.TERMS = ()
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
    # Add the adversarial terms to the Distiller's losses.
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
    return cfg


def add_loss_balance_config(cfg):
    """Constant-magnitude loss weighting keys (MODEL.LOSS_BALANCE).

    Part of :func:`centerx.add_centerx_config`; the comment above each key is its
    documentation (docs/config.md is generated from it)."""
    _C = cfg

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
        ("loss_heatmap", 1.5),
        ("loss_wh", 0.3),
        ("loss_offset", 0.1),
        ("loss_box", 1.5),
    ]
    # Divide by "current" (the term's value at this step) or "running_mean" (an
    # exponential moving average of its absolute value, smoother).
    _C.MODEL.LOSS_BALANCE.NORMALIZER = "current"
    # Weight of the old average in "running_mean".
    _C.MODEL.LOSS_BALANCE.MOMENTUM = 0.99
    # Divisor floor: a term is divided by max(normaliser, MIN_NORMALIZER), which
    # caps its gradient gain at c / MIN_NORMALIZER and maps a zero term to 0.
    _C.MODEL.LOSS_BALANCE.MIN_NORMALIZER = 1e-6
    return cfg
