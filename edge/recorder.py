"""Recording off the main loop: a ``VideoSink`` fed by its own thread.

``Recorder.write(frame, index, now)`` returns at once. With ``drop=True``
(cameras, paced sources, ``--realtime``) the thread encodes the newest frame it
can; a frame replaced before it was encoded is counted in ``dropped``
(``record_dropped`` in the summary), so the display keeps the source rate
whatever the encoder costs. With ``drop=False`` (a file read frame by frame)
``write`` waits for the slot, so every frame is recorded, as before.

With ``measure=True`` (a live source) the file's frame rate is the rate the
source really delivered, measured from the frame indices and times of the
first ``PROBE_FRAMES`` frames but ``PROBE_SKIP`` (held in memory until then; a
burst from a stream's buffer, over ``MAX_RATE``, is no rate), not the rate asked
of the camera: a 15 FPS camera asked for 30 gives a file that plays at 15.
"""
import threading

from edge.sinks import DiskFull

PROBE_FRAMES = 12
PROBE_SECONDS = 0.6
MAX_RATE = 240.0    # frames per second a measured rate may be
PROBE_SKIP = 2      # a camera's first frames come from its buffer: not timed


def measured_rate(indices, times, fallback):
    """Source frames per second from frame ``indices`` (they count dropped frames
    too) seen at ``times`` (seconds); ``fallback`` when the span is too short."""
    if len(times) < 2 or times[-1] <= times[0] or indices[-1] <= indices[0]:
        return float(fallback)
    rate = (indices[-1] - indices[0]) / float(times[-1] - times[0])
    if not 1.0 <= rate <= MAX_RATE:     # a burst is no rate
        return float(fallback)
    return round(rate, 2)   # fps x 100 < 65535: a time base every codec (mp4v) takes


class Recorder(object):
    """Writes frames to ``sink`` (a ``VideoSink``) from a thread (see the module text)."""

    def __init__(self, sink, drop=True, measure=False):
        self.sink, self.drop, self.measure = sink, bool(drop), bool(measure)
        self.cond = threading.Condition()
        self.slot, self.closing, self.error = None, False, None
        self.dropped, self.written = 0, 0
        self.probe = []
        self.on_failure = None      # set by the live loop: callable(text), said at once
        self.thread = threading.Thread(target=self._run, name="recorder")
        self.thread.daemon = True
        self.thread.start()

    @property
    def path(self):
        return self.sink.path

    def write(self, frame, index=0, now=0.0):
        """Hand ``frame`` (kept, not copied: the caller must not change it) over."""
        with self.cond:
            if self.error:
                return -1
            if not self.drop:
                while self.slot is not None and not self.error:
                    self.cond.wait(0.1)
            elif self.slot is not None:
                self.dropped += 1
            self.slot = (frame, index, now)
            self.cond.notify_all()
        return -1

    def _take(self):
        with self.cond:
            while self.slot is None and not self.closing:
                self.cond.wait(0.2)
            item, self.slot = self.slot, None
            self.cond.notify_all()
            return item

    def _encode(self, item):
        if self.measure and self.sink.writer is None and not self.sink.frames:   # once
            self.probe.append(item)
            span = item[2] - self.probe[0][2]
            if len(self.probe) < PROBE_FRAMES and span < PROBE_SECONDS and not self.closing:
                return
            timed = self.probe[PROBE_SKIP:] if len(self.probe) > PROBE_SKIP + 2 else self.probe
            self.sink.fps = measured_rate([p[1] for p in timed], [p[2] for p in timed],
                                          self.sink.fps)
            items, self.probe = self.probe, []
        else:
            items = [item]
        for frame, _, _ in items:
            self.sink.write(frame)
            self.written += 1

    def _run(self):
        try:
            while True:
                item = self._take()
                if item is None:
                    if self.probe:          # closed before the probe was full
                        self._encode(self.probe.pop())
                    return
                self._encode(item)
        except Exception as exc:  # said at once, and in the summary; the loop goes on
            self._failed(exc)

    def _failed(self, exc):
        with self.cond:
            if self.error:
                return
            self.error = "recording %s %s: %s" % (
                self.sink.path, "stopped" if isinstance(exc, DiskFull) else "failed",
                getattr(exc, "strerror", None) or exc)
            self.cond.notify_all()
        if self.on_failure is not None:
            self.on_failure(self.error)

    def close(self, timeout=30.0):
        """Encode what is in hand, finalise the file; safe to call twice."""
        with self.cond:
            self.closing = True
            self.cond.notify_all()
        if self.thread.is_alive():
            self.thread.join(timeout)
        try:
            self.sink.close()
        except Exception as exc:  # a file that cannot be finalised is a failure, said
            self._failed(exc)
