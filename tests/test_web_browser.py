"""A real headless Chromium opens the web view during a run on a video of real
photos: the page shows the picture and the caption that the JSONL log ends with."""
import json
import os
import re
import time

import cv2
import numpy as np
import pytest

from tests.cdp import CHROMIUM, Browser
from tests.test_web import LiveRun

pytestmark = pytest.mark.skipif(not os.path.isfile(CHROMIUM),
                                reason="no chromium at %s (apt-get install -y chromium)"
                                % CHROMIUM)


LAYOUT = """(function () {
  function rgb(c) { return c.match(/\\d+/g).slice(0, 3).map(Number); }
  function lum(c) {
    var v = rgb(c).map(function (x) {
      x /= 255; return x <= 0.03928 ? x / 12.92 : Math.pow((x + 0.055) / 1.055, 2.4); });
    return 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2];
  }
  var s = getComputedStyle(document.getElementById("status"));
  var img = document.getElementById("stream").getBoundingClientRect();
  var a = lum(s.color), b = lum(s.backgroundColor), when = document.querySelector(".when");
  return {picture: [img.width, img.height], status_px: parseFloat(s.fontSize),
          status_contrast: (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05),
          when: when ? when.textContent : null};
})()"""


@pytest.fixture(scope="module")
def two_photos(real_data, tmp_path_factory):
    """640x480 30 FPS MJPG .avi: one real photo for 2 s, then another for 8 s."""
    folder = os.path.join(real_data, "flickr8k", "images")
    names = sorted(os.listdir(folder))[4:6]
    path = str(tmp_path_factory.mktemp("photos") / "two.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (640, 480))
    for name, seconds in zip(names, (2, 8)):
        photo = cv2.resize(cv2.imread(os.path.join(folder, name)), (640, 480))
        for _ in range(30 * seconds):
            writer.write(photo)
    writer.release()
    return path


def read_log(path):
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.endswith("\n")]


def test_browser_shows_picture_and_logged_caption(tiny_bundle, two_photos, tmp_path):
    log_path = str(tmp_path / "caps.jsonl")
    run = LiveRun(tiny_bundle, str(tmp_path), ["--realtime", "--log", log_path],
                  source=two_photos)
    browser = None
    try:
        browser = Browser("http://127.0.0.1:%d/" % run.port, 1280, 720)
        deadline = time.time() + 30
        page, lines = None, []
        while time.time() < deadline:
            lines = read_log(log_path)
            page = browser.evaluate("document.getElementById('caption').textContent")
            if lines and lines[-1]["frame"] >= 60 and page == lines[-1]["caption"]:
                break
            time.sleep(0.3)
        width = browser.evaluate("document.getElementById('stream').naturalWidth")
        items = browser.evaluate("document.getElementById('captions').children.length")
        status = browser.evaluate("document.getElementById('status').textContent")
        layout = browser.evaluate(LAYOUT)
        shot = browser.screenshot(str(tmp_path / "page.png"))
        if os.environ.get("NANOCAP_SCREENSHOT"):
            browser.screenshot(os.environ["NANOCAP_SCREENSHOT"])
    finally:
        if browser is not None:
            browser.close()
        run.stop()
    lines = read_log(log_path)
    assert lines[-1]["frame"] >= 60, lines           # the second photo was captioned
    assert page == lines[-1]["caption"], (page, lines)
    assert width == 640 and items >= 1 and "fps" in status
    # the picture fills the window's height or most of its width (the caption column
    # takes the rest); the status line is large and light on dark; times of day
    assert layout["picture"][0] >= 0.6 * 1280 or layout["picture"][1] >= 0.6 * 720, layout
    assert layout["status_px"] >= 16 and layout["status_contrast"] >= 7, layout
    assert re.match(r"^\d\d:\d\d:\d\d$", layout["when"]), layout
    picture = cv2.imread(shot)
    assert picture.shape[1] == 1280
    assert picture[40:400, 40:600].std() > 20        # the photo, not an empty box


def test_picture_shows_as_soon_as_the_first_frame_exists(tiny_bundle, tmp_path):
    """A camera that delivers a frame every 10 s: the page shows the first frame at once
    (a snapshot under the stream), not only when the stream's second frame arrives
    (Chromium paints an MJPEG part when the next one begins)."""
    run = LiveRun(tiny_bundle, str(tmp_path), [],
                  source="synthetic://?fps=0.1&width=320&height=240")
    started, browser, seen = time.time(), None, None
    try:
        browser = Browser("http://127.0.0.1:%d/" % run.port, 1280, 720)
        if time.time() - started > 7.0:
            pytest.skip("the browser took %.1f s to start: too slow to tell"
                        % (time.time() - started))
        while time.time() - started < 9.5 and seen is None:
            shot = cv2.imread(browser.screenshot(str(tmp_path / "early.png")))
            if shot[100:500, 100:700].std() > 20:
                seen = time.time() - started
            time.sleep(0.2)
    finally:
        if browser is not None:
            browser.close()
        run.stop()
    assert seen is not None, "no picture within 9.5 s of the start (the next frame is at 10 s)"


def test_page_tiles_every_input(tiny_bundle, tmp_path):
    """Two inputs: the page shows one live picture per input and names the input of
    each caption."""
    run = LiveRun(tiny_bundle, str(tmp_path),
                  ["--input", "synthetic://?width=160&height=120&seed=2", "--refresh", "0.5"],
                  source="synthetic://?width=320&height=240&seed=1")
    browser, sizes, texts = None, None, ""
    try:
        browser = Browser("http://127.0.0.1:%d/" % run.port, 1280, 720)
        deadline = time.time() + 30
        while time.time() < deadline:
            sizes = browser.evaluate(
                "[0, 1, 2].map(function (i) { var e = document.getElementById('cam' + i);"
                " return e ? e.naturalWidth : null; })")
            texts = browser.evaluate("document.getElementById('captions').textContent")
            if sizes == [320, 160, None] and "cam0: " in texts and "cam1: " in texts:
                break
            time.sleep(0.3)
    finally:
        if browser is not None:
            browser.close()
        run.stop()
    assert sizes == [320, 160, None], sizes
    assert "cam0: " in texts and "cam1: " in texts, texts
