"""``python -m edge ... --systemd-unit``: a unit for the exact command, runnable from anywhere."""
import os
import shlex
import shutil
import subprocess
import sys

import cv2
import numpy as np

from edge.systemd import quote

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _unit(args, cwd):
    env = dict(os.environ, PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, "-m", "edge"] + args + ["--systemd-unit"],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, timeout=120)
    return result.returncode, result.stdout, result.stderr


def test_unit_runs_the_exact_command_with_absolute_paths(tiny_bundle, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    writer = cv2.VideoWriter(str(work / "in.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10.0,
                             (64, 48))
    for i in range(5):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()
    os.symlink(tiny_bundle, str(work / "bundle"))
    code, unit, err = _unit(["in.avi", "out.avi", "--bundle", "bundle", "--log", "my caps.jsonl",
                             "--max-frames", "3"], str(work))
    assert code == 0, err
    assert not (work / "out.avi").exists()          # printing the unit opens nothing
    fields = dict(line.split("=", 1) for line in unit.splitlines()
                  if "=" in line and not line.startswith("#"))
    assert fields["User"] == "nanocap" and fields["Restart"] == "always"
    assert fields["WorkingDirectory"] == str(work)
    assert fields["WantedBy"] == "multi-user.target"
    argv = shlex.split(fields["ExecStart"].replace("%%", "%").replace("$$", "$"))
    assert argv[0] == os.path.abspath(sys.executable) and argv[1:3] == ["-m", "edge"]
    assert argv[3:5] == [str(work / "in.avi"), str(work / "out.avi")]
    assert str(work / "my caps.jsonl") in argv and str(work / "bundle") in argv
    assert "--headless" in argv and "--systemd-unit" not in argv
    if shutil.which("systemd-analyze"):         # systemd's own parser accepts it
        (tmp_path / "nanocap.service").write_text(unit)
        check = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "nanocap.service")],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               universal_newlines=True, timeout=60)
        assert check.returncode == 0, check.stdout
    # the command runs from any folder, as the service would
    env = dict(os.environ, PYTHONPATH=fields["Environment"].split("=", 1)[-1])
    result = subprocess.run(argv, cwd=str(tmp_path), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (work / "out.avi").stat().st_size > 0 and (work / "my caps.jsonl").exists()


def test_unit_needs_a_good_bundle(tmp_path):
    code, unit, err = _unit(["0", "--bundle", str(tmp_path / "none")], str(tmp_path))
    assert code == 2 and not unit and "bundle directory not found" in err


def test_quote_escapes_what_systemd_expands():
    assert quote("/usr/bin/python3") == "/usr/bin/python3"
    assert quote("a b") == '"a b"'
    assert quote("50%") == '"50%%"' and quote("$HOME") == '"$$HOME"'
    assert quote('say "hi"') == '"say \\"hi\\""'
