"""TTFNet ("Training-Time-Friendly Network for Real-Time Object Detection",
Liu et al., AAAI 2020) as a detectron2 meta-architecture."""
from typing import Dict, List

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import Instances

from ..decode import decode_ttfnet, ltrb_to_boxes
from ..heads import TTFNetHeads
from ..losses import penalty_reduced_focal_loss, weighted_giou_loss
from ..necks import TTFNetUpsampler
from ..targets import batch_ground_truth, ttfnet_targets, ttfnet_window
from .point_detector import PointDetector


@META_ARCH_REGISTRY.register()
class TTFNet(PointDetector):
    """backbone -> upsampler with shortcuts (stride 4) -> heatmap / ltrb heads ->
    focal loss on elliptical-Gaussian heatmaps + GIoU loss on Gaussian-weighted
    box samples in training, peak masking + top-K decode at inference.

    Inputs and outputs as :class:`PointDetector`.
    """

    @configurable
    def __init__(self, *, backbone, upsampler, heads, num_classes, pixel_mean, pixel_std, alpha=0.54, beta=0.54,
                 heatmap_loss_weight=1.0, box_loss_weight=5.0, test_topk=100, score_thresh_test=0.01,
                 loss_balancer=None):
        super().__init__(backbone=backbone, num_classes=num_classes, pixel_mean=pixel_mean, pixel_std=pixel_std,
                         test_topk=test_topk, score_thresh_test=score_thresh_test, loss_balancer=loss_balancer)
        self.upsampler = upsampler
        self.heads = heads
        self.stride = upsampler.out_stride
        self.alpha, self.beta = alpha, beta
        self.loss_weights = {"heatmap": heatmap_loss_weight, "box": box_loss_weight}

    @classmethod
    def from_config(cls, cfg):
        t = cfg.MODEL.TTFNET
        common = cls.common_config(cfg, t.NUM_CLASSES, t.SCORE_THRESH_TEST)
        backbone = common["backbone"]
        upsampler = TTFNetUpsampler(backbone.output_shape(), backbone._out_features, t.UPSAMPLE_CHANNELS,
                                    t.SHORTCUT_CONVS, t.DEFORMABLE, cfg.MODEL.CENTERX.NECK_NORM)
        heads = TTFNetHeads(upsampler.out_channels, t.NUM_CLASSES, t.HEATMAP_HEAD_CHANNELS, t.HEATMAP_HEAD_CONVS,
                            t.BOX_HEAD_CHANNELS, t.BOX_HEAD_CONVS, t.HEATMAP_BIAS, t.BOX_BASE, t.BOX_HEAD_BIAS,
                            cfg.MODEL.CENTERX.HEAD_NORM)
        return {
            **common,
            "upsampler": upsampler,
            "heads": heads,
            "alpha": t.ALPHA,
            "beta": t.BETA,
            "heatmap_loss_weight": t.HEATMAP_LOSS_WEIGHT,
            "box_loss_weight": t.BOX_LOSS_WEIGHT,
        }

    def predict(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Normalised [N, 3, H, W] -> raw head outputs at stride 4 (see TTFNetHeads)."""
        return self.heads(self.upsampler(self.backbone(images)))

    def losses(self, outputs: Dict[str, torch.Tensor], gt: List[Instances]) -> Dict[str, torch.Tensor]:
        """``loss_heatmap`` (focal) and ``loss_box`` (weighted GIoU), already weighted, FP32."""
        H, W = outputs["heatmap"].shape[-2:]
        boxes, classes, window = batch_ground_truth(
            gt, self.device, lambda b, c: ttfnet_window(b, c, self.stride, self.alpha, self.beta))
        targets = ttfnet_targets(boxes, classes, self.num_classes, (H, W), self.stride, self.alpha, self.beta, window)
        hm = penalty_reduced_focal_loss(outputs["heatmap"], targets["heatmap"])
        # GIoU at every cell, weighted: cells that are not samples have weight 0
        # (a dense, shape-static form of gathering the samples)
        ys, xs = torch.meshgrid(torch.arange(H, device=self.device), torch.arange(W, device=self.device),
                                indexing="ij")
        pred_boxes = ltrb_to_boxes(outputs["ltrb"].float().permute(0, 2, 3, 1), xs, ys, self.stride)
        box = weighted_giou_loss(pred_boxes.reshape(-1, 4), targets["box"].permute(0, 2, 3, 1).reshape(-1, 4),
                                 targets["weight"].reshape(-1))
        w = self.loss_weights
        return {"loss_heatmap": hm * w["heatmap"], "loss_box": box * w["box"]}

    def decode(self, outputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Peak masking + top-K; boxes from l, t, r, b at each peak (input pixels)."""
        return decode_ttfnet(outputs["heatmap"], outputs["ltrb"], self.test_topk, self.stride)
