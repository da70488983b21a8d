"""The caption overlay, drawn with OpenCV only.

The caption is word-wrapped on a semi-transparent band at the bottom; a status
line at the top shows display FPS, caption latency and the caption's age. Sizes
scale with the frame height, so it reads at 320x240 and at 1920x1080.
"""
import cv2

FONT = cv2.FONT_HERSHEY_SIMPLEX
BAND_ALPHA = 0.55


def text_style(height):
    """``(font_scale, thickness, margin_px)`` for a frame ``height`` pixels high."""
    scale = max(0.42, height / 720.0 * 0.9)
    thickness = max(1, int(round(scale * 1.6)))
    margin = max(4, int(round(height * 0.015)))
    return scale, thickness, margin


def text_width(text, scale, thickness):
    """Rendered width of ``text`` in pixels."""
    return cv2.getTextSize(text, FONT, scale, thickness)[0][0]


def _split_word(word, max_width, scale, thickness):
    """Break a word wider than ``max_width`` into pieces that fit."""
    pieces, piece = [], ""
    for ch in word:
        if piece and text_width(piece + ch, scale, thickness) > max_width:
            pieces.append(piece)
            piece = ""
        piece += ch
    return pieces + ([piece] if piece else [])


def wrap_text(text, max_width, scale, thickness, max_lines=None):
    """Greedy word wrap: lines of ``text`` each at most ``max_width`` px wide.

    A word wider than a line is broken; with ``max_lines`` the last kept line
    ends in "..." when text was cut.
    """
    words = []
    for word in text.split():
        if text_width(word, scale, thickness) > max_width:
            words.extend(_split_word(word, max_width, scale, thickness))
        else:
            words.append(word)
    lines, line = [], ""
    for word in words:
        candidate = word if not line else line + " " + word
        if line and text_width(candidate, scale, thickness) > max_width:
            lines.append(line)
            line = word
        else:
            line = candidate
    if line:
        lines.append(line)
    if max_lines and len(lines) > max_lines:
        lines = lines[:max_lines]
        last = lines[-1]
        while last and text_width(last + "...", scale, thickness) > max_width:
            last = last[:-1]
        lines[-1] = last.rstrip() + "..."
    return lines


def _shade(frame, y0, y1, x0=0, x1=None):
    """Darken ``frame[y0:y1, x0:x1]`` in place (the semi-transparent band)."""
    x1 = frame.shape[1] if x1 is None else x1
    roi = frame[max(0, y0):y1, max(0, x0):x1]
    if roi.size:
        cv2.addWeighted(roi, 1.0 - BAND_ALPHA, roi * 0, BAND_ALPHA, 0, dst=roi)


def _put(frame, text, origin, scale, thickness, colour=(255, 255, 255)):
    """Light anti-aliased text (drawn on a darkened band, so it reads on any picture)."""
    cv2.putText(frame, text, origin, FONT, scale, colour, thickness, cv2.LINE_AA)


def status_text(fps=None, latency_ms=None, age_s=None, extra=None):
    """``"29.8 FPS | caption 41 ms, 0.6 s ago | extra"``."""
    parts = []
    if fps is not None:
        parts.append("%.1f FPS" % fps)
    if latency_ms is not None:
        age = "" if age_s is None else ", %.1f s ago" % age_s
        parts.append("caption %.0f ms%s" % (latency_ms, age))
    if extra:
        parts.append(extra)
    return " | ".join(parts)


def draw_overlay(frame, caption, fps=None, latency_ms=None, age_s=None, extra=None,
                 max_lines=3):
    """Draw ``caption`` and the status line on ``frame`` (``uint8 [H, W, 3]``, in place).

    Returns ``frame``. ``caption`` None or empty draws "(waiting for caption)".
    """
    height, width = frame.shape[:2]
    scale, thickness, margin = text_style(height)
    line_h = cv2.getTextSize("Ag", FONT, scale, thickness)[0][1] * 2 - thickness
    line_h = int(line_h * 1.05) + thickness + 2
    lines = wrap_text(caption or "(waiting for caption)", width - 2 * margin, scale,
                      thickness, max_lines)
    band_top = height - len(lines) * line_h - 2 * margin
    _shade(frame, band_top, height)
    for i, line in enumerate(lines):
        y = band_top + margin + (i + 1) * line_h - line_h // 4
        _put(frame, line, (margin, y), scale, thickness)
    status = status_text(fps, latency_ms, age_s, extra)
    if status:
        small = scale * 0.75
        small_t = max(1, int(round(small * 1.6)))
        status = wrap_text(status, width - 2 * margin, small, small_t, 1)[0]
        size = cv2.getTextSize(status, FONT, small, small_t)[0]
        _shade(frame, 0, size[1] + 2 * margin, 0, size[0] + 2 * margin)
        _put(frame, status, (margin, margin + size[1]), small, small_t, (180, 255, 180))
    return frame


def draw_lost(frame, seconds, what="camera"):
    """Mark ``frame`` (the last one shown, drawn on in place) as lost ``seconds`` ago:
    a dark red band across the middle, "<what> lost 12 s ago - reconnecting"."""
    height, width = frame.shape[:2]
    scale, thickness, margin = text_style(height)
    text = wrap_text("%s lost %.0f s ago - reconnecting" % (what, seconds),
                     width - 2 * margin, scale, thickness, 1)[0]
    size = cv2.getTextSize(text, FONT, scale, thickness)[0]
    top = height // 2 - size[1] - margin
    roi = frame[max(0, top):height // 2 + margin, :]
    if roi.size:
        tint = roi.copy()
        tint[:] = (0, 0, 160)
        cv2.addWeighted(roi, 0.3, tint, 0.7, 0, dst=roi)
    _put(frame, text, (margin, height // 2), scale, thickness)
    return frame
