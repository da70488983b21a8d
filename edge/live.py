"""The live loop: three threads, no queue that grows.

- capture (``edge.sources.FrameGrabber``) keeps only the newest frame (cameras,
  streams, ``realtime``), or hands a file over frame by frame;
- the captioner (``edge.captioner.AsyncCaptioner``) takes the newest frame
  whenever it is free and the scene gate (``edge.gate``) says it is worth it;
- the main thread (``run_live``) draws every frame with the shown caption and
  its age and feeds the sinks (window, ``edge.recorder`` threads, ``edge.web``);
  it never waits for the model, an encoder or a web client.

``run_live`` returns the summary dict printed by ``python -m edge``::

    {"frames", "display_fps", "captions", "caption_fps",
     "caption_latency_ms": {"p50", "p95"}, "backend", "providers", "dropped_frames",
     "captions_computed", "captions_shown", "gated_frames", "recorded_frames",
     "record_dropped", "failures", "outages", "last_outage", "error", ...}

Failures are said when they happen (see ``edge.sinks``): a sink or the log that
fails calls its ``on_failure`` hook; the loop writes the line to stderr at once,
lists it in ``status()["failures"]`` (``/status.json``) and in the summary, and
goes on; ``error`` (exit code 1) then names the first. A lost live source
(``edge.grabber``) is waited for: the last frame is shown marked as lost with
the time since, and ``source_lost``/``source_back`` events go to the log.
"""
import sys
import threading
import time

import numpy as np

from edge.captioner import AsyncCaptioner, FpsMeter, latency_percentiles
from edge.errors import NanocapError
from edge.gate import SceneGate, ShownCaption
from edge.grabber import FrameGrabber
from edge.overlay import draw_lost, draw_overlay
from edge.publish import publisher_stats
from edge.recorder import Recorder
from edge.sinks import VideoSink, caption_record, save_snapshot

__all__ = ["AsyncCaptioner", "FpsMeter", "LiveLoop", "latency_percentiles", "run_live"]
KEY_QUIT = (ord("q"), 27)
KEY_PAUSE = ord(" ")
KEY_SNAPSHOT = ord("s")


