"""The captioner thread of the live loop, and the loop's meters.

``AsyncCaptioner`` holds one frame slot, filled only while its thread is idle,
so frames never queue for the model; ``FpsMeter`` and ``latency_percentiles``
give the figures of the summary and ``/status.json``.
"""
import collections
import threading
import time

import numpy as np

Latest = collections.namedtuple("Latest", "index result offered_at done_at")


class AsyncCaptioner(object):
    """The captioner thread: one slot, filled only while the thread is idle.

    ``offer(index, frame, tag)`` hands a frame over if the captioner is free
    (True) and returns at once; ``offer_batch([(index, frame, tag), ...])``
    hands several (one per input) that are captioned in ONE ``backend.caption``
    call; ``latest`` is the newest ``Latest`` result or None;
    ``on_caption(latest, tag)`` is called from this thread for each caption
    (``tag``: what the caller gave with the frame). ``count``: captions,
    ``calls``: backend calls. Latencies (of the call a caption came from, ms) of
    the last ``keep`` captions are kept for percentiles.
    """

    def __init__(self, backend, on_caption=None, keep=10000):
        self.backend, self.on_caption = backend, on_caption
        self.cond = threading.Condition()
        self.pending, self.busy, self.latest, self.error = None, False, None, None
        self.count, self.calls, self.latencies = 0, 0, collections.deque(maxlen=keep)
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="captioner")
        self.thread.daemon = True

    def start(self):
        self.thread.start()
        return self

    def idle(self):
        return self.pending is None and not self.busy and self.error is None

    def offer(self, index, frame, tag=None):
        """Give ``frame`` (kept, not copied) to the captioner if it is free."""
        return self.offer_batch([(index, frame, tag)])

    def offer_batch(self, items):
        """Give ``[(index, frame, tag), ...]`` (frames kept, not copied) to the
        captioner if it is free: one backend call captions them all."""
        with self.cond:
            if not self.idle() or self.stopping or not items:
                return False
            now = time.perf_counter()
            self.pending = [(index, frame, now, tag) for index, frame, tag in items]
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
            try:
                results = self.backend.caption([frame for _, frame, _, _ in item])
            except Exception as exc:  # an inference failure ends the run with one line
                with self.cond:
                    self.error, self.busy = "captioning failed: %s" % exc, False
                    self.cond.notify_all()
                return
            done_at = time.perf_counter()
            for (index, _, offered_at, tag), result in zip(item, results):
                latest = Latest(index, result, offered_at, done_at)
                if self.on_caption:
                    self.on_caption(latest, tag)
            with self.cond:
                self.latest = latest
                self.count += len(item)
                self.calls += 1
                self.latencies.extend(result.latency_ms for result in results)
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
