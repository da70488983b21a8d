#!/usr/bin/env python3
"""Measure issue 13's figures with the real CLI: ``python scripts/check_live.py --bundle B``.

Runs ``python -m edge`` (edge/ only: works under Python 3.6 with the Jetson
runtime) and prints one line per figure, then one JSON object with them all:

 1. web: 640x480 paced at 30 FPS, 20 clients reading /stream.mjpg and one that
    connects and never reads: display_fps (floor 28.5) and what the clients got;
    the exposure line on @ without a token; 401 and no image bytes without the token;
 2. gate, static scene: one real photo with per-frame sensor noise, 30 s at 30 FPS
    (--realtime): captions computed with the default gate / --gate off (<= 0.10)
    and how often the shown caption changed (<= 1);
 3. gate, slideshow: 8 real photos, 4 s each: per cut, the delay to the first
    caption computed after it (frame delay + latency; <= 0.5 s) and whether it
    was shown (a model that gives two photos the same text shows no new caption);
    ``--inputs N``: N paced copies in one process with the web view, per input
    (display_fps, cut delays, JPEGs a client on ``/stream/<i>.mjpg`` got);
 4. recording: 1920x1080 paced at 30 FPS to .mp4 for ``--seconds`` s: display_fps
    with and without recording (floor 28.5), recorded_frames, record_dropped; and
    a file read without --realtime records every frame.
 5. field (only with ``--only field``): ``--minutes`` of a real RTSP camera
    (scripts/rtsp_server.py; or ``--field-source synthetic``) recorded and logged
    under the disk caps while web clients come and go; every ``--outage-every`` s
    the server is stopped, or paused (connected, silent), for ``--outage-s`` s.
    Figures: minutes run, outages survived, recovery seconds (server back to
    frames flowing), RSS at start, after 1 min and at the end, disk used, the
    log files and segments kept against their caps, and segments that do not play.

Run it on a quiet machine; ``uptime`` is printed with the figures.
"""
import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import cv2
import numpy as np

from field_tools import RtspCamera, du, http_get, plays, rss_kb, status, web_visitor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHOTOS = os.path.join(ROOT, "tests", "fixtures", "data", "flickr8k", "images")


def start(args, cwd):
    """``python -m edge ARGS`` with a web output on loopback port 0; returns (process, port)."""
    process = subprocess.Popen([sys.executable, "-m", "edge"] + args, cwd=cwd,
                               env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, universal_newlines=True)
    lines = []
    while True:
        line = process.stderr.readline()
        lines.append(line)
        if not line:
            raise SystemExit("no web view line: %s" % "".join(lines))
        match = re.search(r"web view on http://[^:]+:(\d+)/", line)
        if match:
            return process, int(match.group(1)), lines


def finish(process, signum=signal.SIGINT):
    if signum is not None:
        process.send_signal(signum)
    out, err = process.communicate(timeout=120)
    if process.returncode != 0:
        raise SystemExit("run failed: %s" % err.strip().splitlines()[-1:])
    return json.loads(out.strip().splitlines()[-1])


def edge(args, cwd):
    """Run ``python -m edge ARGS`` to its end; the summary dict."""
    process = subprocess.Popen([sys.executable, "-m", "edge"] + args, cwd=cwd,
                               env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, universal_newlines=True)
    return finish(process, None)


