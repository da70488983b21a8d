"""Generated moving scenes for ``synthetic://``: a camera stand-in, no hardware needed.

Coloured circles, squares and triangles drift and bounce over a soft
background; frame ``i`` is a pure function of ``(seed, i)``, so a run is
reproducible. numpy + OpenCV only.
"""
import numpy as np

import cv2

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
