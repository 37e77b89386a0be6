"""The export-friendly forward shared by every exporter and runtime (the export contract: docs/design.md)."""

import torch
from detectron2.modeling import build_model
from torch import nn

from ..config import ConfigValueError
from ..engine.ema import load_weights_for_eval
from ..modeling.decode import peak_mask
from ..modeling.meta_arch.build import detector_config
from ..modeling.meta_arch.point_detector import PointDetector


class ExportError(RuntimeError):
    """A model or setting that the chosen export format cannot express."""


class DeployModel(nn.Module):
    """Pixels in, detections (or peak-masked maps) out, in one traceable forward.

    Input ``images``: float [N, 3, H, W], pixel values 0..255 in the channel
    order of ``cfg.INPUT.FORMAT``, H and W multiples of 32. Normalisation by
    the model's ``pixel_mean`` / ``pixel_std`` happens inside.

    Output (an ordered dict; its keys are the exported output names):

    - decoded (default): ``boxes`` [N, K, 4] (x1, y1, x2, y2) in input pixels,
      ``scores`` [N, K] in [0, 1], ``classes`` [N, K] int64,
      K = ``TEST.DETECTIONS_PER_IMAGE``. Rows are sorted by score; the user
      only thresholds them.
    - ``raw=True`` (centerX-compatible): ``heatmap`` [N, C, H/4, W/4]
      peak-masked scores (the model's ``heatmap_scores``: the sigmoid, or for an
      IoU-aware TTFNet the score fused with the predicted IoU; 0 off the 3x3
      local maxima), then the meta-architecture's regression maps as its
      ``predict`` names them (CenterNet: ``wh``, ``offset`` in output-stride
      cells; TTFNet: ``ltrb`` in pixels). Maps folded into the scores (TTFNet's
      ``iou``) are not output: the raw outputs decode as without them.

    ``flip_test=True`` (EXPORT.FLIP_TEST) folds flip test-time augmentation
    into the graph: the maps of each image and of its mirror image, merged by
    the model's ``merge_flipped``, as TEST.FLIP_TEST does in evaluation.

    Each meta-architecture (a :class:`PointDetector`) supplies its own
    ``predict`` (normalised images -> raw maps, class-score logits under its
    ``class_map``), ``heatmap_scores`` and ``decode`` (peak masking + top-K of
    ``centerx.modeling.decode``), so the graph runs the evaluation code itself.
    """

    def __init__(self, model: PointDetector, raw: bool = False, flip_test: bool = False):
        super().__init__()
        if not isinstance(model, PointDetector):
            raise TypeError(
                f"Deployment supports the point detectors of centerX (CenterNet, TTFNet); got "
                f"{type(model).__name__} (MODEL.META_ARCHITECTURE)."
            )
        self.model = model
        self.raw = raw
        self.flip_test = flip_test

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (images - self.model.pixel_mean) / self.model.pixel_std
        maps = self.model.predict_flip_averaged(x) if self.flip_test else self.model.predict(x)
        if self.raw:
            return peak_masked(self.model, maps)
        return self.model.decode(maps)

    @property
    def deformable_key(self) -> str:
        """The config key that switches this meta-architecture's deformable convs."""
        return f"{self.model.config_prefix}.DEFORMABLE"


def peak_masked(model: PointDetector, maps: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``model``'s raw maps -> ``heatmap``: the peak-masked detection scores
    [N, C, h, w] (``model.heatmap_scores``), then the maps not folded into them
    (not in ``model.score_maps``), i.e. the regression maps."""
    out = {"heatmap": peak_mask(model.heatmap_scores(maps))}
    out.update((k, v) for k, v in maps.items() if k not in model.score_maps)
    return out


def decode_raw_outputs(model: PointDetector, raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Decode the raw outputs of an exported graph with the meta-architecture's
    own ``decode``.

    ``decode`` takes class-score logits (under the model's ``class_map``); the
    raw ``heatmap`` output holds the peak-masked scores. ``logit`` inverts the sigmoid (masked cells become -inf, whose
    sigmoid is 0 again) and peak masking is idempotent, so this returns the
    decoded outputs of the same graph up to float rounding of the scores. For
    an IoU-aware TTFNet the raw scores are already fused with the IoU and the
    raw outputs have no ``iou``, so ``decode`` takes them as plain scores.

    Args:
        raw: ``heatmap`` [N, C, h, w] peak-masked scores plus the regression maps.

    Returns:
        ``boxes`` [N, K, 4] input pixels, ``scores`` [N, K], ``classes`` [N, K] int64.
    """
    maps = {k: v for k, v in raw.items() if k != "heatmap"}
    maps[model.class_map] = torch.logit(raw["heatmap"].float())
    return model.decode(maps)


def check_input_size(size) -> tuple[int, int]:
    """``EXPORT.INPUT_SIZE`` -> (height, width), both positive multiples of 32."""
    h, w = (int(s) for s in size)
    if h <= 0 or w <= 0 or h % 32 or w % 32:
        raise ConfigValueError(f"EXPORT.INPUT_SIZE must be (height, width) in multiples of 32; got {tuple(size)}.")
    return h, w


def deploy_config(cfg):
    """The config of the detector that gets deployed: for a ``Distiller``, its
    student (whose config its checkpoints load into); else ``cfg`` itself."""
    return detector_config(cfg)


def build_deploy_model(cfg, raw: bool = False, allow_random: bool = False) -> DeployModel:
    """The config's detector (a Distiller's student) with ``MODEL.WEIGHTS``
    loaded strictly (:func:`~centerx.engine.load_weights_for_eval`: every
    parameter from the file, the checkpoint's EMA weights with MODEL_EMA.ENABLED
    and USE_FOR_EVAL; no weights refused unless ``allow_random``), in eval mode on
    ``MODEL.DEVICE``, wrapped (with flip test-time augmentation when EXPORT.FLIP_TEST)."""
    cfg = deploy_config(cfg)
    model = build_model(cfg)
    load_weights_for_eval(cfg, model, cfg.MODEL.WEIGHTS, allow_random=allow_random)
    return DeployModel(model, raw=raw, flip_test=cfg.EXPORT.FLIP_TEST).eval()
