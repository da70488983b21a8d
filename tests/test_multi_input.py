"""Several inputs in one process (issue 21): one capture thread per input, one
captioner batching their frames into one backend call, outputs per input.
Real sources (synthetic:// and video files), real ONNX Runtime, real subprocesses."""
import json
import os

import cv2
import numpy as np

from edge.backends import open_backend
from edge.live import run_live
from edge.sources import open_source
from edge.synthetic import SyntheticScene
from tests.test_live import count_frames, read_log, run_edge
from tests.test_publish import Receiver, Subscriber, broker, needs_broker, wait_for  # noqa: F401

FLAT = "synthetic://?width=96&height=72&frames=%d&pace=0&seed=%d"


def test_two_inputs_captioned_in_one_call_with_files_per_input(tiny_bundle, tmp_path):
    result = run_edge([FLAT % (40, 1), "rec-{input}.avi", "--input", FLAT % (30, 2),
                       "--bundle", tiny_bundle, "--headless", "--gate", "off",
                       "--log", "caps-{input}.jsonl"], str(tmp_path))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    inputs = summary["inputs"]
    assert [(i["input"], i["name"], i["frames"]) for i in inputs] == [(0, "cam0", 40),
                                                                      (1, "cam1", 30)]
    assert summary["frames"] == 70 and summary["recorded_frames"] == 70
    # batches: fewer backend calls than captions (both inputs in one call)
    assert summary["caption_calls"] < summary["captions"], summary
    assert len(count_frames(str(tmp_path / "rec-cam0.avi"))) == 40
    assert len(count_frames(str(tmp_path / "rec-cam1.avi"))) == 30
    for index in (0, 1):
        records = read_log(str(tmp_path / ("caps-cam%d.jsonl" % index)))
        assert records and all(r["input"] == index for r in records)
    assert summary["log_lines"] == summary["captions"]


def test_one_log_names_the_input_and_max_frames_is_per_input(tiny_bundle, tmp_path):
    result = run_edge([FLAT % (0, 1), "--input", FLAT % (0, 2), "--input", FLAT % (0, 3),
                       "--bundle", tiny_bundle, "--headless", "--max-frames", "25",
                       "--log", "caps.jsonl", "--gate", "off"], str(tmp_path))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert [i["frames"] for i in summary["inputs"]] == [25, 25, 25]
    assert summary["ended"] == "max frames"
    records = read_log(str(tmp_path / "caps.jsonl"))
    assert set(r["input"] for r in records) == {0, 1, 2}
    assert len(records) == summary["captions"]


def test_recording_without_input_placeholder_is_refused(tiny_bundle, tmp_path):
    result = run_edge([FLAT % (10, 1), "rec.avi", "--input", FLAT % (10, 2),
                       "--bundle", tiny_bundle, "--headless"], str(tmp_path))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "{input}" in result.stderr and "rec-{input}.avi" in result.stderr
    assert not os.listdir(str(tmp_path))


def _photos(real_data, count):
    folder = os.path.join(real_data, "flickr8k", "images")
    return [cv2.imread(os.path.join(folder, name)) for name in sorted(os.listdir(folder))[:count]]


def test_batched_tokens_equal_one_frame_at_a_time(varied_bundle, real_data):
    """A model whose captions depend on the image: the batched call gives each frame
    its own caption, in order, equal to captioning it alone."""
    frames = _photos(real_data, 8) + [SyntheticScene(96, 72, seed=1).frame(3)]
    for decode in ("greedy", "beam"):
        backend = open_backend(varied_bundle, backend="ort", decode=decode)
        batched = [r.tokens for r in backend.caption(frames)]
        single = [backend.caption([frame])[0].tokens for frame in frames]
        assert len(set(tuple(t) for t in single)) >= 3, (decode, single)   # it can tell
        assert [list(t) for t in batched] == [list(t) for t in single], decode
        assert len(batched) == len(frames)


def test_slow_and_ending_inputs_never_delay_the_others(tiny_bundle):
    """Input 0: a 30 FPS camera stand-in for 3 s; input 1 ends after 10 frames;
    input 2 delivers 2 frames a second. Input 0 keeps its rate and every frame."""
    sources = [open_source("synthetic://?width=96&height=72&fps=30&frames=90&seed=1"),
               open_source("synthetic://?width=96&height=72&fps=30&frames=10&seed=2"),
               open_source("synthetic://?width=96&height=72&fps=2&frames=6&seed=3")]
    backend = open_backend(tiny_bundle, backend="ort")
    summary = run_live(sources, backend, [], gate=None)
    first, ended, slow = summary["inputs"]
    assert ended["frames"] == 10 and slow["frames"] == 6
    assert first["frames"] + first["dropped_frames"] == 90
    assert first["display_fps"] >= 25.0 and first["dropped_frames"] <= 3, first
    assert summary["display_fps"] == min(i["display_fps"] for i in summary["inputs"])
    assert summary["frames"] == sum(i["frames"] for i in summary["inputs"])


def read_events(port, want, timeout=20):
    """Caption events from ``/events`` (raw socket) until ``want(events)`` or timeout."""
    import socket
    import time
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(b"GET /events HTTP/1.0\r\n\r\n")
    data, events, end = b"", [], time.time() + timeout
    while time.time() < end and not want(events):
        data += sock.recv(65536)
        *lines, rest = data.split(b"\n")
        data = rest
        events += [json.loads(l[len(b"data: "):]) for l in lines if l.startswith(b"data: ")]
    sock.close()
    return events


