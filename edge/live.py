"""The live loop: three threads, no queue that grows.

- capture (``edge.sources.FrameGrabber``) keeps only the newest frame (cameras,
  streams, ``realtime``), or hands a file over frame by frame;
- the captioner (``AsyncCaptioner``) takes the newest frame whenever it is free;
- the main thread (``run_live``) draws every frame with the latest caption and
  its age and feeds the sinks; it never waits for the model.

``run_live`` returns the summary dict printed by ``python -m edge``::

    {"frames", "display_fps", "captions", "caption_fps",
     "caption_latency_ms": {"p50", "p95"}, "backend", "providers", "dropped_frames", ...}
"""
import collections
import sys
import threading
import time

import numpy as np

from edge.errors import NanocapError
from edge.overlay import draw_overlay
from edge.sinks import save_snapshot
from edge.sources import FrameGrabber

Latest = collections.namedtuple("Latest", "index result offered_at done_at")
KEY_QUIT = (ord("q"), 27)
KEY_PAUSE = ord(" ")
KEY_SNAPSHOT = ord("s")


class AsyncCaptioner(object):
    """The captioner thread: one frame slot, filled only while the thread is idle.

    ``offer(index, frame)`` hands a frame over if the captioner is free (True)
    and returns at once; ``latest`` is the newest ``Latest`` result or None;
    ``on_caption(index, result)`` is called from this thread for each caption.
    Latencies of the last ``keep`` captions are kept for percentiles.
    """

    def __init__(self, backend, on_caption=None, keep=10000):
        self.backend, self.on_caption = backend, on_caption
        self.cond = threading.Condition()
        self.pending, self.busy, self.latest, self.error = None, False, None, None
        self.count, self.latencies = 0, collections.deque(maxlen=keep)
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="captioner")
        self.thread.daemon = True

    def start(self):
        self.thread.start()
        return self

    def idle(self):
        return self.pending is None and not self.busy and self.error is None

    def offer(self, index, frame):
        """Give ``frame`` (kept, not copied) to the captioner if it is free."""
        with self.cond:
            if not self.idle() or self.stopping:
                return False
            self.pending = (index, frame, time.perf_counter())
            self.cond.notify_all()
            return True

    def wait_idle(self, timeout):
        """Wait until the frame in hand is captioned; False on timeout."""
        end = time.perf_counter() + timeout
        with self.cond:
            while not self.idle() and self.error is None:
                left = end - time.perf_counter()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 0.1))
        return True

    def _take(self):
        with self.cond:
            while self.pending is None and not self.stopping:
                self.cond.wait(0.2)
            if self.stopping:
                return None
            item, self.pending, self.busy = self.pending, None, True
            return item

    def _run(self):
        while True:
            item = self._take()
            if item is None:
                return
            index, frame, offered_at = item
            try:
                result = self.backend.caption([frame])[0]
            except Exception as exc:  # an inference failure ends the run with one line
                with self.cond:
                    self.error, self.busy = "captioning failed: %s" % exc, False
                    self.cond.notify_all()
                return
            done_at = time.perf_counter()
            if self.on_caption:
                self.on_caption(index, result)
            with self.cond:
                self.latest = Latest(index, result, offered_at, done_at)
                self.count += 1
                self.latencies.append(result.latency_ms)
                self.busy = False
                self.cond.notify_all()

    def stop(self, timeout=1.0):
        """End the thread; True if it ended within ``timeout`` seconds."""
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        self.thread.join(timeout)
        return not self.thread.is_alive()


class FpsMeter(object):
    """Frames per second over the last ``window`` frames."""

    def __init__(self, window=30):
        self.times = collections.deque(maxlen=window)

    def tick(self, now):
        self.times.append(now)

    @property
    def fps(self):
        if len(self.times) < 2 or self.times[-1] <= self.times[0]:
            return None
        return (len(self.times) - 1) / (self.times[-1] - self.times[0])


