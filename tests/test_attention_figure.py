"""The attention figure drawn from synthetic maps: layout, the heat where the map
points, labels, and one-line errors."""
import os

import cv2
import numpy as np
import pytest

from edge.errors import NanocapError
from train.evaluation.attention_figure import attention_figure, save_attention_figure

TILE, BAND = 120, 24


def _one_hot(h, w, cells):
    maps = np.zeros((len(cells), h, w), np.float32)
    for k, (i, j) in enumerate(cells):
        maps[k, i, j] = 0.9
        maps[k] += 0.1 / (h * w)
    return maps


def _tile(figure, index, columns=5):
    row, col = divmod(index, columns)
    top = row * (BAND + TILE)
    cols = slice(col * TILE, (col + 1) * TILE)
    return figure[top:top + BAND, cols], figure[top + BAND:top + BAND + TILE, cols]


def _redness(pixels):
    pixels = pixels.astype(int)
    return (pixels[..., 2] - pixels[..., 0]).mean()


def test_each_word_tile_is_hot_where_its_map_points():
    image = np.full((96, 96, 3), 128, np.uint8)
    words = ["a", "red", "circle", "and", "a", "blue", "square"]
    cells = [(0, 0), (0, 2), (2, 0), (2, 2), (1, 1), (0, 1), (2, 1)]
    figure = attention_figure(image, words, _one_hot(3, 3, cells), tile=TILE, columns=5, band=BAND)
    assert figure.dtype == np.uint8 and figure.shape == (2 * (BAND + TILE), 5 * TILE, 3)
    third = TILE // 3
    for k, (i, j) in enumerate(cells):
        band, tile = _tile(figure, k + 1)
        assert (band < 128).any()                                   # the word is written
        hot = tile[i * third:(i + 1) * third, j * third:(j + 1) * third]
        cold = tile[(2 - i) * third:(3 - i) * third, (2 - j) * third:(3 - j) * third] \
            if (i, j) != (1, 1) else tile[:third, :third]
        assert _redness(hot) > _redness(cold) + 60, (words[k], i, j)
    band, plain = _tile(figure, 0)
    assert (band == 255).all() and np.abs(plain.astype(int) - 128).max() <= 1  # the image alone first
    assert (_tile(figure, 9)[1] == 255).all()                                   # padding tile


def test_save_writes_a_picture_and_bad_inputs_are_one_line(tmp_path):
    image = np.random.RandomState(0).randint(0, 255, (64, 80, 3)).astype(np.uint8)
    maps = np.random.RandomState(1).rand(3, 2, 2).astype(np.float32)
    path = save_attention_figure(str(tmp_path / "fig.png"), image, ["a", "b", "<end>"], maps)
    assert cv2.imread(path).shape == (28 + 160, 5 * 160, 3)  # defaults: one row of 5 tiles
    with pytest.raises(NanocapError, match="3 words need maps"):
        attention_figure(image, ["a", "b", "c"], maps[:2])
    with pytest.raises(NanocapError, match="non-negative"):
        attention_figure(image, ["a", "b", "c"], -maps)
    with pytest.raises(NanocapError, match="uint8"):
        attention_figure(image.astype(np.float32), ["a", "b", "c"], maps)
    with pytest.raises(NanocapError, match="cannot write"):
        save_attention_figure(os.path.join(str(tmp_path), "missing", "fig.png"), image, ["a", "b", "c"], maps)
