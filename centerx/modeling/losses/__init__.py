from .focal import penalty_reduced_focal_loss
from .giou import generalized_iou, paired_iou, weighted_giou_loss
from .iou_aware import iou_targets, weighted_iou_aware_loss
from .regression import gather_at, masked_l1_loss

__all__ = [
    "penalty_reduced_focal_loss",
    "gather_at",
    "masked_l1_loss",
    "generalized_iou",
    "paired_iou",
    "weighted_giou_loss",
    "iou_targets",
    "weighted_iou_aware_loss",
]
