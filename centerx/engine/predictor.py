"""detectron2's DefaultPredictor for any image a user can hand it, with the
weights loaded strictly."""

from collections.abc import Sequence

import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

from ..config import ConfigValueError
from ..data.image_io import as_three_channels
from .ema import load_weights_for_eval

# an image is padded (bottom / right, with zeros) so that its shorter side stays
# at least this many pixels once resized to INPUT.MAX_SIZE_TEST
MIN_RESIZED_SIDE = 32


class Predictor(DefaultPredictor):
    """``DefaultPredictor(cfg)(image)`` that takes any array a user can hand it:

    - H x W greyscale (or H x W x 1) and H x W x 4 (alpha dropped) images become
      3-channel ones; images under 2 pixels on a side, or that are not 8-bit,
      are refused with a ``ValueError`` naming them;
    - an extreme aspect ratio (2 x 9000 px) is padded at the bottom or right
      so that the shorter side keeps ``MIN_RESIZED_SIDE`` pixels after the test
      resize; the boxes are clipped to the image itself;
    - ``MODEL.WEIGHTS`` is loaded strictly
      (:func:`~centerx.engine.load_weights_for_eval`: every parameter from the
      file, the EMA weights when the config says so; no weights refused unless
      ``allow_random``).

    Input and output as detectron2's: an image in ``INPUT.FORMAT``'s channel
    order (BGR by default) -> ``{"instances": Instances}`` in its pixels.
    """

    def __init__(self, cfg, allow_random: bool = False):
        # DefaultPredictor.__init__ is not called: it loads MODEL.WEIGHTS with
        # detectron2's own checkpointer, which unpickles a .pkl file unrestricted
        # (a crafted file would run its code) before the strict, safe load below.
        # The attributes it sets are set here the same way.
        if cfg.INPUT.FORMAT not in ("RGB", "BGR"):
            raise ConfigValueError(f"INPUT.FORMAT must be RGB or BGR, got {cfg.INPUT.FORMAT!r}.")
        self.cfg = cfg.clone()
        self.model = build_model(self.cfg)
        self.model.eval()
        if len(cfg.DATASETS.TEST):
            self.metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0])
        load_weights_for_eval(self.cfg, self.model, cfg.MODEL.WEIGHTS, allow_random=allow_random)
        self.aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST)
        self.input_format = cfg.INPUT.FORMAT

    def __call__(self, original_image, name: str = "image"):
        return self.predict_batch([original_image], [name])[0]

    def prepare(self, original_image, name: str = "image") -> dict:
        """The model's input dict for one image, as DefaultPredictor builds it:
        channels to ``INPUT.FORMAT``, test-time resize, "height" / "width" of the
        image (after any padding for an extreme aspect ratio, see the class)."""
        image = as_three_channels(original_image, name)
        h, w = image.shape[:2]
        min_side = int(np.ceil(max(h, w) * MIN_RESIZED_SIDE / self.aug.max_size)) if self.aug.max_size > 0 else 1
        if min(h, w) < min_side:
            ph, pw = (max(h, min_side), w) if h < w else (h, max(w, min_side))
            padded = np.zeros((ph, pw, 3), dtype=np.uint8)
            padded[:h, :w] = image
            image = padded
        if self.input_format == "RGB":
            image = image[:, :, ::-1]
        resized = self.aug.get_transform(image).apply_image(image)
        tensor = torch.as_tensor(resized.astype("float32").transpose(2, 0, 1)).to(self.cfg.MODEL.DEVICE)
        return {"image": tensor, "height": image.shape[0], "width": image.shape[1], "original_size": (h, w)}

    def predict_batch(self, images: Sequence[np.ndarray], names: Sequence[str] | None = None) -> list[dict]:
        """Several images in one forward pass; one ``{"instances": Instances}`` per
        image, as ``__call__`` returns for each."""
        names = list(names) if names is not None else [f"image {i}" for i in range(len(images))]
        inputs = [self.prepare(image, name) for image, name in zip(images, names)]
        with torch.no_grad():
            outputs = self.model(inputs)
        for out, x in zip(outputs, inputs):
            h, w = x["original_size"]
            if (h, w) != (x["height"], x["width"]):  # padded: back to the image's own size
                inst = Instances((h, w), **out["instances"].get_fields())
                inst.pred_boxes = Boxes(inst.pred_boxes.tensor.clone())
                inst.pred_boxes.clip((h, w))
                out["instances"] = inst
        return outputs
