"""The Show-Attend-Tell figure: a caption word by word, each word over the image
with the attention map it was generated from (``train caption --attention OUT_DIR``).

``attention_figure(image, words, maps)``:

- ``image``: ``uint8 [H, W, 3]`` BGR (any size; shown at ``tile`` pixels square);
- ``words``: the T generated words (``<end>`` included or not, as the caller likes);
- ``maps``: ``float [T, h, w]``: the attention weights over the feature map's
  h x w regions at each step (any non-negative scale: each map is shown
  relative to its own maximum, upsampled bilinearly over the image).

Returns one ``uint8`` BGR picture: the plain image first, then one tile per
word (a JET heat map blended over the image, the word written above it), in
rows of ``columns`` tiles. OpenCV only.
"""
import cv2
import numpy as np

from edge.errors import NanocapError

BACKGROUND = 255
TEXT = (20, 20, 20)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def heat_tile(image, weights, tile=160, alpha=0.5):
    """``image`` resized to ``tile`` x ``tile`` with ``weights [h, w]`` as a JET heat
    map blended over it (red = most attended): ``uint8 [tile, tile, 3]``."""
    base = cv2.resize(image, (tile, tile), interpolation=cv2.INTER_AREA)
    weights = np.asarray(weights, dtype=np.float32)
    peak = float(weights.max())
    scaled = weights / peak if peak > 0 else np.zeros_like(weights)
    # cell centres stay at cell centres (cv2's half-pixel convention)
    up = cv2.resize(scaled, (tile, tile), interpolation=cv2.INTER_LINEAR)
    heat = cv2.applyColorMap(np.clip(up * 255.0, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.addWeighted(base, 1.0 - alpha, heat, alpha, 0.0)


def _labelled(picture, label, tile, band):
    """``picture [tile, tile, 3]`` under a white band holding ``label`` (shrunk to fit)."""
    out = np.full((band + tile, tile, 3), BACKGROUND, dtype=np.uint8)
    out[band:] = picture
    scale = band / 40.0
    (width, _), _ = cv2.getTextSize(label, FONT, scale, 1)
    if width > tile - 4:
        scale *= (tile - 4) / float(width)
        width = tile - 4
    cv2.putText(out, label, ((tile - width) // 2, int(band * 0.7)), FONT, scale, TEXT, 1, cv2.LINE_AA)
    return out


def attention_figure(image, words, maps, tile=160, columns=5, band=28):
    """The figure (see the module docstring): ``uint8 [rows * (band + tile), columns * tile, 3]``."""
    image = np.asarray(image)
    maps = np.asarray(maps, dtype=np.float32)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise NanocapError("attention figure: image must be uint8 [H, W, 3] BGR, not %s %s"
                           % (image.dtype, list(image.shape)))
    if maps.ndim != 3 or maps.shape[0] != len(words):
        raise NanocapError("attention figure: %d words need maps [%d, h, w], not %s"
                           % (len(words), len(words), list(maps.shape)))
    if not np.isfinite(maps).all() or (maps < 0).any():
        raise NanocapError("attention figure: maps must be finite and non-negative")
    base = cv2.resize(image, (tile, tile), interpolation=cv2.INTER_AREA)
    tiles = [_labelled(base, "", tile, band)]
    tiles += [_labelled(heat_tile(image, m, tile), w, tile, band) for w, m in zip(words, maps)]
    blank = np.full_like(tiles[0], BACKGROUND)
    tiles += [blank] * (-len(tiles) % columns)
    rows = [np.concatenate(tiles[i:i + columns], axis=1) for i in range(0, len(tiles), columns)]
    return np.concatenate(rows, axis=0)


def save_attention_figure(path, image, words, maps, **kwargs):
    """Write ``attention_figure(...)`` to ``path`` (PNG or JPEG by extension); returns ``path``."""
    figure = attention_figure(image, words, maps, **kwargs)
    try:
        ok = cv2.imwrite(path, figure)
    except cv2.error:
        ok = False
    if not ok:
        raise NanocapError("cannot write the attention figure %s" % path)
    return path
