"""Image reading and the one resize used by training and by the device.

Frames are ``uint8 [H, W, 3]`` BGR, as OpenCV delivers them. Everything else
(casting, BGR->RGB, scaling, mean/std) happens inside the model graph.
"""
import os

import cv2
import numpy as np

from edge.errors import NanocapError
from edge.image_header import image_size

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
MAX_PIXELS = 50 * 1000 * 1000   # 150 MB as BGR: larger images and frames are refused


def check_pixels(width, height, what, max_pixels=None):
    """``NanocapError`` naming ``what`` when a ``width`` x ``height`` picture is larger
    than ``max_pixels`` (default ``MAX_PIXELS``; checked before it is decoded)."""
    max_pixels = MAX_PIXELS if max_pixels is None else max_pixels
    if int(width) * int(height) > max_pixels:
        raise NanocapError("%s is %dx%d pixels, more than the %d-megapixel limit: refused "
                           "before decoding" % (what, width, height, max_pixels // 1000000))


def resize(frame, size):
    """Resize a BGR frame to ``size = (height, width)`` pixels (stretch, no crop).

    Returns a C-contiguous ``uint8 [height, width, 3]``. A frame at least twice
    the target on both axes is first resized bilinearly to exactly twice the
    target, then halved with ``cv2.INTER_AREA`` (an exact 2x2 box average,
    OpenCV's fast path): each output pixel averages 16 samples spread over its
    footprint, so it is anti-aliased like a plain ``INTER_AREA`` (mean
    difference 0.4 grey levels on a smooth 640x480 image) at about a tenth of
    the cost (640x480 -> 96x96: 0.27 ms instead of 2.35 ms on the loaded
    2-core development machine). Smaller frames use ``INTER_AREA`` directly.
    Training (``train.data.batches``) and the device use this one function.
    """
    height, width = int(size[0]), int(size[1])
    if frame.shape[0] == height and frame.shape[1] == width:
        return np.ascontiguousarray(frame)
    if frame.shape[0] >= 2 * height and frame.shape[1] >= 2 * width:
        frame = cv2.resize(frame, (2 * width, 2 * height), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)


JPEG_SOI = b"\xff\xd8"
JPEG_EOI = b"\xff\xd9"
EOI_WINDOW = 1024  # bytes at the end searched for EOI (some writers pad after it)


def jpeg_cut_short(data):
    """True when ``data`` (a file's bytes) is a JPEG without its end-of-image
    marker near the end: a file cut short (an interrupted copy), which libjpeg
    would decode partially with only a "Premature end of JPEG file" on stderr.
    Byte stuffing keeps FF D9 out of the entropy-coded data, so a cut file
    has none in its tail."""
    return data[:2] == JPEG_SOI and data.rfind(JPEG_EOI, max(0, len(data) - EOI_WINDOW)) < 0


def read_image(path, max_pixels=None):
    """Read an image file as ``uint8 [H, W, 3]`` BGR; ``NanocapError`` naming the
    file if it is missing, corrupt, not an image (JPEG, PNG, BMP, WebP, GIF, TIFF,
    PNM), a JPEG cut short, or larger than ``max_pixels`` by its header."""
    if not os.path.isfile(path):
        raise NanocapError("image not found: %s" % path)
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except (IOError, OSError) as exc:
        raise NanocapError("cannot read image %s: %s" % (path, exc))
    if jpeg_cut_short(data):
        raise NanocapError("damaged image (JPEG cut short, no end marker): %s" % path)
    size = image_size(data)
    if size is not None:
        check_pixels(size[0], size[1], "image %s" % path, max_pixels)
    image = None
    if size is not None:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise NanocapError("cannot decode image (corrupt or not an image): %s" % path)
    return image


def list_images(directory):
    """Sorted image files directly inside ``directory``."""
    names = sorted(os.listdir(directory))
    return [os.path.join(directory, n) for n in names
            if n.lower().endswith(IMAGE_EXTENSIONS)]
