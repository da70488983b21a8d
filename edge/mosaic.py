"""Several inputs in one window: the tiles of a mosaic.

``tile_frames(frames)`` lays ``n`` frames out on a grid of ``ceil(sqrt(n))``
columns, each tile the size of the first frame divided by the number of
columns (a 2x2 mosaic of 640x480 inputs is 640x480); an input without a frame
yet is black. ``Mosaic`` keeps each input's newest frame and shows the mosaic
on its sink (a ``DisplaySink``) at most ``max_fps`` times a second.
"""
import math
import time

import cv2
import numpy as np


def tile_frames(frames):
    """``[uint8 [H, W, 3] or None, ...]`` -> one ``uint8`` mosaic frame (see the module)."""
    count = len(frames)
    cols = int(math.ceil(math.sqrt(count)))
    rows = int(math.ceil(count / float(cols)))
    first = next(f for f in frames if f is not None)
    height, width = max(1, first.shape[0] // cols), max(1, first.shape[1] // cols)
    canvas = np.zeros((rows * height, cols * width, 3), np.uint8)
    for index, frame in enumerate(frames):
        if frame is None:
            continue
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        row, col = divmod(index, cols)
        canvas[row * height:(row + 1) * height, col * width:(col + 1) * width] = \
            cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
    return canvas


class Mosaic(object):
    """The newest frame of each of ``count`` inputs, shown tiled on ``sink``."""

    def __init__(self, sink, count, max_fps=30.0):
        self.sink, self.frames = sink, [None] * int(count)
        self.interval, self.shown_at = 1.0 / max_fps, 0.0

    def put(self, index, frame):
        """Input ``index``'s newest frame; returns the key pressed in the window or -1."""
        self.frames[index] = frame
        now = time.perf_counter()
        if now - self.shown_at < self.interval:
            return -1
        self.shown_at = now
        return self.sink.write(tile_frames(self.frames))


class Tile(object):
    """Input ``index``'s side of a ``Mosaic``: a sink with ``write(frame)``."""

    def __init__(self, mosaic, index):
        self.mosaic, self.index = mosaic, index

    def write(self, frame):
        return self.mosaic.put(self.index, frame)

    def close(self):
        pass