def test_web_view_serves_every_input(tiny_bundle, tmp_path):
    from tests.test_web import LiveRun, read_mjpeg_frames
    sizes = [(320, 240), (160, 120), (200, 100)]
    uris = ["synthetic://?width=%d&height=%d&seed=%d" % (w, h, i)
            for i, (w, h) in enumerate(sizes)]
    run = LiveRun(tiny_bundle, str(tmp_path), ["--input", uris[1], "--input", uris[2],
                                               "--refresh", "0.3"], source=uris[0])
    try:
        for index, (width, height) in enumerate(sizes):
            frames = read_mjpeg_frames(run.port, 2, "/stream/%d.mjpg" % index)
            assert [f.shape[:2] for f in frames] == [(height, width)] * 2
            status, headers, body = run.get("/snapshot/%d.jpg" % index)
            assert status == 200 and headers["Content-Type"] == "image/jpeg"
            image = cv2.imdecode(np.frombuffer(body, np.uint8), 1)
            assert image.shape[:2] == (height, width)
        assert read_mjpeg_frames(run.port, 1)[0].shape[:2] == (240, 320)   # input 0
        assert run.get("/snapshot.jpg")[0] == 200
        for path in ("/stream/3.mjpg", "/snapshot/3.jpg", "/stream/1.jpg", "/stream/x.mjpg"):
            assert run.get(path)[0] == 404, path
        status = json.loads(run.get("/status.json")[2].decode("utf-8"))
        assert [(i["name"], i["state"]["state"]) for i in status["inputs"]] == [
            ("cam0", "live"), ("cam1", "live"), ("cam2", "live")]
        assert all(i["display_fps"] for i in status["inputs"])
        events = read_events(run.port, lambda e: len(set(r["input"] for r in e)) == 3)
        assert set(r["input"] for r in events) == {0, 1, 2}
        assert b"/stream/" in run.get("/")[2]
    finally:
        _, summary, err = run.stop()
    assert summary is not None and len(summary["inputs"]) == 3, err


def test_mosaic_tiles_inputs_in_place():
    from edge.mosaic import tile_frames
    colours = [(0, 0, 255), (0, 255, 0), (255, 0, 0)]
    frames = [np.full((120, 160, 3), c, np.uint8) for c in colours] + [None]
    mosaic = tile_frames(frames)
    assert mosaic.shape == (120, 160, 3)        # 2x2 tiles of 80x60
    for index, colour in enumerate(colours + [(0, 0, 0)]):
        row, col = divmod(index, 2)
        assert tuple(mosaic[row * 60 + 30, col * 80 + 40]) == colour, index
    assert tile_frames([frames[0], frames[1]]).shape == (60, 160, 3)


@needs_broker
def test_two_inputs_publish_each_camera(tiny_bundle, broker, tmp_path):  # noqa: F811
    """MQTT and a webhook get every shown caption of each input, as cam0 and cam1;
    Home Assistant discovery has a sensor per input."""
    watcher, receiver = Subscriber(broker.port), Receiver()
    result = run_edge([FLAT % (40, 1), "mqtt://127.0.0.1:%d/t" % broker.port, receiver.url,
                       "--input", FLAT % (30, 2), "--bundle", tiny_bundle, "--headless",
                       "--gate", "off", "--log", "caps.jsonl", "--mqtt-ha-discovery"],
                      str(tmp_path), timeout=120)
    assert result.returncode == 0, result.stderr
    shown = [r for r in read_log(str(tmp_path / "caps.jsonl")) if r["shown"]]
    assert set(r["input"] for r in shown) == {0, 1}
    for index in (0, 1):
        frames = [r["frame"] for r in shown if r["input"] == index]
        topic = "t/cam%d/caption" % index
        assert wait_for(lambda: len(watcher.captions(topic)) == len(frames)), topic
        assert [c["frame"] for c in watcher.captions(topic)] == frames
        assert [p["frame"] for p, _ in receiver.posts if p["camera"] == "cam%d" % index] \
            == frames
    sensors = [t for t, _, _ in watcher.messages if t.startswith("homeassistant/sensor/")]
    assert any("cam0" in t for t in sensors) and any("cam1" in t for t in sensors), sensors
    watcher.close()
    receiver.close()


def test_lost_input_is_waited_for_while_the_others_go_on(tiny_bundle, tmp_path):
    """Input 1 is unplugged for 1.5 s: its outage is logged with its index, and
    input 0 keeps its rate and its captions meanwhile."""
    from edge.gate import SceneGate
    from edge.sinks import CaptionLog
    from tests.test_field import UnpluggedCamera
    log = CaptionLog(str(tmp_path / "caps.jsonl"), "ort")
    camera = open_source("synthetic://?width=96&height=72&fps=30&frames=90&seed=1")
    summary = run_live([camera, UnpluggedCamera(before=15, gone_s=1.5, after=15)],
                       open_backend(tiny_bundle, backend="ort"), [], log, backoff_s=0.05,
                       gate=SceneGate(enabled=False))
    log.close()
    first, lost = summary["inputs"]
    assert lost["frames"] == 30 and lost["outages"] == 1 and summary["outages"] == 1
    assert first["frames"] + first["dropped_frames"] == 90 and first["display_fps"] >= 25.0
    lines = read_log(str(tmp_path / "caps.jsonl"))
    events = [l for l in lines if "event" in l]
    assert [(e["event"], e["input"]) for e in events] == [("source_lost", 1), ("source_back", 1)]
    during = [l for l in lines if "caption" in l and l["input"] == 0
              and events[0]["t"] < l["t"] < events[1]["t"]]
    assert len(during) >= 10        # input 0 captioned all along the outage
