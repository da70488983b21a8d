"""``python -m edge INPUT [OUTPUT...] --bundle DIR`` (also ``nanocap-live``): the live captioner.

INPUT: ``0``, ``/dev/video0``, ``v4l2:///dev/video0``, ``csi://0``, a video file or
``file://``, ``rtsp://...``, ``gst://<pipeline>``, ``synthetic://``, an image or a folder.
OUTPUT: ``display://0`` (default where a display exists), ``.mp4``/``.avi`` files and/or
``http://@:8080`` (a web view: page, MJPEG stream, caption events; ``@`` = every interface).
Keys in the window: q/Esc quit, space pause, s snapshot. The last stdout line is one
JSON summary (frames, display_fps, captions, caption_fps, caption_latency_ms {p50,
p95}, backend, providers, dropped_frames, captions_computed, captions_shown, gated_frames,
recorded_frames, record_dropped, outages, last_outage, failures, error).
In the field (docs/field.md): a lost live source is waited for (``--reconnect N``
bounds it, ``--read-timeout``); ``--log-max-mb``/``--log-keep`` rotate the log,
``--segment-min``/``--record-max-gb`` cut and cap recordings; SIGHUP stops the run
like SIGTERM unless ``--on-hangup continue``; a failing sink exits 1.
Several inputs (``--input URI``, repeatable; ``edge.inputs``): one capture thread
each, captioned together in one engine call; ``{input}`` in recording and log
names; the summary gains ``inputs`` (per input) and ``caption_calls``.
"""
import argparse
import json
import signal
import sys
import threading

from edge.display import no_window_line, window_problem
from edge.errors import NanocapError, run_cli, say
from edge.gate import DEFAULT_CHANGE, DEFAULT_REFRESH_S, SceneGate
from edge.paths import check_output_paths
from edge.publish import publisher_stats
from edge.systemd import print_unit

PROG = "nanocap-live"


def get_parser():
    parser = argparse.ArgumentParser(
        prog=PROG, description="Caption a camera, stream or video live, on the picture.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="inputs: 0 | /dev/video0 | v4l2:///dev/video0 | csi://0 | FILE | file://FILE |"
               " rtsp://... | gst://PIPELINE | synthetic://[?fps=30&frames=N&width=W&height=H]"
               " | IMAGE | FOLDER\noutputs: display://0 | OUT.mp4 | OUT.avi | http://@:8080 |"
               " http://127.0.0.1:8080 | mqtt://HOST[:PORT]/TOPIC | webhook+http(s)://HOST/PATH\n"
               "keys: q/Esc quit, space pause, s snapshot")
    add = parser.add_argument
    add("input", help="input URI (see below); input 0, named cam0")
    add("--input", dest="more_inputs", action="append", default=[], metavar="URI",
        help="one more input (repeatable; cam1, cam2...): all are captioned in one engine "
             "call; recordings and --log take {input} in their name (rec-{input}.mp4)")
    add("outputs", nargs="*", metavar="OUTPUT",
        help="display://0, video files, http://HOST:PORT web views, mqtt://HOST[:PORT]/TOPIC "
             "brokers and/or webhook+http(s)://... receivers")
    add("--bundle", required=True, help="bundle directory (nanocap.json + ONNX graphs)")
    add("--headless", action="store_true", help="no window (recording and log still work)")
    add("--log", metavar="FILE.jsonl", help="one JSON line per new caption")
    add("--backend", default="auto", choices=("auto", "ort", "trt"))
    add("--precision", default=None, choices=("fp32", "fp16", "int8"),
        help="default: the fastest the TensorRT GPU supports (fp16 on a Nano), "
             "fp32 with ONNX Runtime")
    add("--decode", default="greedy", choices=("greedy", "beam"))
    add("--beam-size", type=int, default=3, help="beam width for --decode beam")
    add("--providers", help="ONNX Runtime providers to try, comma-separated "
                            "(default TensorRT,CUDA,CPU where available)")
    add("--workspace-mb", type=int, help="TensorRT builder workspace (MiB)")
    add("--realtime", action="store_true",
        help="play a file at its own frame rate, dropping stale frames like a camera")
    add("--max-frames", type=int, help="stop after N displayed frames")
    add("--every", type=int, default=1, help="caption at most every N frames")
    add("--width", type=int, default=640, help="camera width (default 640)")
    add("--height", type=int, default=480, help="camera height (default 480)")
    add("--fps", type=float, default=30.0, help="camera frame rate (default 30)")
    add("--latency", type=int, default=200, help="RTSP jitter buffer in ms (default 200)")
    add("--gstreamer", action="store_true",
        help="open USB cameras through a GStreamer MJPG pipeline (JetPack's OpenCV)")
    add("--flip", type=int, default=0, help="csi:// nvvidconv flip-method (0-7)")
    add("--reconnect", type=int, default=None, metavar="N",
        help="reopen attempts for a lost camera or stream (default: keep trying for as "
             "long as the run lasts, backoff capped at 5 s)")
    add("--read-timeout", type=float, default=5.0, metavar="S",
        help="a live source that gives no frame for S seconds is lost (default %(default)s)")
    add("--on-hangup", default="stop", choices=("stop", "continue"),
        help="SIGHUP (a dropped SSH session): stop like SIGTERM (default) or continue")
    add("--log-max-mb", type=float, metavar="MB",
        help="rotate the --log file at MB megabytes (keeps --log-keep older files)")
    add("--log-keep", type=int, default=3, metavar="N",
        help="rotated log files kept (FILE.1 ... FILE.N; default %(default)s)")
    add("--segment-min", type=float, metavar="MIN",
        help="cut recordings into files of MIN minutes of video, each playable "
             "(OUT-YYYYmmdd-HHMMSS.mp4)")
    add("--record-max-gb", type=float, metavar="GB",
        help="delete the oldest segments while all of them hold more than GB "
             "(implies --segment-min 10 unless given)")
    add("--snapshot-dir", default=".", help="where s saves PNG snapshots")
    add("--gate", default="on", choices=("on", "off"),
        help="on: caption when the scene changed or --refresh passed, and change the shown "
             "caption only when the scene backs it; off: caption whenever the model is free")
    add("--change", type=float, default=DEFAULT_CHANGE,
        help="scene change: fraction of a 32x24 colour thumbnail's cells where a channel "
             "moved by more than 16 levels since the frame last captioned (default %(default)s)")
    add("--refresh", type=float, default=DEFAULT_REFRESH_S, metavar="S",
        help="recaption an unchanged scene every S seconds (default %(default)s; 0 never)")
    add("--web-token", metavar="T", help="web view: every route needs ?token=T or "
                                         "Authorization: Bearer T")
    add("--web-fps", type=float, default=15.0, help="web view: JPEGs per second at most "
                                                    "(default %(default)s)")
    add("--web-clients", type=int, default=8, help="web view: streams at once (default "
                                                   "%(default)s; then 503)")
    add("--mqtt-ha-discovery", action="store_true",
        help="mqtt:// outputs: publish Home Assistant discovery (a caption sensor per input)")
    add("--webhook-header", action="append", default=[], metavar="'NAME: VALUE'",
        help="webhook outputs: an extra HTTP header (repeatable), e.g. 'Authorization: Bearer T'")
    add("--web-allow-host", action="append", default=[], metavar="NAME",
        help="web view: also answer requests for this host name (repeatable; loopback "
             "names, IP addresses and this machine's name are always allowed)")
    add("--systemd-unit", action="store_true",
        help="print a systemd unit that runs this command at boot, then exit")
    add("--debug", action="store_true", help="show tracebacks")
    return parser


