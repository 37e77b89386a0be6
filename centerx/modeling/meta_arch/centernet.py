"""CenterNet ("Objects as Points", Zhou et al. 2019) as a detectron2 meta-architecture."""

import logging
import time

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import Instances
from detectron2.utils.events import get_event_storage

from ...config import ConfigValueError
from ...config.model import add_centernet_config
from ..decode import decode_centernet
from ..dropblock import drop_block_args
from ..heads import CenterNetHeads
from ..losses import masked_l1_loss, penalty_reduced_focal_loss
from ..losses.distillation import centernet_distillation_losses
from ..necks import CenterNetUpsampler, DLAUpsampler
from ..targets import batch_ground_truth, centernet_targets, centernet_window, gaussian_radius
from .point_detector import PointDetector

logger = logging.getLogger(__name__)

# skipped objects are read back from the device and reported at most this often
_SKIP_LOG_PERIOD_S = 60.0


@META_ARCH_REGISTRY.register()
class CenterNet(PointDetector):
    """backbone -> [CoordConv, SPP on its last feature] -> upsampler (stride 4) ->
    heatmap / size / offset heads -> focal + L1 losses in training, peak masking
    + top-K decode at inference.

    Inputs and outputs as :class:`PointDetector`. Raw maps: ``heatmap`` [N, C, H, W]
    logits, ``wh`` and ``offset`` [N, 2, H, W] in output cells.
    """

    config_prefix = "MODEL.CENTERNET"
    output_maps = ("heatmap", "wh", "offset")

    @configurable
    def __init__(
        self,
        *,
        min_overlap=0.7,
        radius_mode="original",
        max_objects=128,
        focal_alpha=2.0,
        focal_beta=4.0,
        heatmap_loss_weight=1.0,
        wh_loss_weight=0.1,
        offset_loss_weight=1.0,
        **kwargs,
    ):
        """
        Args:
            min_overlap, radius_mode: the Gaussian radius rule
                (:func:`~centerx.modeling.targets.gaussian_radius`).
            max_objects: objects per image the size / offset targets keep.
            focal_alpha, focal_beta: exponents of the penalty-reduced focal loss.
            heatmap_loss_weight, wh_loss_weight, offset_loss_weight: loss weights.
            kwargs: :class:`PointDetector`'s arguments.
        """
        super().__init__(**kwargs)
        self.min_overlap = min_overlap
        self.radius_mode = radius_mode
        self.max_objects = max_objects
        self.focal_alpha, self.focal_beta = focal_alpha, focal_beta
        self.loss_weights = {"heatmap": heatmap_loss_weight, "wh": wh_loss_weight, "offset": offset_loss_weight}
        self._num_skipped = 0  # last count read back to the host
        self._num_skipped_device = None
        self._last_skip_report = time.monotonic()

    @classmethod
    def add_config(cls, cfg):
        return add_centernet_config(cfg)

    @classmethod
    def build_upsampler(cls, cfg, input_shapes):
        c = cfg.MODEL.CENTERNET
        if c.UPSAMPLER == "dla_up":
            return DLAUpsampler(input_shapes, c.DEFORMABLE, cfg.MODEL.CENTERX.NECK_NORM)
        if c.UPSAMPLER != "deconv":
            raise ConfigValueError(f"MODEL.CENTERNET.UPSAMPLER '{c.UPSAMPLER}' is not 'deconv' or 'dla_up'.")
        return CenterNetUpsampler(input_shapes, c.UPSAMPLE_CHANNELS, c.DEFORMABLE, cfg.MODEL.CENTERX.NECK_NORM)

    @classmethod
    def build_heads(cls, cfg, in_channels):
        c = cfg.MODEL.CENTERNET
        return CenterNetHeads(
            in_channels,
            c.NUM_CLASSES,
            c.HEAD_CHANNELS,
            c.HEATMAP_BIAS,
            cfg.MODEL.CENTERX.HEAD_NORM,
            drop_block_args(cfg),
        )

    @classmethod
    def from_config(cls, cfg):
        c = cfg.MODEL.CENTERNET
        return {
            **super().from_config(cfg),
            "min_overlap": c.MIN_OVERLAP,
            "radius_mode": c.RADIUS_MODE,
            "max_objects": c.MAX_OBJECTS,
            "focal_alpha": c.FOCAL_ALPHA,
            "focal_beta": c.FOCAL_BETA,
            "heatmap_loss_weight": c.HEATMAP_LOSS_WEIGHT,
            "wh_loss_weight": c.WH_LOSS_WEIGHT,
            "offset_loss_weight": c.OFFSET_LOSS_WEIGHT,
        }

    def losses(self, outputs: dict[str, torch.Tensor], gt: list[Instances]) -> dict[str, torch.Tensor]:
        """``loss_heatmap``, ``loss_wh``, ``loss_offset``, already weighted.

        Objects with ``gt_weights`` (mixup) weigh their size and offset L1 terms
        and the positive focal term at their centre by their weight; negative
        focal terms and the divisor (the number of objects) are unchanged."""
        H, W = outputs["heatmap"].shape[-2:]
        boxes, classes, weights, window = batch_ground_truth(
            gt,
            self.device,
            lambda b, c: centernet_window(b, c, self.stride, (H, W), self.min_overlap, self.radius_mode),
        )
        targets = centernet_targets(
            boxes,
            classes,
            self.num_classes,
            (H, W),
            self.stride,
            self.min_overlap,
            self.radius_mode,
            self.max_objects,
            window,
            weights,
        )
        self._log_skipped(targets["num_skipped"])
        hm = penalty_reduced_focal_loss(
            outputs["heatmap"], targets["heatmap"], self.focal_alpha, self.focal_beta, targets.get("pos_weight")
        )
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

    def merge_flipped(
        self, outputs: dict[str, torch.Tensor], mirrored: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """As the original CenterNet's flip test: heatmap probabilities and sizes
        averaged over the two passes, the sub-cell offset of the unflipped pass
        only (a mirrored offset o would be 1 - o of the neighbouring cell)."""
        merged = super().merge_flipped(outputs, mirrored)
        merged["wh"] = (outputs["wh"] + mirrored["wh"]) / 2
        merged["offset"] = outputs["offset"]
        return merged

    def distillation_losses(self, student, teacher):
        """Heatmap MSE, size / offset L1 at the teacher's peaks
        (:func:`~centerx.modeling.losses.distillation.centernet_distillation_losses`)."""
        return centernet_distillation_losses(student, teacher)

    @classmethod
    def box_flags(cls, cfg, w_cells, h_cells, area_px, image_index):
        """``radius_0``: Gaussian radius 0 at MODEL.CENTERNET.RADIUS_MODE and
        MIN_OVERLAP (one positive cell, every neighbour a full negative);
        ``over_max_objects``: beyond MAX_OBJECTS in their image (its smallest
        objects, which get no size / offset target). Degenerate boxes are not flagged."""
        c = cfg.MODEL.CENTERNET
        radius = (
            gaussian_radius(
                torch.from_numpy(np.ceil(h_cells)), torch.from_numpy(np.ceil(w_cells)), c.MIN_OVERLAP, c.RADIUS_MODE
            )
            .clamp(min=0)
            .long()
            .numpy()
        )
        return {
            "radius_0": (radius == 0) & (w_cells > 0) & (h_cells > 0),
            "over_max_objects": beyond_max_objects(image_index.astype(int), area_px, c.MAX_OBJECTS),
        }

    def decode(self, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Peak masking + top-K; boxes from size and offset at each peak (input pixels)."""
        return decode_centernet(outputs["heatmap"], outputs["wh"], outputs["offset"], self.test_topk, self.stride)


def beyond_max_objects(image: np.ndarray, area: np.ndarray, max_objects: int) -> np.ndarray:
    """[B] bool: the boxes outside the ``max_objects`` largest (by ``area``) of their
    ``image`` (CenterNet's targets keep the largest)."""
    order = np.lexsort((-area, image))  # by image, largest first
    rank = np.empty_like(order)
    sorted_images = image[order]
    starts = np.searchsorted(sorted_images, sorted_images, side="left")
    rank[order] = np.arange(len(order)) - starts
    return rank >= max_objects
