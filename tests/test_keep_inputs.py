"""Nothing given is destroyed: export --out, edge output paths, atomic writes, the unit."""
import os
import shutil
import stat
import subprocess
import sys

import cv2
import numpy as np
import pytest

from edge import atomic
from edge.bundle import load_bundle

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _video(path, frames=40):
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for i in range(frames):
        writer.write(np.full((48, 64, 3), i * 5 % 255, np.uint8))
    writer.release()
    return open(path, "rb").read()


def _edge(args, cwd):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "edge"] + args, cwd=cwd, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=120)


@pytest.mark.parametrize("args", [
    ["v.mp4", "v.mp4"],                       # the recording is the input
    ["v.mp4", "--log", "v.mp4"],              # the log is the input
    ["file://v.mp4", "./link.mp4"],           # a link to the input is the input
    ["v.mp4", "--log", "BUNDLE/nanocap.json"],
    ["v.mp4", "BUNDLE/out.avi"],              # inside the bundle
    ["v.mp4", "a.avi", "--log", "a.avi"],     # one file named twice
    ["frames", "--snapshot-dir", "frames"],   # snapshots into the input folder
])
def test_outputs_that_are_inputs_are_refused_before_anything_opens(tiny_bundle, tmp_path, args):
    work = str(tmp_path)
    before = _video(os.path.join(work, "v.mp4"))
    os.symlink("v.mp4", os.path.join(work, "link.mp4"))
    os.mkdir(os.path.join(work, "frames"))
    bundle = os.path.join(work, "bundle")
    shutil.copytree(tiny_bundle, bundle)
    meta = open(os.path.join(bundle, "nanocap.json"), "rb").read()
    args = [a.replace("BUNDLE", "bundle") for a in args]
    result = _edge(args + ["--bundle", "bundle", "--headless" if "--snapshot-dir" not in args
                           else "--max-frames=1"], work)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and ("refusing" in lines[0] or "twice" in lines[0]), lines
    assert open(os.path.join(work, "v.mp4"), "rb").read() == before
    assert open(os.path.join(bundle, "nanocap.json"), "rb").read() == meta
    assert sorted(os.listdir(work)) == ["bundle", "frames", "link.mp4", "v.mp4"]


def test_export_replaces_only_a_bundle(tiny_bundle, tiny_checkpoint, tmp_path, capsys):
    from export.__main__ import main as export_main
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pt").write_bytes(b"weights")
    (run / "log.jsonl").write_text("{}\n")
    for out in (str(run), str(tmp_path)):      # a run folder, a folder holding anything
        before = sorted(os.listdir(out))
        assert export_main(["onnx", "--checkpoint", tiny_checkpoint, "--out", out,
                            "--no-check"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "not a nanocap bundle" in err[0], err
        assert sorted(os.listdir(out)) == before
    # a bundle holding the checkpoint it is exported from is not replaced either
    bundle = str(tmp_path / "b")
    shutil.copytree(tiny_bundle, bundle)
    shutil.copy(tiny_checkpoint, os.path.join(bundle, "tiny.pt"))
    assert export_main(["onnx", "--checkpoint", os.path.join(bundle, "tiny.pt"),
                        "--out", bundle, "--no-check"]) == 2
    assert "an input of this export" in capsys.readouterr().err
    os.remove(os.path.join(bundle, "tiny.pt"))
    # a bundle is replaced whole, readable by another user (a boot service)
    assert export_main(["onnx", "--checkpoint", tiny_checkpoint, "--out", bundle,
                        "--max-len", "3", "--no-check"]) == 0
    assert load_bundle(bundle).max_len == 3
    assert stat.S_IMODE(os.stat(bundle).st_mode) == 0o755
    for name in os.listdir(bundle):
        assert stat.S_IMODE(os.stat(os.path.join(bundle, name)).st_mode) == 0o644, name
    assert sorted(os.listdir(str(tmp_path))) == ["b", "run"]


def test_replace_dir_swaps_in_one_step(tmp_path, monkeypatch):
    """The exchange leaves no moment without the folder; without it (another OS),
    a failed second rename puts the old folder back."""
    old, new = tmp_path / "b", tmp_path / "new"
    old.mkdir()
    (old / "nanocap.json").write_text("old")
    new.mkdir()
    (new / "nanocap.json").write_text("new")
    assert atomic._exchange(str(new), str(old))       # renameat2 works here
    assert (old / "nanocap.json").read_text() == "new"

    def no_rename(src, dst):
        raise AssertionError("a rename leaves a moment without the folder")
    with monkeypatch.context() as patch:                # one exchange, no renames
        patch.setattr(os, "rename", no_rename)
        atomic.replace_dir(str(new), str(old))
    assert (old / "nanocap.json").read_text() == "old" and not new.exists()
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    new.mkdir()
    (new / "nanocap.json").write_text("new")
    real_rename = os.rename

    def rename(src, dst):
        if src == str(new):
            raise OSError("disk gone")
        real_rename(src, dst)
    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError):
        atomic.replace_dir(str(new), str(old))
    assert (old / "nanocap.json").read_text() == "old"


def test_write_bytes_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = str(tmp_path / "nanocap.json")
    atomic.write_json(path, {"a": 1})
    mode = stat.S_IMODE(os.stat(path).st_mode)

    def fail(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError):
        atomic.write_json(path, {"a": 2})
    assert open(path).read() == '{\n "a": 1\n}\n'
    assert os.listdir(str(tmp_path)) == ["nanocap.json"]     # no temporary file left
    assert mode == 0o666 & ~atomic._umask()
