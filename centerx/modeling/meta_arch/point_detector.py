"""What CenterNet and TTFNet share: objects found as peaks of a per-class heatmap."""

import numpy as np
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone, detector_postprocess
from detectron2.structures import Boxes, ImageList, Instances
from torch import nn

from ...config import register_detector_config
from ..loss_balance import build_loss_balancer
from ..necks import build_coord_conv, build_spp


class PointDetector(nn.Module):
    """Skeleton of a one-stage detector that predicts dense maps and decodes the
    top-K heatmap peaks (no NMS): backbone -> [CoordConv, SPP on the feature the
    upsampler starts from] -> upsampler -> heads.

    Training: images -> :meth:`predict` -> :meth:`losses` against "instances".
    Inference: images -> :meth:`predict` -> :meth:`decode` -> score threshold,
    clipping -> ``Instances`` rescaled to each input's "height"/"width".
    When MODEL.LOSS_BALANCE is enabled, ``forward`` rescales the loss dict to
    constant magnitudes (:mod:`centerx.modeling.loss_balance`).

    The detector contract (docs/extending.md), what a subclass provides and what
    deployment, the runtimes, dataset validation and the Distiller read:

    - ``config_prefix``: its config node, e.g. "MODEL.CENTERNET", holding at least
      NUM_CLASSES and SCORE_THRESH_TEST (:meth:`config_node`), and
      :meth:`add_config`, which adds that node with its defaults;
    - :meth:`build_upsampler` (backbone ``output_shape()`` -> an upsampler with
      ``in_feature``, ``out_channels``, ``out_stride``, taking the features dict)
      and :meth:`build_heads` (upsampler channels -> module returning the dict of
      raw output maps);
    - ``output_maps``: the names of the raw maps the heads return;
      ``class_map``: the one of per-class score logits [N, C, H, W] (the
      Distiller's slices of classes, the raw graphs' "heatmap" output), and
      ``score_maps``: those :meth:`heatmap_scores` folds into the detection
      scores (the others are regression maps, exported as they are);
    - :meth:`losses`, :meth:`decode`, and optionally :meth:`heatmap_scores`,
      :meth:`merge_flipped` (flip test) and :meth:`distillation_losses`
      (distillation terms, one per head, for the Distiller) and :meth:`box_flags`
      (the boxes its targets treat specially, for ``./run.sh check-data``);
    - from the base: ``stride``, ``score_thresh_test``.

    Input: a list of detectron2 dicts with "image" ([3, H, W] in INPUT.FORMAT,
    0..255) and, in training, "instances" (gt_boxes in image pixels,
    gt_classes). Output in inference: one ``{"instances": Instances}`` per image
    with pred_boxes, scores and pred_classes in the original image's
    coordinates (its "height"/"width" when given).
    """

    # Config node of the detector's own keys, e.g. "MODEL.CENTERNET".
    config_prefix = ""
    # Names of the raw output maps the heads return.
    output_maps: tuple[str, ...] = ("heatmap",)
    # The raw output map of per-class score logits, [N, C, H, W].
    class_map: str = "heatmap"
    # The raw output maps that heatmap_scores folds into the detection scores.
    score_maps: tuple[str, ...] = ("heatmap",)

    def __init__(
        self,
        *,
        backbone,
        upsampler,
        heads,
        num_classes,
        pixel_mean,
        pixel_std,
        coord_conv=None,
        spp=None,
        test_topk=100,
        score_thresh_test=0.01,
        loss_balancer=None,
        channels_last=False,
        flip_test=False,
    ):
        super().__init__()
        self.channels_last = channels_last
        self.flip_test = flip_test
        self.backbone = backbone
        self.coord_conv = coord_conv if coord_conv is not None else nn.Identity()
        self.spp = spp if spp is not None else nn.Identity()
        self.upsampler = upsampler
        self.heads = heads
        self.stride = upsampler.out_stride
        self.loss_balancer = loss_balancer
        self.num_classes = num_classes
        self.test_topk = test_topk
        self.score_thresh_test = score_thresh_test
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @classmethod
    def config_node(cls, cfg):
        """The detector's own config node (``config_prefix``), e.g. ``cfg.MODEL.CENTERNET``."""
        if not cls.config_prefix:
            raise NotImplementedError(f"{cls.__name__} declares no config_prefix (its config node).")
        node = cfg
        for part in cls.config_prefix.split("."):
            node = node[part]
        return node

    def __init_subclass__(cls, **kwargs):
        """A detector with a config node is entered where ``add_centerx_config``
        finds it (centerx.config.DETECTOR_CONFIGS), when its class is defined."""
        super().__init_subclass__(**kwargs)
        if cls.config_prefix:
            register_detector_config(cls)

    @classmethod
    def add_config(cls, cfg):
        """Add the detector's config node (``config_prefix``) with its defaults to
        ``cfg`` in place and return it. ``add_centerx_config`` calls it for every
        registered detector whose node the config lacks."""
        raise NotImplementedError(f"{cls.__name__} declares no add_config (its config keys).")

    @classmethod
    def has_config(cls, cfg) -> bool:
        """Whether ``cfg`` has the detector's config node."""
        node = cfg
        for part in cls.config_prefix.split("."):
            if part not in node:
                return False
            node = node[part]
        return True

    @classmethod
    def build_upsampler(cls, cfg, input_shapes: dict[str, ShapeSpec]) -> nn.Module:
        """The upsampler on the backbone's ``output_shape()`` ``input_shapes``."""
        raise NotImplementedError

    @classmethod
    def build_heads(cls, cfg, in_channels: int) -> nn.Module:
        """The heads on the upsampler's ``in_channels``-channel map."""
        raise NotImplementedError

    @classmethod
    def from_config(cls, cfg) -> dict:
        """The constructor arguments every subclass takes the same way from a
        config; subclasses add their own (targets, loss weights)."""
        node = cls.config_node(cfg)
        backbone = build_backbone(cfg, ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN)))
        upsampler = cls.build_upsampler(cfg, backbone.output_shape())
        pre_neck_channels = backbone.output_shape()[upsampler.in_feature].channels
        return {
            "backbone": backbone,
            "upsampler": upsampler,
            "heads": cls.build_heads(cfg, upsampler.out_channels),
            "coord_conv": build_coord_conv(cfg, pre_neck_channels),
            "spp": build_spp(cfg, pre_neck_channels),
            "num_classes": node.NUM_CLASSES,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "test_topk": cfg.TEST.DETECTIONS_PER_IMAGE,
            "score_thresh_test": node.SCORE_THRESH_TEST,
            "loss_balancer": build_loss_balancer(cfg),
            "channels_last": cfg.MODEL.CENTERX.CHANNELS_LAST,
            "flip_test": cfg.TEST.FLIP_TEST,
        }

    @property
    def device(self):
        return self.pixel_mean.device

    def preprocess_image(self, batched_inputs: list[dict]) -> ImageList:
        """Normalise and pad to a multiple of the backbone's size divisibility (32);
        channels-last layout when MODEL.CENTERX.CHANNELS_LAST."""
        images = [(x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        images = ImageList.from_tensors(images, self.backbone.size_divisibility)
        if self.channels_last:
            images.tensor = images.tensor.contiguous(memory_format=torch.channels_last)
        return images

    def predict(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Normalised [N, 3, H, W] -> dict of raw output maps (used by the exporters)."""
        return self.predict_with_features(images)[0]

    def predict_with_features(self, images: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Normalised [N, 3, H, W] -> (raw output maps :attr:`output_maps` at
        ``stride``, named intermediate maps: the backbone's outputs and
        "upsampler", the map the heads read), as described by :meth:`feature_shapes`."""
        features = self.backbone(images)
        first = self.upsampler.in_feature
        x = self.upsampler({**features, first: self.spp(self.coord_conv(features[first]))})
        return self.heads(x), {**features, "upsampler": x}

    def feature_shapes(self) -> dict[str, ShapeSpec]:
        """Channels and stride (input pixels per cell) of each map
        :meth:`predict_with_features` names."""
        shapes = dict(self.backbone.output_shape())
        shapes["upsampler"] = ShapeSpec(channels=self.upsampler.out_channels, stride=self.stride)
        return shapes

    def losses(self, outputs: dict[str, torch.Tensor], gt: list[Instances]) -> dict[str, torch.Tensor]:
        """Raw output maps + ground truth -> dict of weighted losses.

        ``gt`` stays where the data loader put it (host memory): the targets are
        padded and sized there, then built on the model's device
        (:func:`~centerx.modeling.targets.batch_ground_truth`)."""
        raise NotImplementedError

    def decode(self, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Raw output maps -> ``boxes`` [N, K, 4] in input pixels of the padded
        batch, ``scores`` [N, K], ``classes`` [N, K] int64 (K = ``test_topk``)."""
        raise NotImplementedError

    def distillation_losses(
        self, student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Distillation terms between this detector's raw maps and a teacher's of the
        same class (the Distiller's ``loss_kd_<teacher>_<head>``).

        Args:
            student, teacher: raw output maps restricted to the taught classes
                (``heatmap`` [B, K, H, W] and the regression maps), same grid.

        Returns:
            {head: unweighted scalar}.
        """
        raise NotImplementedError(
            f"{type(self).__name__} defines no distillation losses and cannot be a Distiller's student."
        )

    def heatmap_scores(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Raw output maps -> [N, C, H, W] detection scores in [0, 1], whose 3x3
        peaks ``decode`` takes: the sigmoid of the class-score logits (``class_map``)."""
        return torch.sigmoid(outputs[self.class_map])

    @classmethod
    def box_flags(
        cls, cfg, w_cells: np.ndarray, h_cells: np.ndarray, area_px: np.ndarray, image_index: np.ndarray
    ) -> dict[str, np.ndarray]:
        """The boxes of a dataset that this detector's targets treat specially, for
        ``./run.sh check-data`` (centerx.data.statistics): {flag name: [B] bool}.

        Args:
            w_cells, h_cells: [B] box sizes in output cells at the training scale.
            area_px: [B] box areas in input pixels at the training scale.
            image_index: [B] the image each box belongs to.
        The base has none."""
        return {}

    def predict_flip_averaged(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Flip test-time augmentation (CenterNet's ``--flip_test``): the raw maps of
        ``images`` merged with those of their mirror images by :meth:`merge_flipped`,
        both passes in one batch of 2N.

        Args:
            images: normalised [N, 3, H, W].

        Returns:
            raw output maps as :meth:`predict`, decodable by :meth:`decode`.
        """
        n = images.shape[0]
        both = self.predict(torch.cat([images, images.flip(-1)]))
        return self.merge_flipped({k: v[:n] for k, v in both.items()}, {k: v[n:].flip(-1) for k, v in both.items()})

    def merge_flipped(
        self, outputs: dict[str, torch.Tensor], mirrored: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Merge the raw maps of images and of their mirror images.

        Args:
            outputs: raw maps of the images; mirrored: raw maps of the mirror
                images, flipped back along W (so cell (i, j) of both describes the
                same image cell; channels that depend on the direction, such as
                TTFNet's left / right distances, are still mirrored).

        Returns:
            raw maps whose score maps (:attr:`score_maps`) hold the logit of the
            mean of the two passes' sigmoids; subclasses add their regression maps.
        """
        return {
            k: torch.logit((torch.sigmoid(outputs[k].float()) + torch.sigmoid(mirrored[k].float())) / 2)
            for k in self.score_maps
            if k in outputs
        }

    def forward(self, batched_inputs: list[dict]):
        images = self.preprocess_image(batched_inputs)
        if self.training:
            if not all("instances" in x for x in batched_inputs):
                raise ValueError(f"{type(self).__name__} training needs 'instances' in every input dict.")
            losses = self.losses(self.predict(images.tensor), [x["instances"] for x in batched_inputs])
            return self.loss_balancer(losses) if self.loss_balancer is not None else losses
        outputs = self.predict_flip_averaged(images.tensor) if self.flip_test else self.predict(images.tensor)
        return self.postprocess(self.inference(outputs, images.image_sizes), batched_inputs, images.image_sizes)

    def inference(self, outputs: dict[str, torch.Tensor], image_sizes) -> list[Instances]:
        """Decode the top-K peaks of each image into ``Instances`` in input pixels,
        dropping scores not above ``score_thresh_test`` and clipping to the image."""
        det = self.decode(outputs)
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
    def postprocess(results: list[Instances], batched_inputs: list[dict], image_sizes):
        """Rescale to each input's requested "height"/"width" (its original size)."""
        processed = []
        for inst, x, size in zip(results, batched_inputs, image_sizes):
            h = x.get("height", size[0])
            w = x.get("width", size[1])
            processed.append({"instances": detector_postprocess(inst, h, w)})
        return processed
