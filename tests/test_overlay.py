"""edge.overlay: word wrapping and the band/status drawing at small and large sizes."""
import os

import cv2
import numpy as np
import pytest

from edge.overlay import draw_overlay, status_text, text_style, text_width, wrap_text
from edge.sinks import save_snapshot

CAPTION = ("a man in a red shirt is riding a bicycle down a dirt road next to a green "
           "field with tall trees")


@pytest.mark.parametrize("width", [120, 300, 1800])
def test_wrap_fits_and_keeps_words(width):
    scale, thickness, _ = text_style(480)
    lines = wrap_text(CAPTION, width, scale, thickness)
    assert " ".join(lines) == CAPTION
    assert all(text_width(line, scale, thickness) <= width for line in lines)
    assert len(lines) == 1 if width == 1800 else len(lines) > 1


def test_wrap_breaks_long_words_and_cuts_with_ellipsis():
    scale, thickness, _ = text_style(240)
    long_word = "x" * 80
    lines = wrap_text(long_word, 100, scale, thickness)
    assert len(lines) > 1 and "".join(lines) == long_word
    cut = wrap_text(CAPTION, 100, scale, thickness, max_lines=2)
    assert len(cut) == 2 and cut[-1].endswith("...")
    assert all(text_width(line, scale, thickness) <= 100 for line in cut)
    assert wrap_text("", 100, scale, thickness) == []


def test_style_scales_with_height():
    small, large = text_style(240), text_style(1080)
    assert large[0] > 2 * small[0] and large[1] > small[1]


def test_status_text():
    assert status_text(29.84, 41.2, 0.63, "ort fp32") == "29.8 FPS | caption 41 ms, 0.6 s ago | ort fp32"
    assert status_text() == ""


@pytest.mark.parametrize("size", [(320, 240), (1920, 1080)])
def test_overlay_draws_band_text_and_status(size, tmp_path):
    width, height = size
    grey = np.full((height, width, 3), 200, np.uint8)
    frame = draw_overlay(grey.copy(), CAPTION, fps=30.0, latency_ms=12.0, age_s=0.4,
                         extra="ort fp32")
    assert frame.shape == grey.shape and frame.dtype == np.uint8
    bottom = frame[-height // 10:, :, 0]
    # the band is darkened (semi-transparent: not black) and holds bright text pixels
    assert 40 < np.median(bottom) < 150
    assert (bottom > 230).sum() > 20
    assert np.median(frame[height // 2, :, 0]) == 200            # the middle is untouched
    assert (frame[:height // 12, :width // 4, 0] != 200).mean() > 0.5  # the status box
    path = save_snapshot(frame, str(tmp_path), 3)
    assert os.path.basename(path).endswith("-000003.png")
    assert cv2.imread(path).shape == frame.shape


def test_overlay_without_caption_says_waiting():
    frame = draw_overlay(np.zeros((240, 320, 3), np.uint8), None)
    assert frame[-30:].max() > 200
