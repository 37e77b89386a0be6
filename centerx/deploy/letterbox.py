"""Pre-processing shared by every runtime: letterbox to the export size, and
the mapping of boxes back onto the original image."""

from collections.abc import Sequence

import cv2
import numpy as np


class Letterbox:
    """Resize each image, aspect ratio kept, to fit an (H, W) canvas; place it
    at the top-left and fill the rest with ``pad_value``.

    The top-left placement and the pixel-mean fill match detectron2's padding
    of a batch (zeros after normalisation), so a letterboxed image sees what
    it saw in evaluation; boxes map back by dividing by the per-axis scale.
    """

    def __init__(self, size: tuple[int, int], input_format: str, pad_value: Sequence[float]):
        """
        Args:
            size: (H, W) of the canvas, input pixels.
            input_format: channel order the model expects (``cfg.INPUT.FORMAT``), "BGR" or "RGB".
            pad_value: per-channel fill in ``input_format`` order (``cfg.MODEL.PIXEL_MEAN``).
        """
        if input_format not in ("BGR", "RGB"):
            raise ValueError(f"Deployment supports INPUT.FORMAT 'BGR' or 'RGB'; got {input_format!r}.")
        self.size = tuple(int(s) for s in size)
        self.input_format = input_format
        self.pad_value = np.asarray(pad_value, dtype=np.float32).reshape(3, 1, 1)

    def __call__(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, list[tuple[float, float]]]:
        """
        Args:
            images: BGR uint8 images [h_i, w_i, 3] as ``cv2.imread`` returns them.

        Returns:
            batch: float32 [N, 3, H, W], 0..255, in ``input_format`` order;
            scales: per image (sy, sx), canvas pixels per original pixel.
        """
        H, W = self.size
        batch = np.empty((len(images), 3, H, W), dtype=np.float32)
        batch[:] = self.pad_value
        scales = []
        for i, img in enumerate(images):
            if img.ndim != 3 or img.shape[2] != 3:
                raise ValueError(f"Expected an [h, w, 3] BGR image; got shape {img.shape}.")
            h, w = img.shape[:2]
            s = min(H / h, W / w)
            nh, nw = min(H, max(1, round(h * s))), min(W, max(1, round(w * s)))
            resized = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
            if self.input_format == "RGB":
                resized = resized[:, :, ::-1]
            batch[i, :, :nh, :nw] = resized.transpose(2, 0, 1)
            scales.append((nh / h, nw / w))
        return batch, scales

    @staticmethod
    def to_original(boxes: np.ndarray, scale: tuple[float, float], shape: tuple[int, int]) -> np.ndarray:
        """Boxes [M, 4] (x1, y1, x2, y2) in canvas pixels -> original image pixels,
        clipped to the image of ``shape`` (h, w)."""
        sy, sx = scale
        out = boxes / np.array([sx, sy, sx, sy], dtype=np.float32)
        h, w = shape[:2]
        out[:, 0::2] = out[:, 0::2].clip(0, w)
        out[:, 1::2] = out[:, 1::2].clip(0, h)
        return out
