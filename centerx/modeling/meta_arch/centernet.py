"""CenterNet ("Objects as Points", Zhou et al. 2019) as a detectron2 meta-architecture."""
import logging
from typing import Dict, List

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone, detector_postprocess
from detectron2.structures import Boxes, ImageList, Instances
from detectron2.utils.events import get_event_storage
from detectron2.utils.logger import log_every_n_seconds
from torch import nn

from ..decode import decode_centernet
from ..heads import CenterNetHeads
from ..losses import masked_l1_loss, penalty_reduced_focal_loss
from ..necks import CenterNetUpsampler
from ..targets import centernet_targets

logger = logging.getLogger(__name__)


@META_ARCH_REGISTRY.register()
class CenterNet(nn.Module):
    """backbone -> upsampler (stride 4) -> heatmap / size / offset heads ->
    focal + L1 losses in training, peak masking + top-K decode at inference.

    Input: a list of detectron2 dicts with "image" ([3, H, W] in INPUT.FORMAT,
    0..255) and, in training, "instances" (gt_boxes in image pixels,
    gt_classes). Output in inference: one ``{"instances": Instances}`` per image
    with pred_boxes, scores and pred_classes in the original image's
    coordinates (its "height"/"width" when given).
    """

    @configurable
    def __init__(self, *, backbone, upsampler, heads, num_classes, pixel_mean, pixel_std,
                 min_overlap=0.7, radius_mode="corrected", max_objects=128, focal_alpha=2.0,
                 focal_beta=4.0, heatmap_loss_weight=1.0, wh_loss_weight=0.1,
                 offset_loss_weight=1.0, test_topk=100, score_thresh_test=0.01):
        super().__init__()
        self.backbone = backbone
        self.upsampler = upsampler
        self.heads = heads
        self.num_classes = num_classes
        self.in_feature = backbone._out_features[-1]
        self.stride = backbone.output_shape()[self.in_feature].stride // upsampler.upsample_factor
        self.min_overlap = min_overlap
        self.radius_mode = radius_mode
        self.max_objects = max_objects
        self.focal_alpha, self.focal_beta = focal_alpha, focal_beta
        self.loss_weights = {"heatmap": heatmap_loss_weight, "wh": wh_loss_weight, "offset": offset_loss_weight}
        self.test_topk = test_topk
        self.score_thresh_test = score_thresh_test
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self._num_skipped = 0

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg, ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN)))
        c = cfg.MODEL.CENTERNET
        feat = backbone.output_shape()[backbone._out_features[-1]]
        upsampler = CenterNetUpsampler(feat.channels, c.UPSAMPLE_CHANNELS, c.DEFORMABLE, cfg.MODEL.CENTERX.NECK_NORM)
        heads = CenterNetHeads(upsampler.out_channels, c.NUM_CLASSES, c.HEAD_CHANNELS, c.HEATMAP_BIAS)
        return {
            "backbone": backbone,
            "upsampler": upsampler,
            "heads": heads,
            "num_classes": c.NUM_CLASSES,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "min_overlap": c.MIN_OVERLAP,
            "radius_mode": c.RADIUS_MODE,
            "max_objects": c.MAX_OBJECTS,
            "focal_alpha": c.FOCAL_ALPHA,
            "focal_beta": c.FOCAL_BETA,
            "heatmap_loss_weight": c.HEATMAP_LOSS_WEIGHT,
            "wh_loss_weight": c.WH_LOSS_WEIGHT,
            "offset_loss_weight": c.OFFSET_LOSS_WEIGHT,
            "test_topk": cfg.TEST.DETECTIONS_PER_IMAGE,
            "score_thresh_test": c.SCORE_THRESH_TEST,
        }

    @property
    def device(self):
        return self.pixel_mean.device

    def preprocess_image(self, batched_inputs: List[Dict]) -> ImageList:
        """Normalise and pad to a multiple of the backbone's size divisibility (32)."""
        images = [(x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        return ImageList.from_tensors(images, self.backbone.size_divisibility)

    def predict(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Normalised [N, 3, H, W] -> raw head outputs at stride 4 (see CenterNetHeads)."""
        features = self.backbone(images)
        return self.heads(self.upsampler(features[self.in_feature]))

    def forward(self, batched_inputs: List[Dict]):
        images = self.preprocess_image(batched_inputs)
        outputs = self.predict(images.tensor)
        if self.training:
            if not all("instances" in x for x in batched_inputs):
                raise ValueError("CenterNet training needs 'instances' in every input dict.")
            gt = [x["instances"].to(self.device) for x in batched_inputs]
            return self.losses(outputs, gt)
        return self.postprocess(self.inference(outputs, images.image_sizes), batched_inputs, images.image_sizes)

    def losses(self, outputs: Dict[str, torch.Tensor], gt: List[Instances]) -> Dict[str, torch.Tensor]:
        """``loss_heatmap``, ``loss_wh``, ``loss_offset``, already weighted."""
        H, W = outputs["heatmap"].shape[-2:]
        targets = centernet_targets(
            [g.gt_boxes.tensor for g in gt], [g.gt_classes for g in gt], self.num_classes, (H, W),
            self.stride, self.min_overlap, self.radius_mode, self.max_objects,
        )
        self._log_skipped(targets["num_skipped"])
        hm = penalty_reduced_focal_loss(outputs["heatmap"], targets["heatmap"], self.focal_alpha, self.focal_beta)
        wh = masked_l1_loss(outputs["wh"], targets["index"], targets["wh"], targets["mask"])
        off = masked_l1_loss(outputs["offset"], targets["index"], targets["offset"], targets["mask"])
        w = self.loss_weights
        return {"loss_heatmap": hm * w["heatmap"], "loss_wh": wh * w["wh"], "loss_offset": off * w["offset"]}

    def _log_skipped(self, num: int) -> None:
        if num:
            self._num_skipped += num
            log_every_n_seconds(
                logging.WARNING,
                f"CenterNet targets: {self._num_skipped} objects skipped so far (more than "
                f"MODEL.CENTERNET.MAX_OBJECTS={self.max_objects} in an image, empty boxes, or "
                "centres outside the image).",
                n=60,
            )
            try:
                get_event_storage().put_scalar("skipped_objects", float(self._num_skipped), smoothing_hint=False)
            except AssertionError:  # called outside a detectron2 training loop
                pass

    def inference(self, outputs: Dict[str, torch.Tensor], image_sizes) -> List[Instances]:
        """Decode the top-K peaks of each image into ``Instances`` in input pixels."""
        det = decode_centernet(outputs["heatmap"], outputs["wh"], outputs["offset"], self.test_topk, self.stride)
        results = []
        for i, size in enumerate(image_sizes):
            keep = det["scores"][i] > self.score_thresh_test
            inst = Instances(size)
            boxes = Boxes(det["boxes"][i][keep])
            boxes.clip(size)
            inst.pred_boxes = boxes
            inst.scores = det["scores"][i][keep]
            inst.pred_classes = det["classes"][i][keep]
            results.append(inst)
        return results

    @staticmethod
    def postprocess(results: List[Instances], batched_inputs: List[Dict], image_sizes):
        """Rescale to each input's requested "height"/"width" (its original size)."""
        processed = []
        for inst, x, size in zip(results, batched_inputs, image_sizes):
            h = x.get("height", size[0])
            w = x.get("width", size[1])
            processed.append({"instances": detector_postprocess(inst, h, w)})
        return processed
