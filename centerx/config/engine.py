"""The keys of training and evaluation: the solver's additions (SOLVER: epochs,
mixed precision), evaluation and its reports (TEST), and the EMA of the weights
(MODEL_EMA). The code that reads them is in centerx.engine."""

from detectron2.config import CfgNode as CN

__all__ = ["add_ema_config", "add_evaluation_config", "add_solver_config"]


def add_solver_config(cfg):
    """Optimizer key (SOLVER.OPTIMIZER).

    Part of :func:`centerx.add_centerx_config`; the comment above each key is its
    documentation (docs/config.md is generated from it)."""
    _C = cfg

    # ------------------------------------------------------------------ solver
    # Optimizer: "SGD" (detectron2's), "ADAM" or "ADAMW" (the CenterNet papers
    # train with Adam). Adam uses SOLVER.BASE_LR and SOLVER.WEIGHT_DECAY.
    _C.SOLVER.OPTIMIZER = "SGD"
    # Length of training in passes over the training sets (DATASETS.TRAIN): when
    # > 0, train_net.py sets SOLVER.MAX_ITER to ceil(EPOCHS x images /
    # IMS_PER_BATCH) once the datasets are loaded (logged, and recorded in the
    # run's config.yaml), so one recipe fits datasets of any size; schedule keys
    # counted in iterations (WARMUP_ITERS, STEPS, CHECKPOINT_PERIOD,
    # TEST.EVAL_PERIOD) stay as given. 0 = SOLVER.MAX_ITER as given.
    _C.SOLVER.EPOCHS = 0
    # Under mixed precision (SOLVER.AMP.ENABLED: float16 on CUDA, bfloat16 on a
    # CPU that has it), the parts of the model that run in float32 anyway: their
    # names as the detector's named_modules() gives them (a distillation
    # student's; each teacher follows its own config: this key, or all of it in
    # float32 if its config has AMP off), e.g. ("heads",) or ("upsampler",
    # "heads.heatmap"). Inputs are
    # cast to float32 and autocast is off inside them; the losses are float32
    # whatever this says. The demo configs keep the box heads in float32:
    # bfloat16 there cost AP on real photographs (docs/results.md).
    _C.SOLVER.AMP.FP32_MODULES = ()
    return cfg


def add_evaluation_config(cfg):
    """Evaluation keys (TEST.*).

    Part of :func:`centerx.add_centerx_config`; the comment above each key is its
    documentation (docs/config.md is generated from it)."""
    _C = cfg

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
    # With each COCO evaluation, also write into its output folder
    # (OUTPUT_DIR/inference) per_class.csv (AP, AP50, precision and recall per
    # class), pr_curves.png (precision against recall per class at IoU 0.5) and
    # confusion_matrix.png (rows predicted class, columns true class, plus
    # background; detections matched to boxes at IoU 0.5).
    _C.TEST.CLASS_REPORT = True
    # Operating score of that report: precision, recall and the confusion
    # matrix count the detections scoring at least this.
    _C.TEST.REPORT_SCORE_THRESH = 0.3
    # Evaluation result (as flattened in metrics.json, higher is better) whose
    # best value during training keeps that evaluation's weights as
    # OUTPUT_DIR/model_best.pth, e.g. "bbox/AP50".
    _C.TEST.BEST_METRIC = "bbox/AP"
    return cfg


def add_ema_config(cfg):
    """Model EMA keys (MODEL_EMA).

    Part of :func:`centerx.add_centerx_config`; the comment above each key is its
    documentation (docs/config.md is generated from it)."""
    _C = cfg

    # --------------------------------------------------------------- model EMA
    # Exponential moving average of the weights (params and buffers):
    # ema = d * ema + (1 - d) * w after every step, d = DECAY * (1 - exp(-k / WARMUP_ITERS))
    # at step k (so early steps follow the fast-changing weights closely).
    _C.MODEL_EMA = CN()
    # Keep the average (saved in checkpoints under "ema"); USE_FOR_EVAL says whether evaluation uses it.
    _C.MODEL_EMA.ENABLED = False
    # Decay d once warmed up, in (0, 1): the average spans about 1 / (1 - d) steps.
    _C.MODEL_EMA.DECAY = 0.9998
    # Iterations over which the decay ramps up to DECAY (0: DECAY from the start).
    _C.MODEL_EMA.WARMUP_ITERS = 2000
    # Evaluate (during training and with --eval-only) with the EMA weights
    # instead of the trained ones. The EMA is saved with every checkpoint
    # (key "ema") and restored on --resume.
    _C.MODEL_EMA.USE_FOR_EVAL = True
    return cfg