class LiveLoop(object):
    """One run of the live captioner; ``run()`` returns the summary dict."""

    def __init__(self, source, backend, sinks=(), log=None, realtime=False, max_frames=None,
                 every=1, stop_event=None, snapshot_dir=".", retries=None, backoff_s=0.5,
                 final_wait_s=10.0, message=None, gate=None, read_timeout_s=5.0):
        self.source, self.backend, self.log = source, backend, log
        self.realtime, self.max_frames, self.every = realtime, max_frames, max(1, int(every))
        self.stop_event = stop_event or threading.Event()
        self.snapshot_dir, self.final_wait_s = snapshot_dir, final_wait_s
        self.message = message or (lambda text: sys.stderr.write("nanocap: %s\n" % text))
        drop = bool(source.live or realtime)
        pace = source.fps if (realtime and not source.live) else None
        self.grabber = FrameGrabber(source, drop=drop, pace_fps=pace, retries=retries,
                                    backoff_s=backoff_s, read_timeout_s=read_timeout_s,
                                    on_event=self._on_source_event)
        self.sinks = [Recorder(s, drop=drop, measure=source.live) if isinstance(s, VideoSink)
                      else s for s in sinks]
        self.failures, self.failures_lock = [], threading.Lock()
        for sink in self.sinks + ([log] if log is not None else []):
            if hasattr(sink, "status_source"):
                sink.status_source = self.status
            if hasattr(sink, "on_failure"):
                sink.on_failure = self._on_failure
        self.gate = gate or SceneGate()
        self.hold = ShownCaption(hold=self.gate.enabled)
        self.captioner = AsyncCaptioner(backend, self._on_caption)
        self.meter, self.shown, self.start = FpsMeter(), None, time.perf_counter()
        self.frames, self.paused, self.last_offer, self.reason = 0, False, None, "end of input"
        self.first_at = self.last_at = None
        self.last_frame, self.lost_drawn_at, self.recaption = None, 0.0, False
        self.caption_each = getattr(source, "caption_each", False)  # images: one caption each

    def _offer(self, index, frame, now):
        if self.last_offer is not None and index - self.last_offer < self.every:
            return
        if not self.captioner.idle():
            return
        if self.recaption:
            self.recaption, self.gate.last_thumb = False, None
        wanted, changed = self.gate.check(frame, now) if not self.caption_each else (True, True)
        if wanted and self.captioner.offer(index, frame.copy(), changed):
            self.gate.captioned(frame, now)
            self.last_offer = index
            if self.caption_each:
                self._wait_caption()

    def _on_caption(self, latest, changed):
        """From the captioner thread: decide what is shown, log it, tell the web view."""
        shown = self.hold.accept(latest.result.text, changed)
        if shown:
            self.shown = latest
        start = self.log.start if self.log is not None else self.start
        record = caption_record(start, latest.index, latest.result, latest.done_at,
                                self.backend.name, shown)
        if self.log is not None:
            self.log.write_record(record)
        for sink in self.sinks:
            if hasattr(sink, "add_caption"):
                try:
                    sink.add_caption(record)
                except Exception as exc:  # a sink never stops the captioner thread
                    self._on_failure("%s failed: %s" % (type(sink).__name__, exc))

    def _on_failure(self, text):
        """A sink or the log failed (or recovered): said at once, kept for status/summary."""
        with self.failures_lock:
            self.failures.append({"time": round(time.time(), 3), "error": text})
        self.message(text)

    def _on_source_event(self, event):
        """From the capture thread: the source was lost or came back."""
        if event["event"] == "source_lost":
            self.message("%s lost (%s); reconnecting" % (event["source"], event["reason"]))
        else:
            self.message("%s back after %.1f s" % (event["source"], event["outage_s"]))
            self.recaption = True       # the scene may have changed meanwhile
        if self.log is not None:
            record = dict(event, t=round(time.perf_counter() - self.log.start, 4))
            self.log.write_record(record)

    def _show_lost(self):
        """While the source is lost: the last frame, marked, to every sink but recordings."""
        lost_s = self.grabber.lost_seconds()
        now = time.perf_counter()
        if lost_s is None or self.last_frame is None or now - self.lost_drawn_at < 0.2:
            return
        self.lost_drawn_at = now
        frame = draw_lost(self.last_frame.copy(), lost_s, getattr(self.source, "name", "camera"))
        for sink in self.sinks:
            if not isinstance(sink, Recorder):
                self._act(sink.write(frame), frame, self.frames)

    def _wait_caption(self):
        """Wait (up to ``final_wait_s``, less if stopped) for the caption in hand."""
        end = time.perf_counter() + self.final_wait_s
        while not self.stop_event.is_set() and time.perf_counter() < end:
            if self.captioner.wait_idle(0.1):
                return

    def _draw(self, frame, now):
        latest = self.shown
        extra = "%s %s" % (self.backend.name, self.backend.precision)
        if self.paused:
            extra += " | paused"
        if latest is None:
            return draw_overlay(frame, None, self.meter.fps, extra=extra)
        return draw_overlay(frame, latest.result.text, self.meter.fps, latest.result.latency_ms,
                            now - latest.offered_at, extra)

    def _feed(self, frame, index, now=0.0):
        """Write ``frame`` to every sink; act on keys from a window."""
        for sink in self.sinks:
            key = sink.write(frame, index, now) if isinstance(sink, Recorder) else sink.write(frame)
            self._act(key, frame, index)

    def _act(self, key, frame, index):
        """Act on a key pressed in a window."""
        if key in KEY_QUIT:
            self.reason = "quit key"
            self.stop_event.set()
        elif key == KEY_PAUSE:
            self.paused = not self.paused
        elif key == KEY_SNAPSHOT:
            self.message("snapshot %s" % save_snapshot(frame, self.snapshot_dir, index))

    def _hold(self, frame, index):
        """While paused: keep the window alive on the last frame, poll keys."""
        while self.paused and self.sinks and not self.stop_event.is_set():
            self._feed(frame, index)
            time.sleep(0.03)

    def _step(self):
        """Show one frame; False when the input has ended."""
        item = self.grabber.get(timeout=0.1)
        if item is None:
            self._show_lost()
            return not self.grabber.finished
        index, frame = item
        now = time.perf_counter()
        self._offer(index, frame, now)
        self.meter.tick(now)
        self.first_at = now if self.first_at is None else self.first_at
        self.last_at = now
        self._draw(frame, now)
        self._feed(frame, index, now)
        self.last_frame = frame
        self.frames += 1
        if self.paused:
            self._hold(frame, index)
        return True

    def warm_up(self):
        """One untimed caption, so first-call setup does not stall the first frames."""
        bundle = getattr(self.backend, "bundle", None)
        height, width = getattr(bundle, "input_size", (64, 64))
        try:
            self.backend.caption([np.zeros((height, width, 3), np.uint8)])
        except Exception as exc:  # reported as one line, like a failure in the loop
            raise NanocapError("captioning failed: %s" % exc)

    def run(self):
        """Run until the input ends, ``max_frames``, a quit key or ``stop_event``."""
        self.warm_up()
        start = self.start = time.perf_counter()
        self.captioner.start()
        self.grabber.start()
        try:
            while not self.stop_event.is_set():
                if self.max_frames and self.frames >= self.max_frames:
                    self.reason = "max frames"
                    break
                if self.captioner.error:
                    raise NanocapError(self.captioner.error)
                if not self._step():
                    break
            if self.stop_event.is_set() and self.reason == "end of input":
                self.reason = "stopped"
            elif not self.source.live and not self.realtime:
                self._wait_caption()  # the last caption makes the log
        finally:
            self.grabber.stop()
            if self.captioner.stop():
                self.backend.close()
            for sink in self.sinks:
                if isinstance(sink, Recorder):
                    sink.close()
        return self.summary(time.perf_counter() - start)

    def _counts(self, elapsed):
        """The figures ``status()`` and ``summary()`` share (``elapsed`` in seconds)."""
        return {"frames": self.frames, "captions_computed": self.captioner.count,
                "caption_fps": round(self.captioner.count / elapsed, 3) if elapsed > 0 else None,
                "caption_latency_ms": latency_percentiles(list(self.captioner.latencies)),
                "backend": self.backend.name, "providers": list(self.backend.providers),
                "captions_shown": self.hold.shown, "gated_frames": self.gate.gated,
                "dropped_frames": self.grabber.dropped, "outages": self.grabber.outages,
                "last_outage": self.grabber.last_outage, "failures": list(self.failures)}

    def status(self):
        """Live figures for ``/status.json`` (read from the web server's threads)."""
        data = self._counts(time.perf_counter() - self.start)
        fps = self.meter.fps
        data["display_fps"] = round(fps, 2) if fps else None
        lost_s = self.grabber.lost_seconds()
        data["source"] = {"state": "live" if lost_s is None else "lost",
                          "lost_at": self.grabber.lost_at,
                          "lost_s": None if lost_s is None else round(lost_s, 1),
                          "reason": self.grabber.lost_reason if lost_s is not None else None,
                          "outages": self.grabber.outages,
                          "last_outage": self.grabber.last_outage}
        return data

    def summary(self, elapsed):
        recorders = [s for s in self.sinks if isinstance(s, Recorder)]
        span = (self.last_at - self.first_at) if self.frames > 1 else 0.0
        data = self._counts(elapsed)
        data.update({
            "display_fps": round((self.frames - 1) / span, 3) if span > 0 else None,
            "captions": self.captioner.count,
            "precision": self.backend.precision, "decode": self.backend.decode,
            "seconds": round(elapsed, 3), "ended": self.reason,
            "recorded_frames": sum(r.written for r in recorders),
            "record_dropped": sum(r.dropped for r in recorders),
            "error": self.grabber.error or next((r.error for r in recorders if r.error), None)
            or next((f["error"] for f in self.failures), None)})
        if self.log is not None:
            data["log_lines"], data["log_skipped"] = self.log.lines, self.log.skipped
        outputs = publisher_stats(self.sinks)
        if outputs:
            data["outputs"] = outputs
        return data


def run_live(source, backend, sinks=(), log=None, **options):
    """Run the live loop (see ``LiveLoop`` for ``options``); returns the summary dict."""
    return LiveLoop(source, backend, sinks, log, **options).run()
