"""Reading images as the user meant them: detectron2's ``read_image`` (EXIF
orientation, any format PIL reads, output in INPUT.FORMAT), except that 16-bit
images keep their range (scaled to 0..255) instead of saturating to white, and
images PIL cannot fully decode (truncated, zero bytes) raise an ``OSError``
naming the file.

Also the conversion of arrays handed to inference (greyscale, RGBA) to the
3-channel uint8 images the models take.
"""

import numpy as np
from detectron2.data.detection_utils import _apply_exif_orientation, convert_PIL_to_numpy
from detectron2.utils.file_io import PathManager
from PIL import Image

# PIL modes of 16-bit (and 32-bit integer) single-channel images
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def read_image(file_name: str, format: str = "BGR") -> np.ndarray:
    """An HWC uint8 image in ``format`` ("BGR", "RGB" or "L").

    16-bit greyscale images are scaled by 255 / 65535 (a 32-bit integer image is
    refused when its values exceed 16 bits). Raises ``OSError`` for a missing
    file or one PIL cannot decode completely.
    """
    with PathManager.open(file_name, "rb") as f:
        try:
            image = Image.open(f)
            image.load()
        except Exception as e:  # PIL raises assorted types for broken files
            raise OSError(f"cannot decode image {file_name}: {e}") from e
        image = _apply_exif_orientation(image)
        if image.mode in _WIDE_MODES:
            wide = np.asarray(image, dtype=np.int64)
            if wide.max(initial=0) > 65535 or wide.min(initial=0) < 0:
                raise OSError(
                    f"image {file_name} has {image.mode} pixel values outside 0..65535: convert it to "
                    "8 or 16 bits per channel."
                )
            image = Image.fromarray(np.rint(wide * (255 / 65535)).astype(np.uint8), mode="L")
        return convert_PIL_to_numpy(image, format)


def as_three_channels(image: np.ndarray, name: str = "image") -> np.ndarray:
    """An array handed to inference as an HWC uint8 image with 3 channels:
    greyscale (HW or HW1) replicated, RGBA / BGRA without its alpha channel.

    Raises ``ValueError`` naming ``name`` for an image with a side under 2 pixels,
    another number of channels, or values that are not 8-bit.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(
            f"{name}: expected an H x W greyscale or H x W x 3 / x 4 colour image, got shape {image.shape}."
        )
    if min(image.shape[:2]) < 2:
        raise ValueError(f"{name}: {image.shape[1]} x {image.shape[0]} pixels is too small to detect anything in.")
    if image.dtype != np.uint8:
        if image.dtype.kind not in "iu" or image.min(initial=0) < 0 or image.max(initial=0) > 255:
            raise ValueError(
                f"{name}: expected 8-bit pixel values (uint8, 0..255), got {image.dtype} in "
                f"[{image.min()}, {image.max()}]."
            )
        image = image.astype(np.uint8)
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])
