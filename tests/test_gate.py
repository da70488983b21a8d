"""The scene gate on real photos: sensor-like noise does not trigger it, cuts do,
the shown caption holds; and the same through the real loop and ONNX Runtime."""
import json
import os

import cv2
import numpy as np
import pytest

from edge.gate import SceneGate, ShownCaption, change_fraction, thumbnail


def photos(real_data, count, size=(640, 480)):
    folder = os.path.join(real_data, "flickr8k", "images")
    names = sorted(os.listdir(folder))[:count]
    return [cv2.resize(cv2.imread(os.path.join(folder, n)), size) for n in names]


def noisy(photo, rng, sigma=4.0):
    """``photo`` with per-frame Gaussian sensor noise of ``sigma`` grey levels."""
    noise = rng.normal(0, sigma, photo.shape)
    return np.clip(photo.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def run_gate(frames, fps=30.0, enabled=True):
    """Indices of the frames the gate lets through (the captioner always free)."""
    gate, picked = SceneGate(enabled=enabled), []
    for i, frame in enumerate(frames):
        wanted, _ = gate.check(frame, i / fps)
        if wanted:
            gate.captioned(frame, i / fps)
            picked.append(i)
    return picked, gate


def test_noise_is_no_change_a_cut_is(real_data):
    a, b = photos(real_data, 2)
    rng = np.random.RandomState(0)
    assert change_fraction(thumbnail(noisy(a, rng)), thumbnail(noisy(a, rng))) < 0.02
    assert change_fraction(thumbnail(a), thumbnail(b)) > 0.3


def test_static_scene_30s_captions_few(real_data):
    photo = photos(real_data, 1)[0]
    rng = np.random.RandomState(1)
    frames = [noisy(photo, rng) for _ in range(8)]
    stream = [frames[i % 8] for i in range(900)]          # 30 s at 30 FPS
    on, gate = run_gate(stream)
    off, _ = run_gate(stream, enabled=False)
    assert len(off) == 900
    assert on == [0, 300, 600] and gate.gated == 897      # first frame, then every --refresh
    assert len(on) <= 0.1 * len(off)


def test_slideshow_every_cut_captioned_at_once(real_data):
    slides = photos(real_data, 8, size=(320, 240))
    rng = np.random.RandomState(2)
    stream = [noisy(slides[i // 120], rng) for i in range(8 * 120)]   # 4 s each at 30 FPS
    picked, _ = run_gate(stream)
    for cut in range(0, 960, 120):
        assert cut in picked, (cut, picked)
    assert len(picked) <= 8 + 8          # cuts plus at most one refresh per slide


def test_shown_caption_holds_against_synonyms():
    shown = ShownCaption()
    assert shown.accept("a dog runs", changed=True)
    assert not shown.accept("a dog is running", changed=False)   # a refresh, once: held
    assert not shown.accept("a dog runs", changed=False)
    assert not shown.accept("a brown dog runs", changed=False)
    assert shown.accept("a brown dog runs", changed=False)       # the same new text twice
    assert shown.accept("two men talk", changed=True)            # backed by a scene change
    assert shown.shown == 3 and shown.text == "two men talk"
    free = ShownCaption(hold=False)                              # --gate off: every caption
    assert free.accept("a", False) and free.accept("b", False) and free.shown == 2


@pytest.fixture(scope="module")
def slideshow(real_data, tmp_path_factory):
    """4 real photos, 1 s each at 30 FPS, 160x120, with sensor noise: a 120-frame .avi."""
    path = str(tmp_path_factory.mktemp("slides") / "slides.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (160, 120))
    rng = np.random.RandomState(3)
    for photo in photos(real_data, 4, size=(160, 120)):
        for _ in range(30):
            writer.write(noisy(photo, rng))
    writer.release()
    return path


def test_loop_gate_on_and_off(tiny_bundle, slideshow, tmp_path):
    from edge.backends import open_backend
    from edge.live import run_live
    from edge.sinks import CaptionLog
    from edge.sources import open_source

    summaries = {}
    for mode in ("on", "off"):
        log_path = str(tmp_path / ("%s.jsonl" % mode))
        backend = open_backend(tiny_bundle, backend="ort")
        log = CaptionLog(log_path, backend.name)
        # paced at the file's 30 FPS, as a camera: how many frames pass while the model
        # is busy then depends on its latency against 33 ms, not on how fast this
        # machine happens to decode frames at that moment
        summaries[mode] = run_live(open_source(slideshow), backend, log=log, realtime=True,
                                   gate=SceneGate(enabled=mode == "on"))
        log.close()
        with open(log_path) as handle:
            lines = [json.loads(line) for line in handle]
        summary = summaries[mode]
        assert len(lines) == summary["captions_computed"] == summary["captions"]
        assert sum(l["shown"] for l in lines) == summary["captions_shown"]
        if mode == "on":      # no frame is dropped at this pace: every cut is the frame captioned
            assert [l["frame"] for l in lines] == [0, 30, 60, 90]
            assert 90 <= summary["gated_frames"] <= 116   # frames met while the model was busy are not gated
    assert summaries["off"]["gated_frames"] == 0
    assert summaries["off"]["captions_computed"] > 2 * summaries["on"]["captions_computed"]


def car_scene(bgr, rng, size=(640, 480)):
    """A street-like scene: a textured grey road and sky, a car-sized box of colour
    ``bgr`` covering a third of the picture, with sensor noise."""
    w, h = size
    scene = np.empty((h, w, 3), np.float32)
    scene[: h // 2] = (200, 190, 170)                       # sky
    scene[h // 2:] = (90, 90, 90)                           # road
    scene[h // 3: h * 5 // 6, w // 5: w * 4 // 5] = bgr     # the car
    scene += rng.normal(0, 4.0, scene.shape)
    return np.clip(scene, 0, 255).astype(np.uint8)


def luma(bgr):
    b, g, r = bgr
    return 0.114 * b + 0.587 * g + 0.299 * r


def test_a_cut_of_equal_brightness_and_other_colour_is_a_change():
    red, green = (40, 30, 210), (70, 126, 10)                # BGR, the same luma (+- 1 level)
    assert abs(luma(red) - luma(green)) < 1.5
    rng = np.random.RandomState(4)
    a, b = car_scene(red, rng), car_scene(green, rng)
    grey = [cv2.cvtColor(x, cv2.COLOR_BGR2GRAY).astype(np.int16) for x in (a, b)]
    assert np.abs(grey[0].mean() - grey[1].mean()) < 1.0   # a grey thumbnail sees no cut
    assert change_fraction(thumbnail(a), thumbnail(b)) > 0.2
    assert change_fraction(thumbnail(a), thumbnail(car_scene(red, rng))) < 0.02
    gate = SceneGate()
    gate.check(a, 0.0)
    gate.captioned(a, 0.0)
    assert gate.check(car_scene(red, rng), 1.0) == (False, False)
    assert gate.check(b, 2.0) == (True, True)


def test_the_demo_videos_colour_cut_is_caught(tmp_path):
    """The demo's scene video (its seed and size): the cut at frame 360 changes colour
    more than brightness (a grey thumbnail missed it); every cut of it is a change."""
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), "scripts"))
    import demo
    path = str(tmp_path / "scenes.mp4")
    demo.scene_video(path, scenes=7, seconds=2.0)
    capture, frames = cv2.VideoCapture(path), []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(thumbnail(frame))
    assert len(frames) == 420
    changes = [change_fraction(frames[cut - 1], frames[cut]) for cut in range(60, 420, 60)]
    assert min(changes) > 0.1, changes
