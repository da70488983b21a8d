"""The live loop: three threads, no queue that grows.

- capture (``edge.grabber.FrameGrabber``) keeps only the newest frame (cameras,
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
import threading
import time

import numpy as np

from edge.captioner import AsyncCaptioner, FpsMeter, latency_percentiles
from edge.errors import NanocapError, say
from edge.gate import SceneGate
from edge.lane import Lane, clone_gate
from edge.overlay import draw_lost, draw_overlay
from edge.publish import publisher_stats
from edge.recorder import Recorder
from edge.sinks import VideoSink, caption_record, save_snapshot

__all__ = ["AsyncCaptioner", "FpsMeter", "LiveLoop", "latency_percentiles", "run_live"]
KEY_QUIT = (ord("q"), 27)
KEY_PAUSE = ord(" ")
KEY_SNAPSHOT = ord("s")


class LiveLoop(object):
    """One run of the live captioner; ``run()`` returns the summary dict.

    ``source``: one source, or a list of them (several inputs: one ``edge.lane``
    each, named ``cam0``, ``cam1``...). ``sinks`` are shared by every input: a
    sink with ``for_input(i, n)`` (the window's mosaic, the web view) gives each
    input its own view of it, the others (publishers) get the captions of all
    inputs (records carry ``"input": i`` with several inputs) and input 0's
    frames. ``input_sinks``: a list per input of its own sinks (recordings).
    ``log``: one ``CaptionLog`` for all inputs, or a list of one per input.
    ``max_frames`` counts per input.
    """

    def __init__(self, source, backend, sinks=(), log=None, realtime=False, max_frames=None,
                 every=1, stop_event=None, snapshot_dir=".", retries=None, backoff_s=0.5,
                 final_wait_s=10.0, message=None, gate=None, read_timeout_s=5.0,
                 input_sinks=None):
        sources = list(source) if isinstance(source, (list, tuple)) else [source]
        self.multi = len(sources) > 1
        self.backend, self.realtime, self.max_frames = backend, realtime, max_frames
        self.every, self.stop_event = max(1, int(every)), stop_event or threading.Event()
        self.snapshot_dir, self.final_wait_s = snapshot_dir, final_wait_s
        self.message = message or say
        self.sinks = list(sinks)
        logs = log if isinstance(log, (list, tuple)) else [log] * len(sources)
        self.logs = [item for item in _unique(logs) if item is not None]
        gate = gate or SceneGate()
        self.ready = threading.Event()
        self.lanes = [Lane(i, src, self._lane_sinks(i, len(sources), input_sinks), logs[i],
                           gate if i == 0 else clone_gate(gate), realtime, self.ready,
                           self._on_source_event, retries=retries, backoff_s=backoff_s,
                           read_timeout_s=read_timeout_s)
                      for i, src in enumerate(sources)]
        self.failures, self.failures_lock = [], threading.Lock()
        own = [s for lane in self.lanes for s in lane.sinks if s not in self.sinks]
        for sink in self.sinks + own + self.logs:
            if hasattr(sink, "status_source"):
                sink.status_source = self.status
            if hasattr(sink, "on_failure"):
                sink.on_failure = self._on_failure
        self.captioner = AsyncCaptioner(backend, self._on_caption)
        self.start, self.paused, self.reason = time.perf_counter(), False, "end of input"

    def _lane_sinks(self, index, count, input_sinks):
        """What input ``index`` of ``count`` writes its frames to."""
        own = list(input_sinks[index]) if input_sinks else []
        if count == 1:
            return self.sinks + own
        for sink in self.sinks:
            if hasattr(sink, "for_input"):
                own.append(sink.for_input(index, count))
            elif isinstance(sink, VideoSink):
                raise NanocapError("recording %s: several inputs need {input} in the file "
                                   "name (e.g. rec-{input}.mp4)" % sink.path)
            elif index == 0:
                own.append(sink)
        return own

    def _offer(self, lane, index, frame, now):
        """``frame`` is ``lane``'s newest; when the captioner is free, the newest
        wanted frame of every input goes to it in one batch."""
        idle = self.captioner.idle()
        lane.offer_later(index, frame, now, keep=self.multi and not idle)
        if not idle:
            return
        batch = [item for item in (each.wanted(self.every) for each in self.lanes) if item]
        if batch and self.captioner.offer_batch(batch):
            if any(tag[0].caption_each for _, _, tag in batch):
                self._wait_caption()

    def _on_caption(self, latest, tag):
        """From the captioner thread: decide what is shown, log it, tell the web view."""
        lane, changed = tag
        shown = lane.hold.accept(latest.result.text, changed)
        if shown:
            lane.shown = latest
        start = lane.log.start if lane.log is not None else self.start
        record = caption_record(start, latest.index, latest.result, latest.done_at,
                                self.backend.name, shown)
        if self.multi:
            record["input"] = lane.index
        if lane.log is not None:
            lane.log.write_record(record)
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

    def _on_source_event(self, lane, event):
        """From a capture thread: ``lane``'s source was lost or came back."""
        what = "%s (%s)" % (event["source"], lane.name) if self.multi else event["source"]
        if event["event"] == "source_lost":
            self.message("%s lost (%s); reconnecting" % (what, event["reason"]))
        else:
            self.message("%s back after %.1f s" % (what, event["outage_s"]))
            lane.recaption = True       # the scene may have changed meanwhile
        if lane.log is not None:
            record = dict(event, t=round(time.perf_counter() - lane.log.start, 4))
            if self.multi:
                record["input"] = lane.index
            lane.log.write_record(record)

    def _show_lost(self, lane):
        """While ``lane``'s source is lost: its last frame, marked, to its sinks but recordings."""
        lost_s = lane.grabber.lost_seconds()
        now = time.perf_counter()
        if lost_s is None or lane.last_frame is None or now - lane.lost_drawn_at < 0.2:
            return
        lane.lost_drawn_at = now
        frame = draw_lost(lane.last_frame.copy(), lost_s, getattr(lane.source, "name", "camera"))
        for sink in lane.sinks:
            if not isinstance(sink, Recorder):
                self._act(sink.write(frame), frame, lane.frames)

    def _wait_caption(self):
        """Wait (up to ``final_wait_s``, less if stopped) for the caption in hand."""
        end = time.perf_counter() + self.final_wait_s
        while not self.stop_event.is_set() and time.perf_counter() < end:
            if self.captioner.wait_idle(0.1):
                return

    def _draw(self, lane, frame, now):
        latest = lane.shown
        extra = "%s %s" % (self.backend.name, self.backend.precision)
        if self.multi:
            extra = "%s | %s" % (lane.name, extra)
        if self.paused:
            extra += " | paused"
        if latest is None:
            return draw_overlay(frame, None, lane.meter.fps, extra=extra)
        return draw_overlay(frame, latest.result.text, lane.meter.fps, latest.result.latency_ms,
                            now - latest.offered_at, extra)

    def _feed(self, lane, frame, index, now=0.0):
        """Write ``frame`` to every sink of ``lane``; act on keys from a window."""
        for sink in lane.sinks:
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

    def _hold(self, lane, frame, index):
        """While paused: keep the window alive on the last frame, poll keys."""
        while self.paused and lane.sinks and not self.stop_event.is_set():
            self._feed(lane, frame, index)
            time.sleep(0.03)

    def _step(self, lane, timeout):
        """Show ``lane``'s next frame; False when its input has ended."""
        item = lane.grabber.get(timeout=timeout)
        if item is None:
            self._show_lost(lane)
            return not lane.grabber.finished
        index, frame = item
        now = time.perf_counter()
        self._offer(lane, index, frame, now)
        lane.meter.tick(now)
        self._draw(lane, frame, now)
        self._feed(lane, frame, index, now)
        lane.seen(frame, now)
        if self.paused:
            self._hold(lane, frame, index)
        return True

    def _round(self):
        """One pass over the inputs still running; False when none is left."""
        running = [lane for lane in self.lanes if not lane.done]
        if self.multi and running:
            self.ready.wait(0.05)   # a frame of any input, or a lost one's next mark
            self.ready.clear()
        for lane in running:
            if self.max_frames and lane.frames >= self.max_frames:
                lane.done, self.reason = True, "max frames"
            elif not self._step(lane, 0.0 if self.multi else 0.1):
                lane.done = True
        return any(not lane.done for lane in self.lanes)

    def warm_up(self):
        """One untimed caption, so first-call setup does not stall the first frames."""
        bundle = getattr(self.backend, "bundle", None)
        height, width = getattr(bundle, "input_size", (64, 64))
        try:
            self.backend.caption([np.zeros((height, width, 3), np.uint8)] * len(self.lanes))
        except Exception as exc:  # reported as one line, like a failure in the loop
            raise NanocapError("captioning failed: %s" % exc)

    def run(self):
        """Run until every input ends or shows ``max_frames``, a quit key or ``stop_event``."""
        self.warm_up()
        start = self.start = time.perf_counter()
        self.captioner.start()
        for lane in self.lanes:
            lane.grabber.start()
        try:
            while not self.stop_event.is_set():
                if self.captioner.error:
                    raise NanocapError(self.captioner.error)
                if not self._round():
                    break
            if self.stop_event.is_set() and self.reason == "end of input":
                self.reason = "stopped"
            elif not self.realtime and not any(lane.source.live for lane in self.lanes):
                self._wait_caption()  # the last caption makes the log
        finally:
            for lane in self.lanes:
                lane.grabber.stop()
            if self.captioner.stop():
                self.backend.close()
            for lane in self.lanes:
                for recorder in lane.recorders():
                    recorder.close()
        return self.summary(time.perf_counter() - start)

    def _counts(self, elapsed, final=False):
        """The figures ``status()`` and ``summary()`` share (``elapsed`` in seconds):
        per input in ``inputs``; at the top, sums over the inputs (``display_fps``:
        the slowest input's; ``last_outage``: the latest) and the captioner's."""
        inputs = [dict(lane.counts(), display_fps=lane.display_fps(final))
                  for lane in self.lanes]
        data = dict((key, sum(item[key] for item in inputs)) for key in SUMMED)
        rates = [item["display_fps"] for item in inputs if item["display_fps"] is not None]
        outages = [item["last_outage"] for item in inputs if item["last_outage"]]
        data.update({
            "display_fps": min(rates) if rates else None,
            "last_outage": max(outages, key=lambda o: o["back_at"]) if outages else None,
            "captions_computed": self.captioner.count, "caption_calls": self.captioner.calls,
            "caption_fps": round(self.captioner.count / elapsed, 3) if elapsed > 0 else None,
            "caption_latency_ms": latency_percentiles(list(self.captioner.latencies)),
            "backend": self.backend.name, "providers": list(self.backend.providers),
            "failures": list(self.failures), "inputs": inputs})
        return data

    def status(self):
        """Live figures for ``/status.json`` (read from the web server's threads)."""
        data = self._counts(time.perf_counter() - self.start)
        for item, lane in zip(data["inputs"], self.lanes):
            item["state"] = lane.source_state()
        data["source"] = data["inputs"][0]["state"]
        return data

    def summary(self, elapsed):
        recorders = [r for lane in self.lanes for r in lane.recorders()]
        data = self._counts(elapsed, final=True)
        for item, lane in zip(data["inputs"], self.lanes):
            item["recorded_frames"] = sum(r.written for r in lane.recorders())
            item["error"] = lane.grabber.error
        data.update({
            "captions": self.captioner.count,
            "precision": self.backend.precision, "decode": self.backend.decode,
            "seconds": round(elapsed, 3), "ended": self.reason,
            "recorded_frames": sum(r.written for r in recorders),
            "record_dropped": sum(r.dropped for r in recorders),
            "error": next((lane.grabber.error for lane in self.lanes if lane.grabber.error),
                          None) or next((r.error for r in recorders if r.error), None)
            or next((f["error"] for f in self.failures), None)})
        if self.logs:
            data["log_lines"] = sum(log.lines for log in self.logs)
            data["log_skipped"] = sum(log.skipped for log in self.logs)
        outputs = publisher_stats(self.sinks)
        if outputs:
            data["outputs"] = outputs
        return data


SUMMED = ("frames", "captions_shown", "gated_frames", "dropped_frames", "outages")


def _unique(items):
    """``items`` without repeats (by identity), in order."""
    seen = []
    for item in items:
        if not any(item is other for other in seen):
            seen.append(item)
    return seen


def run_live(source, backend, sinks=(), log=None, **options):
    """Run the live loop (see ``LiveLoop`` for ``options``); returns the summary dict."""
    return LiveLoop(source, backend, sinks, log, **options).run()