def reader(port, stop, counts, index, path="/stream.mjpg"):
    """A client reading ``path`` as fast as it can; counts JPEG parts."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(("GET %s HTTP/1.0\r\n\r\n" % path).encode("ascii"))
    while not stop.is_set():
        try:
            data = sock.recv(262144)
        except socket.timeout:
            continue
        if not data:
            break
        counts[index] += data.count(b"Content-Type: image/jpeg")
    sock.close()


def check_web(bundle, work, seconds, clients=20):
    process, port, _ = start(["synthetic://?width=640&height=480&fps=30",
                              "http://127.0.0.1:0", "--bundle", bundle, "--headless",
                              "--web-clients", str(clients + 2)], work)
    time.sleep(2.0)
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", port))
    stalled.sendall(b"GET /stream.mjpg HTTP/1.0\r\n\r\n")
    stop, counts = threading.Event(), [0] * clients
    threads = [threading.Thread(target=reader, args=(port, stop, counts, i))
               for i in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    summary = finish(process)
    stop.set()
    for thread in threads:
        thread.join(5)
    stalled.close()
    per_client = [c / float(seconds) for c in counts]
    result = {"display_fps": summary["display_fps"], "frames": summary["frames"],
              "dropped_frames": summary["dropped_frames"],
              "client_fps_min": round(min(per_client), 2),
              "client_fps_max": round(max(per_client), 2)}
    process, port, lines = start(["synthetic://?width=160&height=120", "http://@:0",
                                  "--bundle", bundle, "--headless"], work)
    finish(process)
    result["exposure_line"] = any("visible on the network" in l for l in lines)
    process, port, _ = start(["synthetic://?width=160&height=120", "http://@:0", "--bundle",
                              bundle, "--headless", "--web-token", "t0ken"], work)
    reply = http_get(port, "/stream.mjpg")
    finish(process)
    result["no_token_401"] = reply.startswith(b"HTTP/1.0 401")
    result["no_token_image_bytes"] = reply.count(b"\xff\xd8")
    return result


def photo(name, size):
    return cv2.resize(cv2.imread(os.path.join(PHOTOS, name)), size)


def write_video(path, slides, seconds_each, fps=30, size=(640, 480), sigma=4.0):
    """An MJPG .avi of ``slides`` (photo names) each held ``seconds_each`` s, with noise."""
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), float(fps), size)
    rng = np.random.RandomState(0)
    for name in slides:
        image = photo(name, size).astype(np.float32)
        for _ in range(int(seconds_each * fps)):
            noise = rng.normal(0, sigma, image.shape).astype(np.float32)
            writer.write(np.clip(image + noise, 0, 255).astype(np.uint8))
    writer.release()
    return path


def read_log(path):
    with open(path) as handle:
        return [json.loads(line) for line in handle]


def check_static(bundle, work, names, seconds=30):
    video = write_video(os.path.join(work, "static.avi"), names[:1], seconds)
    runs = {}
    for gate in ("on", "off"):
        log = os.path.join(work, "static-%s.jsonl" % gate)
        summary = edge([video, "--bundle", bundle, "--headless", "--realtime", "--gate", gate,
                        "--log", log], work)
        runs[gate] = summary
    return {"computed_on": runs["on"]["captions_computed"],
            "computed_off": runs["off"]["captions_computed"],
            "ratio": round(runs["on"]["captions_computed"]
                           / float(max(1, runs["off"]["captions_computed"])), 4),
            "shown_changes_on": runs["on"]["captions_shown"] - 1,
            "gated_frames_on": runs["on"]["gated_frames"],
            "display_fps_on": runs["on"]["display_fps"]}


def check_slideshow(bundle, work, names, seconds_each=4, fps=30, inputs=1):
    """With ``inputs`` > 1: that many paced copies of the slideshow in one process
    (``--input``) with the web view, a client on each ``/stream/<i>.mjpg``; the
    figures per input."""
    video = write_video(os.path.join(work, "slides.avi"), names[:8], seconds_each)
    log = os.path.join(work, "slides.jsonl")
    args = [video, "--bundle", bundle, "--headless", "--realtime", "--log", log]
    if inputs == 1:
        summary = edge(args, work)
        return slideshow_figures(read_log(log), summary, names, seconds_each, fps)
    process, port, _ = start([video, "http://127.0.0.1:0"] + args[1:]
                             + ["--input=" + video] * (inputs - 1), work)
    stop, counts = threading.Event(), [0] * inputs
    threads = [threading.Thread(target=reader, args=(port, stop, counts, i, "/stream/%d.mjpg" % i))
               for i in range(inputs)]
    for thread in threads:
        thread.start()
    summary = finish(process, None)
    stop.set()
    lines = read_log(log)
    return {"inputs": [dict(slideshow_figures([l for l in lines if l["input"] == i], each, names,
                                              seconds_each, fps),
                            display_fps=each["display_fps"], web_jpegs=counts[i])
                       for i, each in enumerate(summary["inputs"])],
            "captions": summary["captions"], "caption_calls": summary["caption_calls"]}


def slideshow_figures(lines, summary, names, seconds_each, fps):
    """Per cut: the delay to the first caption after it, and whether it was shown."""
    delays, shown = [], 0
    for k in range(len(names[:8])):
        cut = k * seconds_each * fps
        after = [l for l in lines if cut <= l["frame"] < cut + seconds_each * fps]
        if not after:
            delays.append(None)
            continue
        first = after[0]
        delays.append(round((first["frame"] - cut) / float(fps) + first["latency_ms"] / 1e3, 3))
        shown += int(first["shown"])
    return {"cut_delays_s": delays, "max_delay_s": max(d for d in delays if d is not None)
            if any(d is not None for d in delays) else None,
            "cuts_captioned": sum(d is not None for d in delays),
            "cuts_with_new_shown_caption": shown, "captions_shown": summary["captions_shown"],
            "distinct_captions": len(set(l["caption"] for l in lines))}


def check_recording(bundle, work, seconds):
    uri = "synthetic://?width=1920&height=1080&fps=30&frames=%d" % int(30 * seconds)
    plain = edge([uri, "--bundle", bundle, "--headless"], work)
    recorded = edge([uri, os.path.join(work, "rec1080.mp4"), "--bundle", bundle, "--headless"],
                    work)
    video = os.path.join(work, "static.avi")
    capture = cv2.VideoCapture(video)
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    whole = edge([video, os.path.join(work, "copy.mp4"), "--bundle", bundle, "--headless"], work)
    return {"display_fps_plain": plain["display_fps"],
            "display_fps_recording": recorded["display_fps"],
            "recorded_frames": recorded["recorded_frames"],
            "record_dropped": recorded["record_dropped"], "frames": recorded["frames"],
            "file_frames": total, "file_recorded": whole["recorded_frames"],
            "file_record_dropped": whole["record_dropped"]}


# -- 5. field: outages, web clients, disk caps, memory ------------------------------

def check_field(bundle, work, args):
    """One long run: outages (server stopped, or paused: connected but silent, in
    turn) every ``--outage-every`` s, web clients coming and going, the disk caps."""
    camera = RtspCamera() if args.field_source == "rtsp" else None
    uri = camera.url if camera else "synthetic://?width=640&height=480&fps=30"
    log, rec = os.path.join(work, "field.jsonl"), os.path.join(work, "field.mp4")
    caps = ["--log-max-mb", str(args.log_max_mb), "--segment-min", str(args.segment_min),
            "--record-max-gb", str(args.record_max_gb)]
    process, port, _ = start([uri, rec, "http://127.0.0.1:0", "--bundle", bundle, "--headless",
                              "--log", log, "--gate", args.field_gate] + caps, work)
    stop, seen, errors = threading.Event(), {"visits": 0, "errors": 0}, []
    drain = threading.Thread(target=lambda: errors.extend(l for l in process.stderr
                                                          if "nanocap" in l))
    drain.start()
    visitors = [threading.Thread(target=web_visitor, args=(port, stop, seen)) for _ in range(3)]
    for thread in visitors:
        thread.start()
    began, samples, outages, restarts, disk_max = time.time(), [], {}, [], 0
    next_outage = began + args.outage_every
    while time.time() - began < args.minutes * 60:
        time.sleep(5)
        samples.append((time.time() - began, rss_kb(process.pid)))
        files = [os.path.join(work, n) for n in os.listdir(work) if n.startswith("field")]
        disk_max = max(disk_max, du(files))
        last = status(port)["source"]["last_outage"]
        if last:
            outages[last["lost_at"]] = last
        left = args.minutes * 60 - (time.time() - began)
        if camera and time.time() >= next_outage and left > args.outage_s + 20:
            paused = len(restarts) % 2 == 1
            camera.pause(True) if paused else camera.stop()
            time.sleep(args.outage_s)
            camera.pause(False) if paused else camera.start()
            restarts.append((time.time(), "paused" if paused else "stopped"))
            next_outage = time.time() + args.outage_every
    process.send_signal(signal.SIGTERM)
    out = process.stdout.read()
    process.wait(60)
    drain.join(10)
    summary = json.loads(out.strip().splitlines()[-1])
    if summary["last_outage"]:
        outages[summary["last_outage"]["lost_at"]] = summary["last_outage"]
    stop.set()
    for thread in visitors:
        thread.join(10)
    if camera:
        camera.stop()
    logs = sorted(n for n in os.listdir(work) if n.startswith("field.jsonl"))
    segments = sorted(n for n in os.listdir(work) if n.startswith("field-") and
                      n.endswith(".mp4"))
    recovery = []
    for when, how in restarts:
        back = [o["back_at"] for o in outages.values() if o["back_at"] >= when - 1]
        recovery.append([how, round(min(back) - when, 1) if back else None])
    after_minute = [kb for t, kb in samples if t >= 60]
    return {"minutes_run": round((time.time() - began) / 60.0, 2),
            "outages_caused": len(restarts), "outages_seen": summary["outages"],
            "outages_survived": sum(1 for r in recovery if r[1] is not None),
            "recovery_s": recovery, "rss_kb_start": samples[0][1] if samples else None,
            "rss_kb_at_1min": after_minute[0] if after_minute else None,
            "rss_kb_end": samples[-1][1] if samples else None,
            "rss_kb_each_minute": [kb for t, kb in samples[11::12]],
            "rss_growth_after_1min": round(after_minute[-1] / float(after_minute[0]) - 1, 4)
            if after_minute else None, "disk_used_max_bytes": disk_max,
            "log_files": len(logs), "log_bytes_max_file": max(
                os.path.getsize(os.path.join(work, n)) for n in logs) if logs else 0,
            "log_cap_bytes": int((3 + 1) * args.log_max_mb * 1e6),
            "segments_kept": len(segments),
            "segments_bytes": du([os.path.join(work, n) for n in segments]),
            "record_cap_bytes": int(args.record_max_gb * 1e9),
            "segments_unplayable": [n for n in segments if plays(os.path.join(work, n)) == 0],
            "captions": summary["captions"], "frames": summary["frames"],
            "failures": summary["failures"], "error": summary["error"],
            "web_visits": seen["visits"], "web_errors": seen["errors"],
            "returncode": process.returncode, "stderr_lines": errors[-12:]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="length of the web and recording runs (default 20)")
    parser.add_argument("--only", help="comma-separated: web,static,slideshow,recording,field "
                                       "(default all but field)")
    parser.add_argument("--minutes", type=float, default=5.0, help="field: run length")
    parser.add_argument("--inputs", type=int, default=1,
                        help="slideshow: that many paced inputs in one process, with the web "
                             "view (figures per input)")
    parser.add_argument("--field-source", default="rtsp", choices=("rtsp", "synthetic"))
    parser.add_argument("--field-gate", default="off", choices=("on", "off"))
    parser.add_argument("--outage-every", type=float, default=120.0, help="field: seconds")
    parser.add_argument("--outage-s", type=float, default=30.0, help="field: outage length")
    parser.add_argument("--log-max-mb", type=float, default=1.0)
    parser.add_argument("--segment-min", type=float, default=0.1)
    parser.add_argument("--record-max-gb", type=float, default=0.01)
    args = parser.parse_args()
    bundle = os.path.abspath(args.bundle)
    names = sorted(os.listdir(PHOTOS))
    only = set((args.only or "web,static,slideshow,recording").split(","))
    figures = {"uptime": subprocess.check_output(["uptime"], universal_newlines=True).strip()}
    work = tempfile.mkdtemp(prefix="check_live-")
    checks = [("web", lambda: check_web(bundle, work, args.seconds)),
              ("static", lambda: check_static(bundle, work, names)),
              ("slideshow", lambda: check_slideshow(bundle, work, names, inputs=args.inputs)),
              ("recording", lambda: check_recording(bundle, work, args.seconds)),
              ("field", lambda: check_field(bundle, work, args))]
    if "recording" in only and "static" not in only:
        write_video(os.path.join(work, "static.avi"), names[:1], 10)
    for name, check in checks:
        if name in only:
            figures[name] = check()
            print("%-9s %s" % (name, json.dumps(figures[name])), flush=True)
    figures["uptime_after"] = subprocess.check_output(["uptime"], universal_newlines=True).strip()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
