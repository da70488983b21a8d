"""Generated moving scenes for ``synthetic://``: a camera stand-in, no hardware needed.

``SyntheticSource`` is the source (``read() -> frame``, paced like a camera or
read flat out like a file); ``synthetic_options`` checks the URI's query values.

Coloured circles, squares and triangles drift and bounce over a soft
background; frame ``i`` is a pure function of ``(seed, i)``, so a run is
reproducible. numpy + OpenCV only.
"""
import time

import numpy as np

import cv2

from edge.errors import NanocapError

COLOURS = {"red": (40, 40, 220), "green": (60, 180, 60), "blue": (220, 90, 40),
           "yellow": (40, 220, 230), "purple": (170, 60, 150), "orange": (30, 140, 250)}
SHAPES = ("circle", "square", "triangle")


class SyntheticScene(object):
    """``frame(i) -> uint8 [height, width, 3]`` BGR: ``shapes`` objects moving at
    a few pixels per frame, bouncing off the borders."""

    def __init__(self, width=640, height=480, shapes=3, seed=0):
        self.width, self.height = int(width), int(height)
        rng = np.random.RandomState(seed)
        names = sorted(COLOURS)
        scale = min(self.width, self.height)
        self.objects = []
        for _ in range(int(shapes)):
            self.objects.append({
                "shape": SHAPES[rng.randint(len(SHAPES))],
                "colour": COLOURS[names[rng.randint(len(names))]],
                "size": scale * rng.uniform(0.08, 0.18),
                "start": rng.uniform(0.2, 0.8, size=2) * (self.width, self.height),
                "velocity": rng.uniform(-1, 1, size=2) * scale / 120.0})
        base = np.linspace(60, 140, self.height, dtype=np.float32)[:, None, None]
        tint = np.array([1.0, 0.95, 0.85], np.float32)
        self.background = np.ascontiguousarray(
            np.broadcast_to(base * tint, (self.height, self.width, 3)).astype(np.uint8))

    def _position(self, obj, i):
        """Centre of ``obj`` at frame ``i``, reflected at the borders (pixels)."""
        size = obj["size"]
        out = []
        for axis, limit in enumerate((self.width, self.height)):
            span = max(1.0, limit - 2 * size)
            p = (obj["start"][axis] - size + obj["velocity"][axis] * i) % (2 * span)
            out.append(int(size + (p if p < span else 2 * span - p)))
        return out

    def frame(self, i):
        """Frame ``i`` (any int >= 0) as ``uint8 [height, width, 3]`` BGR."""
        image = self.background.copy()
        for obj in self.objects:
            x, y = self._position(obj, i)
            r, colour = int(obj["size"]), obj["colour"]
            if obj["shape"] == "circle":
                cv2.circle(image, (x, y), r, colour, -1, cv2.LINE_AA)
            elif obj["shape"] == "square":
                cv2.rectangle(image, (x - r, y - r), (x + r, y + r), colour, -1)
            else:
                pts = np.array([[x, y - r], [x - r, y + r], [x + r, y + r]], np.int32)
                cv2.fillPoly(image, [pts], colour, cv2.LINE_AA)
        return image


SYNTHETIC_LIMITS = {"width": (16, 7680), "height": (16, 4320), "fps": (0.1, 1000.0),
                    "frames": (0, 1e12), "seed": (0, 2 ** 31 - 1), "pace": (0, 1)}


def synthetic_options(options, width, height, fps):
    """``synthetic://`` query values checked against ``SYNTHETIC_LIMITS`` (one clear
    line naming the bad value), with ``width/height/fps`` as defaults; ints but fps."""
    unknown = sorted(set(options) - set(SYNTHETIC_LIMITS))
    if unknown:
        raise NanocapError("synthetic:// has no option %r (options: %s)"
                           % (unknown[0], ", ".join(sorted(SYNTHETIC_LIMITS))))
    values = {"width": width, "height": height, "fps": fps, "frames": 0, "seed": 0, "pace": 1}
    values.update(options)
    for key, (low, high) in SYNTHETIC_LIMITS.items():
        if not low <= values[key] <= high:
            raise NanocapError("synthetic:// %s=%s is out of range (%s..%s)"
                               % (key, values[key], low, high))
        values[key] = float(values[key]) if key == "fps" else int(values[key])
    return values


class SyntheticSource(object):
    """``edge.synthetic`` scenes paced at ``fps`` like a camera (``live``); with
    ``pace=False`` read as fast as possible, like a file; ``frames`` ends it (0 = endless)."""

    def __init__(self, width=640, height=480, fps=30.0, frames=0, seed=0, pace=True):
        self.scene = SyntheticScene(width, height, seed=seed)
        self.fps, self.frames, self.pace = float(fps), int(frames), bool(pace)
        self.live = self.pace
        self.name = "synthetic://"
        self.index, self.start, self.ended = 0, None, False

    def read(self):
        if self.frames and self.index >= self.frames:
            self.ended = True
            return None
        if self.pace:
            now = time.perf_counter()
            if self.start is None:
                self.start = now
            wait = self.start + self.index / self.fps - now
            if wait > 0:
                time.sleep(wait)
        frame = self.scene.frame(self.index)
        self.index += 1
        return frame

    def reopen(self):
        return False

    def close(self):
        pass
