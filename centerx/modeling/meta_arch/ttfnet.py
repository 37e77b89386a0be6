"""TTFNet ("Training-Time-Friendly Network for Real-Time Object Detection",
Liu et al., AAAI 2020) as a detectron2 meta-architecture."""

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import Instances

from ...config import ConfigValueError
from ...config.model import add_ttfnet_config
from ..decode import decode_ttfnet, ltrb_to_boxes, ttfnet_scores
from ..dropblock import drop_block_args
from ..heads import TTFNetHeads
from ..losses import penalty_reduced_focal_loss, weighted_giou_loss, weighted_iou_aware_loss
from ..losses.distillation import ttfnet_distillation_losses
from ..necks import TTFNetUpsampler
from ..targets import batch_ground_truth, ttfnet_targets, ttfnet_window
from .point_detector import PointDetector


@META_ARCH_REGISTRY.register()
class TTFNet(PointDetector):
    """backbone -> [CoordConv, SPP on its last feature] -> upsampler with
    shortcuts (stride 4) -> heatmap / ltrb [/ IoU] heads -> focal loss on
    elliptical-Gaussian heatmaps + GIoU loss [+ IoU-prediction loss] on
    Gaussian-weighted box samples in training, peak masking + top-K decode at
    inference.

    Inputs and outputs as :class:`PointDetector`. ``coord_conv`` and ``spp``
    (:mod:`centerx.modeling.necks`) map the largest-stride backbone feature to
    one of the same shape (the shortcuts read the other features as they are);
    None = identity. Heads with an ``iou`` output (IoU-aware scoring) add
    ``loss_iou`` (times ``iou_loss_weight``) and score detections with
    :func:`~centerx.modeling.decode.ttfnet_scores` (weight ``iou_alpha``).
    """

    config_prefix = "MODEL.TTFNET"
    output_maps = ("heatmap", "ltrb", "iou")

    @configurable
    def __init__(
        self,
        *,
        alpha=0.54,
        beta=0.54,
        heatmap_loss_weight=1.0,
        box_loss_weight=5.0,
        iou_loss_weight=1.0,
        iou_alpha=0.5,
        **kwargs,
    ):
        """
        Args:
            alpha, beta: Gaussian extent of the heatmap and of the box samples.
            heatmap_loss_weight, box_loss_weight, iou_loss_weight: loss weights.
            iou_alpha: weight of the predicted IoU in the IoU-aware score.
            kwargs: :class:`PointDetector`'s arguments.
        """
        super().__init__(**kwargs)
        if not 0.0 <= iou_alpha <= 1.0:
            raise ConfigValueError(f"MODEL.TTFNET.IOU_AWARE.ALPHA must be in [0, 1]; got {iou_alpha}.")
        self.alpha, self.beta = alpha, beta
        self.iou_alpha = iou_alpha
        self.loss_weights = {"heatmap": heatmap_loss_weight, "box": box_loss_weight, "iou": iou_loss_weight}

    @classmethod
    def add_config(cls, cfg):
        return add_ttfnet_config(cfg)

    @classmethod
    def build_upsampler(cls, cfg, input_shapes):
        t = cfg.MODEL.TTFNET
        return TTFNetUpsampler(
            input_shapes,
            list(input_shapes),
            t.UPSAMPLE_CHANNELS,
            t.SHORTCUT_CONVS,
            t.DEFORMABLE,
            cfg.MODEL.CENTERX.NECK_NORM,
            t.SHORTCUT_KERNEL_SIZE,
        )

    @classmethod
    def build_heads(cls, cfg, in_channels):
        t = cfg.MODEL.TTFNET
        return TTFNetHeads(
            in_channels,
            t.NUM_CLASSES,
            t.HEATMAP_HEAD_CHANNELS,
            t.HEATMAP_HEAD_CONVS,
            t.BOX_HEAD_CHANNELS,
            t.BOX_HEAD_CONVS,
            t.HEATMAP_BIAS,
            t.BOX_BASE,
            t.BOX_HEAD_BIAS,
            cfg.MODEL.CENTERX.HEAD_NORM,
            drop_block_args(cfg),
            t.IOU_AWARE.ENABLED,
        )

    @classmethod
    def from_config(cls, cfg):
        t = cfg.MODEL.TTFNET
        return {
            **super().from_config(cfg),
            "alpha": t.ALPHA,
            "beta": t.BETA,
            "heatmap_loss_weight": t.HEATMAP_LOSS_WEIGHT,
            "box_loss_weight": t.BOX_LOSS_WEIGHT,
            "iou_loss_weight": t.IOU_AWARE.LOSS_WEIGHT,
            "iou_alpha": t.IOU_AWARE.ALPHA,
        }

    def losses(self, outputs: dict[str, torch.Tensor], gt: list[Instances]) -> dict[str, torch.Tensor]:
        """``loss_heatmap`` (focal), ``loss_box`` (weighted GIoU) and, when ``outputs``
        has ``iou`` (IoU-aware heads), ``loss_iou``, already weighted, FP32.

        Objects with ``gt_weights`` (mixup) weigh their box samples and the
        positive focal term at their centre by their weight; the box loss's
        divisor (sum of the unweighted sample weights), the negative focal terms
        and the focal divisor (the number of objects) are unchanged."""
        H, W = outputs["heatmap"].shape[-2:]
        boxes, classes, weights, window = batch_ground_truth(
            gt, self.device, lambda b, c: ttfnet_window(b, c, self.stride, (H, W), self.alpha, self.beta)
        )
        targets = ttfnet_targets(
            boxes, classes, self.num_classes, (H, W), self.stride, self.alpha, self.beta, window, weights
        )
        hm = penalty_reduced_focal_loss(outputs["heatmap"], targets["heatmap"], pos_weight=targets.get("pos_weight"))
        # GIoU at every cell, weighted: cells that are not samples have weight 0
        # (a dense, shape-static form of gathering the samples)
        ys, xs = torch.meshgrid(torch.arange(H, device=self.device), torch.arange(W, device=self.device), indexing="ij")
        pred_boxes = ltrb_to_boxes(outputs["ltrb"].float().permute(0, 2, 3, 1), xs, ys, self.stride)
        box = weighted_giou_loss(
            pred_boxes.reshape(-1, 4),
            targets["box"].permute(0, 2, 3, 1).reshape(-1, 4),
            targets["weight"].reshape(-1),
            targets["weight_sum"],
        )
        w = self.loss_weights
        losses = {"loss_heatmap": hm * w["heatmap"], "loss_box": box * w["box"]}
        if "iou" in outputs:
            # IoU-aware: BCE against the IoU of each (detached) predicted box with
            # its target, at the GIoU loss's samples with its weights and divisor
            iou = weighted_iou_aware_loss(
                outputs["iou"].permute(0, 2, 3, 1).reshape(-1),
                pred_boxes.reshape(-1, 4),
                targets["box"].permute(0, 2, 3, 1).reshape(-1, 4),
                targets["weight"].reshape(-1),
                targets["weight_sum"],
            )
            losses["loss_iou"] = iou * w["iou"]
        return losses

    score_maps = ("heatmap", "iou")

    def distillation_losses(self, student, teacher):
        """Heatmap MSE, box GIoU at the teacher's peaks
        (:func:`~centerx.modeling.losses.distillation.ttfnet_distillation_losses`)."""
        return ttfnet_distillation_losses(student, teacher, self.stride)

    def merge_flipped(
        self, outputs: dict[str, torch.Tensor], mirrored: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Heatmap (and IoU) probabilities and box distances averaged over the two
        passes. The mirror pass's left and right distances swap, and since a cell
        sits at x * stride (no +0.5), the mirror of cell x's point is one stride
        right of the point of the cell it is flipped back to: its (l, t, r, b)
        becomes (r - stride, t, l + stride, b) there, which decodes to exactly
        the mirrored box."""
        merged = super().merge_flipped(outputs, mirrored)
        left, top, right, bottom = mirrored["ltrb"].unbind(1)
        back = torch.stack((right - self.stride, top, left + self.stride, bottom), dim=1)
        merged["ltrb"] = (outputs["ltrb"] + back) / 2
        return merged

    def heatmap_scores(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """[N, C, H, W] detection scores in [0, 1]: sigmoid of the heatmap, fused
        with the predicted IoU when ``outputs`` has ``iou`` (:func:`ttfnet_scores`)."""
        return ttfnet_scores(outputs["heatmap"], outputs.get("iou"), self.iou_alpha)

    @classmethod
    def box_flags(cls, cfg, w_cells, h_cells, area_px, image_index):
        """``single_cell``: alpha * w / 2 and alpha * h / 2 both under one cell
        (MODEL.TTFNET.ALPHA), so the heatmap peak and the box's regression samples
        are its centre cell only. Degenerate boxes are not flagged."""
        alpha = cfg.MODEL.TTFNET.ALPHA
        return {"single_cell": (alpha * w_cells / 2 < 1) & (alpha * h_cells / 2 < 1) & (w_cells > 0) & (h_cells > 0)}

    def decode(self, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Peak masking + top-K of :meth:`heatmap_scores`; boxes from l, t, r, b at
        each peak (input pixels)."""
        return decode_ttfnet(
            outputs["heatmap"], outputs["ltrb"], self.test_topk, self.stride, outputs.get("iou"), self.iou_alpha
        )