def _providers(text):
    if not text:
        return None
    names = [p.strip() for p in text.split(",") if p.strip()]
    return [n if n.endswith("ExecutionProvider") else n + "ExecutionProvider" for n in names]


def _install_signals(stop_event, on_hangup="stop"):
    """SIGINT/SIGTERM (and SIGHUP, unless ``on_hangup`` is "continue": then it is
    ignored) set ``stop_event``: the loop ends within a frame, the recording is
    finalised, the log closed, the summary printed. A second SIGINT interrupts at
    once. Returns the previous handlers."""
    def handler(signum, _frame):
        if stop_event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop_event.set()
    previous = dict((s, signal.signal(s, handler)) for s in (signal.SIGINT, signal.SIGTERM))
    if hasattr(signal, "SIGHUP"):
        previous[signal.SIGHUP] = signal.signal(
            signal.SIGHUP, signal.SIG_IGN if on_hangup == "continue" else handler)
    return previous


def _open_all(args):
    """Open sources, backend, sinks and logs, in that order (each fails with one line).
    Returns ``(sources, backend, sinks, input_sinks, logs)`` (see ``edge.inputs``)."""
    from edge.backends import open_backend
    from edge.bundle import load_bundle
    from edge.inputs import input_uris, split_outputs
    from edge.sinks import open_outputs
    from edge.sources import open_source
    from edge.webhook import parse_header

    uris = input_uris(args)
    shared, own = split_outputs(args.outputs, len(uris))
    bundle = load_bundle(args.bundle)
    opened = []
    try:
        sources = []
        for uri in uris:
            sources.append(open_source(uri, args.width, args.height, args.fps, args.latency,
                                       args.gstreamer, args.flip, args.read_timeout))
            opened.append(sources[-1])
        backend = open_backend(bundle, args.backend, args.precision, args.decode,
                               args.beam_size, _providers(args.providers), args.workspace_mb,
                               max_batch=len(uris))
        opened.append(backend)
        sinks = open_outputs(shared, sources[0].fps, args.headless,
                             {"token": args.web_token, "fps": args.web_fps,
                              "clients": args.web_clients, "message": say,
                              "allow_hosts": args.web_allow_host},
                             _record_options(args),
                             {"ha_discovery": args.mqtt_ha_discovery, "message": say,
                              "headers": [parse_header(h) for h in args.webhook_header],
                              "inputs": len(uris)})
        opened.extend(sinks)
        input_sinks = []
        for names, source in zip(own, sources):
            input_sinks.append(open_outputs(names, source.fps, True,
                                            record_options=_record_options(args)))
            opened.extend(input_sinks[-1])
        logs = _open_logs(args, backend, len(uris))
        opened.extend(_unique_logs(logs))
    except BaseException:
        for item in reversed(opened):
            item.close()
        raise
    return sources, backend, sinks, input_sinks, logs


