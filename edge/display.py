"""Can a window open here? If not, one line saying why, what to install, and
what ``python -m edge`` does instead.

A window needs an OpenCV built with a GUI (``opencv-python``, or JetPack's
OpenCV; ``opencv-python-headless`` has none) and, on Linux, a display server
(``DISPLAY`` or ``WAYLAND_DISPLAY``; over SSH, ``ssh -X``).
"""
import os
import re
import sys


def window_problem(build_info=None, environ=None, platform=None):
    """None where an OpenCV window can open; else why not, with the fix, as a
    phrase. The arguments default to ``cv2.getBuildInformation()``,
    ``os.environ`` and ``sys.platform`` (given in tests)."""
    if build_info is None:
        import cv2
        build_info = cv2.getBuildInformation()
    environ = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    if re.search(r"GUI:\s*NONE", build_info):
        return ("this OpenCV has no GUI (opencv-python-headless); for a window: "
                "pip uninstall -y opencv-python-headless && pip install opencv-python")
    if platform.startswith("linux") and not (environ.get("DISPLAY")
                                             or environ.get("WAYLAND_DISPLAY")):
        return ("no display (DISPLAY is not set); for a window run it on the desktop "
                "or over ssh -X")
    return None


def no_window_line(problem):
    """The one line ``python -m edge`` prints when it shows no window."""
    return ("no window: %s. Running headless instead: add OUT.mp4 to record, --log "
            "FILE.jsonl for the captions, or http://127.0.0.1:8080 for the web view"
            % problem)
