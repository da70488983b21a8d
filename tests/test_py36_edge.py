"""The edge runtime on the Jetson floor: Python 3.6, numpy 1.19.5, onnxruntime 1.10.0,
opencv-python-headless 4.6 (``.venv36``, built by ``.ci/py36-venv``, or ``$NANOCAP_PY36``;
see ``tests.conftest.py36_python``), with only ``edge/`` on the path. Skipped, with
the reason, where that interpreter is not installed."""
import json
import os
import shutil
import subprocess

import cv2
import pytest

from tests.conftest import PY36, needs_py36
from tests.test_live import count_frames

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = needs_py36


def run36(args, cwd, **env_extra):
    env = dict(os.environ, PYTHONPATH=cwd, **env_extra)
    env.pop("PYTHONHOME", None)
    return subprocess.run([PY36] + args, cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=300)


@pytest.fixture(scope="module")
def edge_only(tmp_path_factory):
    """A folder holding a copy of ``edge/`` and nothing else of the project."""
    folder = tmp_path_factory.mktemp("edge_only")
    shutil.copytree(os.path.join(ROOT, "edge"), str(folder / "edge"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    return str(folder)


def test_versions_are_the_floor(edge_only):
    result = run36(["-c", "import sys, numpy, onnxruntime; print(sys.version_info[:2], "
                          "numpy.__version__, onnxruntime.__version__)"], edge_only)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[:2] == ["(3,", "6)"] and "1.19" in result.stdout


def write_photo_video(path, real_data, photos, frames_each, size):
    """An MJPG 30 FPS .avi of the first ``photos`` real photos, ``frames_each`` frames each."""
    folder = os.path.join(real_data, "flickr8k", "images")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 30.0, size)
    for name in sorted(os.listdir(folder))[:photos]:
        photo = cv2.resize(cv2.imread(os.path.join(folder, name)), size)
        for _ in range(frames_each):
            writer.write(photo)
    writer.release()


def test_live_cli_on_py36(tiny_bundle, real_data, edge_only):
    write_photo_video(os.path.join(edge_only, "in.avi"), real_data, 3, 5, (160, 120))
    for decode in ("greedy", "beam"):
        result = run36(["-m", "edge", "in.avi", "out.mp4", "--bundle", tiny_bundle,
                        "--headless", "--decode", decode, "--log", "caps.jsonl"], edge_only)
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout.strip().splitlines()[-1])
        assert summary["frames"] == 15 and summary["providers"] == ["CPUExecutionProvider"]
        assert len(count_frames(os.path.join(edge_only, "out.mp4"))) == 15
        with open(os.path.join(edge_only, "caps.jsonl")) as handle:
            assert len(handle.readlines()) == summary["captions"] >= 1
    missing = run36(["-m", "edge", "/dev/video97", "--bundle", tiny_bundle], edge_only)
    assert missing.returncode != 0 and "camera not found" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_web_view_gate_and_recorder_on_py36(tiny_bundle, real_data, edge_only):
    """The web view (real HTTP), the gate and the recorder thread under Python 3.6."""
    from tests.test_web import LiveRun, read_mjpeg_frames
    write_photo_video(os.path.join(edge_only, "web.avi"), real_data, 2, 90, (320, 240))
    run = LiveRun(tiny_bundle, edge_only, ["--realtime", "--log", "web.jsonl"],
                  source="web.avi", python=PY36, path=edge_only, outputs=["rec.mp4"])
    try:
        frames = read_mjpeg_frames(run.port, 2)  # the loop runs: its status is in
        status = json.loads(run.get("/status.json")[2].decode("utf-8"))
        assert run.get("/snapshot.jpg")[0] == 200 and run.get("/x")[0] == 404
    finally:
        seconds, summary, err = run.stop()
    assert status["backend"] == "ort" and len(frames) == 2 and frames[0].shape == (240, 320, 3)
    assert summary is not None and seconds < 5, err
    assert summary["recorded_frames"] == len(count_frames(os.path.join(edge_only, "rec.mp4")))
    assert summary["captions_computed"] >= 1 and summary["gated_frames"] > 0
    with open(os.path.join(edge_only, "web.jsonl")) as handle:
        assert all("shown" in json.loads(line) for line in handle)


def test_edge_unit_tests_on_py36():
    """The torch-free edge tests (sources, overlay, gate, web URIs) pass under Python 3.6 too."""
    result = run36(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_sources.py",
                    "tests/test_overlay.py", "tests/test_gate.py", "tests/test_web.py"], ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout


def test_several_inputs_on_py36(tiny_bundle, edge_only):
    """Three inputs in one process under Python 3.6: batched captions, files per input."""
    flat = "synthetic://?width=96&height=72&frames=%d&pace=0&seed=%d"
    result = run36(["-m", "edge", flat % (30, 1), "r36-{input}.avi", "--input", flat % (20, 2),
                    "--input", "synthetic://?width=96&height=72&fps=30&frames=45&seed=3",
                    "--bundle", tiny_bundle, "--headless", "--gate", "off",
                    "--log", "c36.jsonl"], edge_only)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert [i["frames"] for i in summary["inputs"][:2]] == [30, 20]
    assert summary["caption_calls"] < summary["captions"]
    assert [len(count_frames(os.path.join(edge_only, "r36-cam%d.avi" % i))) for i in (0, 1)] \
        == [30, 20]
    with open(os.path.join(edge_only, "c36.jsonl")) as handle:
        assert set(json.loads(line)["input"] for line in handle) == {0, 1, 2}