def latency_percentiles(values):
    """``{"p50", "p95"}`` of ``values`` in ms (None when empty)."""
    if not len(values):
        return {"p50": None, "p95": None}
    data = np.asarray(list(values), dtype=np.float64)
    return {"p50": round(float(np.percentile(data, 50)), 3),
            "p95": round(float(np.percentile(data, 95)), 3)}


class LiveLoop(object):
    """One run of the live captioner; ``run()`` returns the summary dict."""

    def __init__(self, source, backend, sinks=(), log=None, realtime=False, max_frames=None,
                 every=1, stop_event=None, snapshot_dir=".", retries=5, backoff_s=0.5,
                 final_wait_s=10.0, message=None):
        self.source, self.backend, self.sinks, self.log = source, backend, list(sinks), log
        self.realtime, self.max_frames, self.every = realtime, max_frames, max(1, int(every))
        self.stop_event = stop_event or threading.Event()
        self.snapshot_dir, self.final_wait_s = snapshot_dir, final_wait_s
        self.message = message or (lambda text: sys.stderr.write("nanocap: %s\n" % text))
        drop = bool(source.live or realtime)
        pace = source.fps if (realtime and not source.live) else None
        self.grabber = FrameGrabber(source, drop=drop, pace_fps=pace, retries=retries,
                                    backoff_s=backoff_s)
        on_caption = log.write_caption if log is not None else None
        self.captioner = AsyncCaptioner(backend, on_caption)
        self.meter = FpsMeter()
        self.frames, self.paused, self.last_offer, self.reason = 0, False, None, "end of input"
        self.first_at = self.last_at = None
        self.caption_each = getattr(source, "caption_each", False)  # images: one caption each

    def _offer(self, index, frame):
        due = self.last_offer is None or index - self.last_offer >= self.every
        if due and self.captioner.offer(index, frame.copy()):
            self.last_offer = index
            if self.caption_each:
                self._wait_caption()

    def _wait_caption(self):
        """Wait (up to ``final_wait_s``, less if stopped) for the caption in hand."""
        end = time.perf_counter() + self.final_wait_s
        while not self.stop_event.is_set() and time.perf_counter() < end:
            if self.captioner.wait_idle(0.1):
                return

    def _draw(self, frame, now):
        latest = self.captioner.latest
        extra = "%s %s" % (self.backend.name, self.backend.precision)
        if self.paused:
            extra += " | paused"
        if latest is None:
            return draw_overlay(frame, None, self.meter.fps, extra=extra)
        return draw_overlay(frame, latest.result.text, self.meter.fps, latest.result.latency_ms,
                            now - latest.offered_at, extra)

    def _feed(self, frame, index):
        """Write ``frame`` to every sink; act on keys from a window."""
        for sink in self.sinks:
            key = sink.write(frame)
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
            return not self.grabber.finished
        index, frame = item
        self._offer(index, frame)
        now = time.perf_counter()
        self.meter.tick(now)
        self.first_at = now if self.first_at is None else self.first_at
        self.last_at = now
        self._draw(frame, now)
        self._feed(frame, index)
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
        start = time.perf_counter()
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
        return self.summary(time.perf_counter() - start)

    def summary(self, elapsed):
        span = (self.last_at - self.first_at) if self.frames > 1 else 0.0
        return {"frames": self.frames,
                "display_fps": round((self.frames - 1) / span, 3) if span > 0 else None,
                "captions": self.captioner.count,
                "caption_fps": round(self.captioner.count / elapsed, 3) if elapsed > 0 else None,
                "caption_latency_ms": latency_percentiles(self.captioner.latencies),
                "backend": self.backend.name, "providers": list(self.backend.providers),
                "dropped_frames": self.grabber.dropped,
                "precision": self.backend.precision, "decode": self.backend.decode,
                "seconds": round(elapsed, 3), "ended": self.reason,
                "error": self.grabber.error}


def run_live(source, backend, sinks=(), log=None, **options):
    """Run the live loop (see ``LiveLoop`` for ``options``); returns the summary dict."""
    return LiveLoop(source, backend, sinks, log, **options).run()
