"""Image reading and the one resize used by training and by the device.

Frames are ``uint8 [H, W, 3]`` BGR, as OpenCV delivers them. Everything else
(casting, BGR->RGB, scaling, mean/std) happens inside the model graph.
"""
import os

import cv2
import numpy as np

from edge.errors import NanocapError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def resize(frame, size):
    """Resize a BGR frame to ``size = (height, width)`` pixels (stretch, no crop).

    Uses ``cv2.INTER_AREA``; returns a C-contiguous ``uint8 [height, width, 3]``.
    """
    height, width = int(size[0]), int(size[1])
    if frame.shape[0] == height and frame.shape[1] == width:
        return np.ascontiguousarray(frame)
    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)


def read_image(path):
    """Read an image file as ``uint8 [H, W, 3]`` BGR; ``NanocapError`` if unreadable."""
    if not os.path.isfile(path):
        raise NanocapError("image not found: %s" % path)
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise NanocapError("cannot decode image (corrupt or not an image): %s" % path)
    return image


def list_images(directory):
    """Sorted image files directly inside ``directory``."""
    names = sorted(os.listdir(directory))
    return [os.path.join(directory, n) for n in names
            if n.lower().endswith(IMAGE_EXTENSIONS)]
