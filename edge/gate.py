"""What is captioned, and which caption is shown: the scene gate.

``SceneGate.check(frame, now)`` decides whether a frame is worth captioning. Its
change measure: the frame shrunk to a 32x24 colour thumbnail (``cv2.INTER_AREA``,
which averages sensor noise away), compared with the thumbnail of the frame last
captioned; ``change`` is the fraction of thumbnail cells where any of the three
colour channels moved by more than ``CELL_LEVELS`` (of 255). Comparing colours,
not grey levels, catches a cut between scenes of equal brightness (a red car
replaced by a green one of the same luma). A frame is captioned when that fraction
exceeds ``threshold`` (a scene change) or ``refresh_s`` seconds have passed
since the last caption (a refresh). ``enabled=False`` captions whenever the
captioner is free (every check says yes).

``ShownCaption.accept(text, changed)`` decides whether a computed caption
replaces the one shown: it does when nothing is shown yet, or when it differs
and is backed by the scene (computed on a changed scene, or the same new text
twice in a row). So near-synonyms on a static scene do not flicker.
"""
import cv2
import numpy as np

THUMB_SIZE = (32, 24)      # (width, height) of the change thumbnail, cells
CELL_LEVELS = 16           # a cell "changed" when a channel's level moved by more than this
DEFAULT_CHANGE = 0.1       # fraction of cells: an object entering a quarter of the frame is > 0.1
DEFAULT_REFRESH_S = 10.0


def thumbnail(frame):
    """``uint8 [H, W, 3]`` BGR frame -> ``int16 [24, 32, 3]`` colour thumbnail
    (a grey ``[H, W]`` frame -> ``[24, 32, 1]``)."""
    small = cv2.resize(frame, THUMB_SIZE, interpolation=cv2.INTER_AREA).astype(np.int16)
    return small.reshape(small.shape[0], small.shape[1], -1)


def change_fraction(a, b):
    """Fraction (0..1) of thumbnail cells where some channel differs by more than
    ``CELL_LEVELS``; ``a``, ``b``: ``[24, 32, C]`` thumbnails."""
    return float(np.mean(np.abs(a - b).max(axis=-1) > CELL_LEVELS))


class SceneGate(object):
    """Decides which frames are captioned (see the module text); not thread-safe:
    the main loop alone calls it."""

    def __init__(self, threshold=DEFAULT_CHANGE, refresh_s=DEFAULT_REFRESH_S, enabled=True):
        self.threshold, self.refresh_s = float(threshold), float(refresh_s)
        self.enabled = bool(enabled)
        self.last_thumb, self.last_at = None, None
        self.gated = 0          # frames held back while the captioner was free

    def check(self, frame, now):
        """``(caption_it, scene_changed)`` for ``frame`` seen at ``now`` (seconds)."""
        if not self.enabled:
            return True, False
        thumb = thumbnail(frame)
        if self.last_thumb is None:
            return True, True
        changed = change_fraction(thumb, self.last_thumb) > self.threshold
        due = self.refresh_s > 0 and now - self.last_at >= self.refresh_s
        if not (changed or due):
            self.gated += 1
        return changed or due, changed

    def captioned(self, frame, now):
        """Record that ``frame`` (seen at ``now``) was handed to the captioner."""
        if self.enabled:
            self.last_thumb, self.last_at = thumbnail(frame), now


class ShownCaption(object):
    """The caption on screen; ``accept`` returns True when ``text`` replaces it."""

    def __init__(self, hold=True):
        self.hold = bool(hold)
        self.text, self.previous, self.shown = None, None, 0

    def accept(self, text, changed):
        """A caption ``text`` was computed (on a changed scene when ``changed``)."""
        repeated, self.previous = text == self.previous, text
        if self.text is not None and text == self.text:
            return False
        if self.text is None or not self.hold or changed or repeated:
            self.text = text
            self.shown += 1
            return True
        return False
