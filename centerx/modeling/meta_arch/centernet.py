"""CenterNet ("Objects as Points", Zhou et al. 2019) as a detectron2 meta-architecture."""
import logging
import time
from typing import Dict, List, Tuple

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import Instances
from detectron2.utils.events import get_event_storage
from torch import nn

from ..decode import decode_centernet
from ..dropblock import drop_block_args
from ..heads import CenterNetHeads
from ..losses import masked_l1_loss, penalty_reduced_focal_loss
from ..necks import CenterNetUpsampler, build_coord_conv, build_spp
from ..targets import batch_ground_truth, centernet_targets, centernet_window
from .point_detector import PointDetector

logger = logging.getLogger(__name__)

# skipped objects are read back from the device and reported at most this often
_SKIP_LOG_PERIOD_S = 60.0


@META_ARCH_REGISTRY.register()
class CenterNet(PointDetector):
    """backbone -> [CoordConv, SPP on its last feature] -> upsampler (stride 4) ->
    heatmap / size / offset heads -> focal + L1 losses in training, peak masking
    + top-K decode at inference.

    Inputs and outputs as :class:`PointDetector`. ``coord_conv`` and ``spp``
    (:mod:`centerx.modeling.necks`) map the last backbone feature to one of the
    same shape; None = identity.
    """

    @configurable
    def __init__(self, *, backbone, upsampler, heads, num_classes, pixel_mean, pixel_std,
                 min_overlap=0.7, radius_mode="original", max_objects=128, focal_alpha=2.0,
                 focal_beta=4.0, heatmap_loss_weight=1.0, wh_loss_weight=0.1,
                 offset_loss_weight=1.0, test_topk=100, score_thresh_test=0.01, loss_balancer=None,
                 coord_conv=None, spp=None, channels_last=False, flip_test=False):
        super().__init__(backbone=backbone, num_classes=num_classes, pixel_mean=pixel_mean, pixel_std=pixel_std,
                         test_topk=test_topk, score_thresh_test=score_thresh_test, loss_balancer=loss_balancer,
                         channels_last=channels_last, flip_test=flip_test)
        self.coord_conv = coord_conv if coord_conv is not None else nn.Identity()
        self.spp = spp if spp is not None else nn.Identity()
        self.upsampler = upsampler
        self.heads = heads
        self.in_feature = list(backbone.output_shape())[-1]  # the deepest (last) feature
        self.stride = backbone.output_shape()[self.in_feature].stride // upsampler.upsample_factor
        self.min_overlap = min_overlap
        self.radius_mode = radius_mode
        self.max_objects = max_objects
        self.focal_alpha, self.focal_beta = focal_alpha, focal_beta
        self.loss_weights = {"heatmap": heatmap_loss_weight, "wh": wh_loss_weight, "offset": offset_loss_weight}
        self._num_skipped = 0  # last count read back to the host
        self._num_skipped_device = None
        self._last_skip_report = time.monotonic()

    @classmethod
    def from_config(cls, cfg):
        c = cfg.MODEL.CENTERNET
        common = cls.common_config(cfg, c.NUM_CLASSES, c.SCORE_THRESH_TEST)
        backbone = common["backbone"]
        feat = list(backbone.output_shape().values())[-1]
        upsampler = CenterNetUpsampler(feat.channels, c.UPSAMPLE_CHANNELS, c.DEFORMABLE, cfg.MODEL.CENTERX.NECK_NORM)
        heads = CenterNetHeads(upsampler.out_channels, c.NUM_CLASSES, c.HEAD_CHANNELS, c.HEATMAP_BIAS,
                               cfg.MODEL.CENTERX.HEAD_NORM, drop_block_args(cfg))
        return {
            **common,
            "coord_conv": build_coord_conv(cfg, feat.channels),
            "spp": build_spp(cfg, feat.channels),
            "upsampler": upsampler,
            "heads": heads,
            "min_overlap": c.MIN_OVERLAP,
            "radius_mode": c.RADIUS_MODE,
            "max_objects": c.MAX_OBJECTS,
            "focal_alpha": c.FOCAL_ALPHA,
            "focal_beta": c.FOCAL_BETA,
            "heatmap_loss_weight": c.HEATMAP_LOSS_WEIGHT,
            "wh_loss_weight": c.WH_LOSS_WEIGHT,
            "offset_loss_weight": c.OFFSET_LOSS_WEIGHT,
        }

    def predict_with_features(self, images: torch.Tensor) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
        """Normalised [N, 3, H, W] -> (raw head outputs at stride 4 (see CenterNetHeads),
        the backbone's outputs plus "upsampler", the map the heads read)."""
        features = self.backbone(images)
        x = self.upsampler(self.spp(self.coord_conv(features[self.in_feature])))
        return self.heads(x), {**features, "upsampler": x}

    def losses(self, outputs: Dict[str, torch.Tensor], gt: List[Instances]) -> Dict[str, torch.Tensor]:
        """``loss_heatmap``, ``loss_wh``, ``loss_offset``, already weighted.

        Objects with ``gt_weights`` (mixup) weigh their size and offset L1 terms
        and the positive focal term at their centre by their weight; negative
        focal terms and the divisor (the number of objects) are unchanged."""
        H, W = outputs["heatmap"].shape[-2:]
        boxes, classes, weights, window = batch_ground_truth(
            gt, self.device, lambda b, c: centernet_window(b, c, self.stride, (H, W), self.min_overlap, self.radius_mode))
        targets = centernet_targets(boxes, classes, self.num_classes, (H, W), self.stride, self.min_overlap,
                                    self.radius_mode, self.max_objects, window, weights)
        self._log_skipped(targets["num_skipped"])
        hm = penalty_reduced_focal_loss(outputs["heatmap"], targets["heatmap"], self.focal_alpha, self.focal_beta,
                                        targets.get("pos_weight"))
        object_weight = targets.get("object_weight")
        wh = masked_l1_loss(outputs["wh"], targets["index"], targets["wh"], targets["mask"], object_weight)
        off = masked_l1_loss(outputs["offset"], targets["index"], targets["offset"], targets["mask"], object_weight)
        w = self.loss_weights
        return {"loss_heatmap": hm * w["heatmap"], "loss_wh": wh * w["wh"], "loss_offset": off * w["offset"]}

    @property
    def num_skipped_objects(self) -> int:
        """Objects skipped by the targets so far (reads the device counter)."""
        return int(self._num_skipped_device) if self._num_skipped_device is not None else 0

    def _log_skipped(self, num: torch.Tensor) -> None:
        """Count skipped objects on the device; read the count back (one host
        sync) and report it at most once every ``_SKIP_LOG_PERIOD_S`` seconds."""
        self._num_skipped_device = num + (self._num_skipped_device if self._num_skipped_device is not None else 0)
        now = time.monotonic()
        if now - self._last_skip_report < _SKIP_LOG_PERIOD_S:
            return
        self._last_skip_report = now
        total = int(self._num_skipped_device)
        if total == self._num_skipped:
            return
        self._num_skipped = total
        logger.warning(
            f"CenterNet targets: {total} objects skipped so far (more than "
            f"MODEL.CENTERNET.MAX_OBJECTS={self.max_objects} in an image, empty boxes, or "
            "centres outside the image)."
        )
        try:
            get_event_storage().put_scalar("skipped_objects", float(total), smoothing_hint=False)
        except AssertionError:  # called outside a detectron2 training loop
            pass

    def merge_flipped(self, outputs: Dict[str, torch.Tensor], mirrored: Dict[str, torch.Tensor]
                      ) -> Dict[str, torch.Tensor]:
        """As the original CenterNet's flip test: heatmap probabilities and sizes
        averaged over the two passes, the sub-cell offset of the unflipped pass
        only (a mirrored offset o would be 1 - o of the neighbouring cell)."""
        merged = super().merge_flipped(outputs, mirrored)
        merged["wh"] = (outputs["wh"] + mirrored["wh"]) / 2
        merged["offset"] = outputs["offset"]
        return merged

    def decode(self, outputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Peak masking + top-K; boxes from size and offset at each peak (input pixels)."""
        return decode_centernet(outputs["heatmap"], outputs["wh"], outputs["offset"], self.test_topk, self.stride)
