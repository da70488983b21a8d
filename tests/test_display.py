"""No window can open (headless OpenCV, no display): ``python -m edge`` says why
in one line, with what to install, and runs headless instead."""
import os
import subprocess
import sys

from edge.display import no_window_line, window_problem

GUI = "  GUI:                           GTK3\n    GTK+:  YES (ver 3.24)\n"
NO_GUI = "  GUI:                           NONE\n    VTK support:  NO\n"


def test_window_problem_names_the_cause_and_the_fix():
    assert window_problem(GUI, {"DISPLAY": ":0"}, "linux") is None
    assert window_problem(GUI, {"WAYLAND_DISPLAY": "wayland-0"}, "linux") is None
    assert window_problem(GUI, {}, "win32") is None              # no DISPLAY outside X11
    headless = window_problem(NO_GUI, {"DISPLAY": ":0"}, "linux")
    assert "opencv-python-headless" in headless and "pip install opencv-python" in headless
    no_display = window_problem(GUI, {}, "linux")
    assert "DISPLAY" in no_display and "ssh -X" in no_display
    line = no_window_line(no_display)
    assert "\n" not in line and "headless" in line and "http://127.0.0.1:8080" in line


def test_cli_says_why_no_window_in_one_line(tiny_bundle, tmp_path):
    env = dict(os.environ)
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen([sys.executable, "-m", "edge", "synthetic://?frames=5&pace=0",
                             "--bundle", tiny_bundle], cwd=str(tmp_path), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    lines = [l for l in err.splitlines() if "no window:" in l]
    assert len(lines) == 1, err
    assert window_problem() in lines[0] and "Running headless instead" in lines[0]
    assert '"frames": 5' in out
    quiet = subprocess.Popen([sys.executable, "-m", "edge", "synthetic://?frames=2&pace=0",
                              "--bundle", tiny_bundle, "--headless"], cwd=str(tmp_path),
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             universal_newlines=True)
    assert "no window:" not in quiet.communicate(timeout=120)[1]    # asked for: no complaint
