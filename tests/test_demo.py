"""The demo's own parts (video of scenes, frames, log, report, tool runner).

The whole ``scripts/demo.py --tiny`` run drives seven real CLIs and takes one to
two minutes on two shared cores, too long for the suite: it runs only with
NANOCAP_DEMO_SMOKE=1 (CI and developers run the full demo by hand).
"""
import json
import os
import re
import shlex
import socket
import subprocess
import sys

import cv2
import pytest

from edge.errors import NanocapError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import demo  # noqa: E402


def test_scene_video_frames_and_truth(tmp_path):
    video = str(tmp_path / "scenes.mp4")
    truth = demo.scene_video(video, scenes=3, seconds=0.2, size=96, fps=30.0)
    assert [t["from_frame"] for t in truth] == [0, 6, 12]
    assert truth[0]["caption"].startswith("a ") and len(truth[1]["caption"].split()) > 6
    capture = cv2.VideoCapture(video)
    count, first = 0, None
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        first = frame if first is None else first
        count += 1
    assert count == 18 and first.shape == (96, 96, 3)
    saved = demo.save_frames(video, str(tmp_path / "frames"), [2, 13, 99])
    assert [i for i, _ in saved] == [2, 13]
    assert cv2.imread(str(tmp_path / saved[1][1])).shape == (96, 96, 3)


def test_caption_log_lookup(tmp_path):
    path = tmp_path / "captions.jsonl"
    path.write_text('{"frame": 0, "caption": "a red circle"}\n'
                    '{"frame": 9, "caption": "a blue square"}\n')
    log = demo.read_log(str(path))
    assert demo.caption_at(log, 5) == "a red circle" and demo.caption_at(log, 9) == "a blue square"
    assert demo.read_log(str(tmp_path / "none.jsonl")) == []


def test_run_tool_reads_last_json_line_and_fails_clearly(tmp_path):
    log = str(tmp_path / "demo.log")
    got = demo.run_tool(["-c", "print('working'); print('{\"CIDEr\": 2.5}')"], log)
    assert got == {"CIDEr": 2.5}
    assert demo.run_tool(["-c", "print('no json')"], log) is None
    with pytest.raises(NanocapError, match="exit 3"):
        demo.run_tool(["-c", "import sys; sys.exit(3)"], log)
    assert "working" in open(log).read()


def test_report_has_scores_parity_fps_and_frames(tmp_path):
    out = str(tmp_path)
    (tmp_path / "benchmark.md").write_text("| backend | captions/s |\n|---|---|\n| ort-cpu | 99.0 |\n")
    facts = {"minutes": 10, "limit": 300, "images": 3000, "size": 96, "elapsed": "14:10",
             "scores": {"Bleu_1": 0.9, "Bleu_4": 0.61, "METEOR": 0.4, "ROUGE_L": 0.8,
                        "CIDEr": 2.2},
             "parity": {"fp32": {"caption_match": 1.0, "token_match": 1.0,
                                 "max_abs_logit_diff": 1e-5},
                        "int8": {"caption_match": 0.9, "token_match": 0.97,
                                 "max_abs_logit_diff": 0.3}},
             "live": {"display_fps": 29.9, "caption_fps": 25.0, "frames": 480,
                      "caption_latency_ms": {"p50": 12.0, "p95": 20.0}, "dropped_frames": 3,
                      "backend": "ort", "providers": ["CPUExecutionProvider"]},
             "truth": [{"from_frame": 0, "caption": "a small red circle"}],
             "frames": [(45, "frames/frame_00045.png")],
             "log": [{"frame": 30, "caption": "a small red circle"}],
             "durations": [("training", 600.0)]}
    text = open(demo.write_report(out, facts)).read()
    assert "| 0.900 | 0.610 | 0.400 | 0.800 | 2.200 |" in text
    assert "| int8 | 0.900 | 0.970 | 0.30000 |" in text
    assert "display 29.9 FPS" in text and "| ort-cpu | 99.0 |" in text
    assert "![frame 45](frames/frame_00045.png)" in text
    assert 'true scene "a small red circle"; caption shown "a small red circle"' in text


def try_next_commands(readme=os.path.join(ROOT, "README.md")):
    """The command lines of README.md's "Try next" block (its first bash block after
    the "### Try next" heading), comments and blank lines left out."""
    with open(readme) as handle:
        section = handle.read().split("### Try next", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_try_next_block_has_no_placeholders():
    commands = try_next_commands()
    assert len(commands) >= 5
    for line in commands:
        argv = shlex.split(line)
        assert argv[0] == "python", line
        assert not re.search(r"[\[\]<>]|\.\.\.|\bDIR\b|\bFILE\b", line), line
        assert any(a.startswith("demo-out/") for a in argv), line   # works on the demo's output


SMOKE = pytest.mark.skipif(os.environ.get("NANOCAP_DEMO_SMOKE") != "1",
                           reason="the whole tiny demo takes minutes: set NANOCAP_DEMO_SMOKE=1")


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    """``scripts/demo.py --tiny --out WORK/demo-out``: ``(WORK, stdout)``. ``--tiny``
    trains one epoch; ``--minutes 5`` only keeps a busy machine from ending it first."""
    work = tmp_path_factory.mktemp("demo")
    out = str(work / "demo-out")
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "scripts", "demo.py"),
                             "--tiny", "--minutes", "5", "--out", out], cwd=ROOT,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True)
    stdout, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 0, stderr[-2000:]
    return str(work), stdout


@pytest.mark.slow
@SMOKE
def test_tiny_demo_end_to_end(tiny_demo):
    work, stdout = tiny_demo
    out = os.path.join(work, "demo-out")
    summary = json.loads(stdout.strip().splitlines()[-1])
    for name in ("bundle/nanocap.json", "live.mp4", "captions.jsonl", "report.md"):
        assert os.path.isfile(os.path.join(out, name)), name
    assert summary["CIDEr"] is not None and summary["display_fps"] > 0
    report = open(os.path.join(out, "report.md")).read()
    assert "CIDEr" in report and "captions/s" in report and "frames/frame_" in report
    assert "load average" in report and "1 thread per engine" in report


def _port_free(port):
    probe = socket.socket()
    try:
        probe.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        probe.close()


@pytest.mark.slow
@SMOKE
def test_try_next_commands_run_as_written(tiny_demo):
    """Each "Try next" line of README.md, run by bash as written, from a folder holding
    the tiny demo's ``demo-out/`` and the repository's ``scripts/``."""
    work, _ = tiny_demo
    if not os.path.exists(os.path.join(work, "scripts")):
        os.symlink(os.path.join(ROOT, "scripts"), os.path.join(work, "scripts"))
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for line in try_next_commands():
        if "http://127.0.0.1:8080" in line and not _port_free(8080):
            continue      # another program holds 8080 here: the web line cannot run as written
        proc = subprocess.Popen(["bash", "-c", line.replace("python ", sys.executable + " ", 1)],
                                cwd=work, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, universal_newlines=True)
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, (line, err[-2000:])
        assert out.strip(), line
    assert os.path.getsize(os.path.join(work, "demo-out", "again.mp4")) > 0