def _open_logs(args, backend, count):
    """``--log``: a ``CaptionLog`` per input (the same one without ``{input}``), or None."""
    from edge.inputs import log_paths
    from edge.sinks import CaptionLog
    paths = log_paths(args.log, count)
    if paths is None:
        return None
    logs, by_path = [], {}
    try:
        for path in paths:
            if path not in by_path:
                by_path[path] = CaptionLog(path, backend.name, max_bytes=_mb(args.log_max_mb),
                                           keep=args.log_keep)
            logs.append(by_path[path])
    except BaseException:
        for log in by_path.values():
            log.close()
        raise
    return logs


def _unique_logs(logs):
    return list(dict((id(log), log) for log in (logs or [])).values())


def _mb(value, unit=1e6):
    return None if value is None else int(value * unit)


def _record_options(args):
    """``VideoSink`` keywords: segment length (s) and the total cap (bytes)."""
    segment_min = args.segment_min
    if segment_min is None and args.record_max_gb is not None:
        segment_min = 10.0
    return {"segment_s": None if segment_min is None else segment_min * 60.0,
            "max_bytes": _mb(args.record_max_gb, 1e9)}


def _check_disk_flags(args):
    for name in ("log_max_mb", "segment_min", "record_max_gb", "read_timeout"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            raise NanocapError("--%s must be > 0 (got %s)" % (name.replace("_", "-"), value))
    if args.log_keep < 0 or (args.reconnect is not None and args.reconnect < 0):
        raise NanocapError("--log-keep and --reconnect must be >= 0")


def main(argv=None):
    """Run the live captioner; returns the exit code (0 ok, 1 input lost mid-run)."""
    from edge.live import run_live

    args = get_parser().parse_args(argv)
    if args.every < 1 or (args.max_frames is not None and args.max_frames < 1):
        raise NanocapError("--every and --max-frames must be >= 1")
    if not (args.fps > 0 and args.width > 0 and args.height > 0):
        raise NanocapError("--fps, --width and --height must be > 0")
    if not 0 <= args.change <= 1 or args.refresh < 0:
        raise NanocapError("--change must be within 0..1 and --refresh >= 0 (got %s, %s)"
                           % (args.change, args.refresh))
    _check_disk_flags(args)
    check_output_paths(args)    # nothing given (input, bundle) is ever written over
    if args.systemd_unit:
        return print_unit(argv)
    stop_event = threading.Event()
    previous = _install_signals(stop_event, args.on_hangup)   # before opening: a web view is reachable at once
    sinks, input_sinks, logs = [], [], None
    try:
        sources, backend, sinks, input_sinks, logs = _open_all(args)
        source = sources[0]
        if not (args.outputs or args.headless or sinks):
            say(no_window_line(window_problem()))
        say("%s -> %s; %s" % (
            ", ".join(s.name for s in sources),
            ", ".join(args.outputs) or ("nothing (headless)" if not sinks else "display://0"),
            backend.describe()))
        summary = run_live(sources if len(sources) > 1 else source, backend, sinks,
                           logs if logs and len(logs) > 1 else (logs or [None])[0],
                           input_sinks=input_sinks, realtime=args.realtime,
                           max_frames=args.max_frames, every=args.every,
                           stop_event=stop_event, snapshot_dir=args.snapshot_dir,
                           retries=args.reconnect, message=say,
                           read_timeout_s=args.read_timeout,
                           gate=SceneGate(args.change, args.refresh, args.gate == "on"))
    finally:
        for sink in sinks + [s for own in input_sinks for s in own] + _unique_logs(logs):
            sink.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    outputs = publisher_stats(sinks)     # after close: what was delivered in the end
    if outputs:
        summary["outputs"] = outputs
    if summary.get("error"):
        say(summary["error"], PROG)
    damaged = getattr(source, "damaged", [])
    if damaged and not summary["frames"]:
        raise NanocapError("no image could be read from %s: %d damaged, e.g. %s"
                           % (source.name, len(damaged), damaged[0]))
    if damaged:
        say("skipped %d damaged image(s), e.g. %s" % (len(damaged), damaged[0]), PROG)
    try:
        sys.stdout.write(json.dumps(summary) + "\n")
        sys.stdout.flush()
    except (IOError, OSError):
        pass        # a hung-up terminal: the run itself went well
    return 1 if summary.get("error") else 0


def entry():
    """Console script ``nanocap-live`` and ``python -m edge``."""
    sys.exit(run_cli(main, prog=PROG))
