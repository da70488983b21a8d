"""A real headless Chromium opens the web view during a run on a video of real
photos: the page shows the picture and the caption that the JSONL log ends with."""
import json
import os
import time

import cv2
import numpy as np
import pytest

from tests.cdp import CHROMIUM, Browser
from tests.test_web import LiveRun

pytestmark = pytest.mark.skipif(not os.path.isfile(CHROMIUM),
                                reason="no chromium at %s (apt-get install -y chromium)"
                                % CHROMIUM)


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
    picture = cv2.imread(shot)
    assert picture.shape[1] == 1280
    assert picture[40:400, 40:600].std() > 20        # the photo, not an empty box
