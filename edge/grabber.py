"""The capture thread of the live loop: keeps only the newest frame, waits for a lost camera.

``FrameGrabber`` reads a source (``edge.sources``) on its own thread. A live
source that stops delivering (``read()`` gives None) or whose read blocks for
more than ``read_timeout_s`` (a stream still connected but sending nothing) is
*lost*: ``on_event({"event": "source_lost", ...})`` is called, and it is
reopened with a doubling backoff capped at ``max_backoff_s``, for as long as
the run lasts (``retries`` None) or ``retries`` times. When frames flow again,
``on_event({"event": "source_back", "outage_s": ...})``. Times in events are
Unix seconds (``time.time()``).
"""
import threading
import time


class FrameGrabber(object):
    """The capture thread: reads ``source`` and keeps only what the consumer needs.

    ``drop=True`` (cameras, streams, ``--realtime``): one slot holding the newest
    frame; a frame replaced before it was taken is counted in ``dropped``.
    ``drop=False`` (a file read frame by frame): the reader waits until the
    slot is free, so every frame is delivered, nothing queues up.
    ``pace_fps`` sleeps between reads to play a file at its own rate. Lost live
    sources: see the module text; after ``retries`` failed reopens ``error``
    says so and it ends. ``ready`` (a ``threading.Event``) is set whenever a
    frame is put or the thread ends (a consumer of several grabbers waits on it).
    """

    def __init__(self, source, drop=True, pace_fps=None, retries=None, backoff_s=0.5,
                 max_backoff_s=5.0, read_timeout_s=5.0, on_event=None, ready=None):
        self.source, self.drop, self.pace_fps, self.ready = source, drop, pace_fps, ready
        self.retries = None if retries is None or retries < 0 else int(retries)
        self.backoff_s, self.max_backoff_s = float(backoff_s), float(max_backoff_s)
        self.read_timeout_s, self.on_event = float(read_timeout_s), on_event
        self.cond = threading.Condition()
        self.stop_event = threading.Event()
        self.slot, self.read_count, self.dropped = None, 0, 0
        self.finished, self.error, self.reopens = False, None, 0
        self.lost_at, self.lost_reason, self.outages, self.last_outage = None, None, 0, None
        self.reading_since = None
        self.thread = threading.Thread(target=self._run, name="capture")
        self.thread.daemon = True

    def start(self):
        self.thread.start()
        return self

    # -- lost and back ---------------------------------------------------------
    def _lost(self, reason):
        with self.cond:
            if self.lost_at is not None:
                return
            self.lost_at, self.lost_reason = time.time(), reason
            self.outages += 1
        self._tell({"event": "source_lost", "time": round(self.lost_at, 3),
                    "source": self.source.name, "reason": reason})

    def _back(self):
        with self.cond:
            if self.lost_at is None:
                return
            now = time.time()
            self.last_outage = {"lost_at": round(self.lost_at, 3), "back_at": round(now, 3),
                                "outage_s": round(now - self.lost_at, 3),
                                "reason": self.lost_reason}
            self.lost_at = None
        event = dict(self.last_outage, event="source_back", time=self.last_outage["back_at"],
                     source=self.source.name, reopens=self.reopens)
        self._tell(event)

    def _tell(self, event):
        if self.on_event is not None:
            self.on_event(event)

    def check_stall(self):
        """Called by the consumer: a read blocked past ``read_timeout_s`` marks the source lost."""
        since = self.reading_since
        if (since is not None and self.source.live and self.lost_at is None
                and time.time() - since > self.read_timeout_s):
            self._lost("no frame for %.1f s (read blocked)" % (time.time() - since))

    def lost_seconds(self):
        """Seconds since the source was lost, or None while it delivers."""
        lost_at = self.lost_at
        return None if lost_at is None else max(0.0, time.time() - lost_at)

    # -- the thread --------------------------------------------------------------
    def _recover(self):
        """Reopen a live source with a capped backoff; True if frames flow again."""
        self._lost("stopped delivering frames")
        delay, attempt = self.backoff_s, 0
        while self.retries is None or attempt < self.retries:
            if self.stop_event.wait(delay):
                return False
            attempt += 1
            self.reopens += 1
            if self.source.reopen():
                return True
            delay = min(delay * 2, self.max_backoff_s)
        self.error = ("%s stopped delivering frames; gave up after %d reopen attempts"
                      % (self.source.name, self.retries))
        return False

    def _read_one(self):
        """One read; from a live source, a frame that took ``read_timeout_s`` or more
        counts as none (a stalled stream's reader gives stale frames at its timeout)."""
        self.reading_since = since = time.time()
        try:
            frame = self.source.read()
        finally:
            self.reading_since = None
        if frame is not None and self.source.live and \
                time.time() - since >= 0.95 * self.read_timeout_s:
            self._lost("no frame for %.1f s (read blocked)" % (time.time() - since))
            return None
        return frame

    def _read(self):
        frame = self._read_one()
        while (frame is None and self.source.live and not getattr(self.source, "ended", False)
               and self._recover()):
            frame = self._read_one()
        return frame

    def _put(self, frame):
        if self.lost_at is not None:
            self._back()
        with self.cond:
            if not self.drop:
                while self.slot is not None and not self.stop_event.is_set():
                    self.cond.wait(0.1)
            elif self.slot is not None:
                self.dropped += 1
            self.slot = (self.read_count, frame)
            self.read_count += 1
            self.cond.notify_all()
        if self.ready is not None:
            self.ready.set()

    def _run(self):
        start = time.perf_counter()
        try:
            while not self.stop_event.is_set():
                frame = self._read()
                if frame is None:
                    break
                self._put(frame)
                if self.pace_fps:
                    wait = start + self.read_count / float(self.pace_fps) - time.perf_counter()
                    if wait > 0 and self.stop_event.wait(wait):
                        break
        except Exception as exc:  # an OpenCV/driver error ends capture with a message
            self.error = "capture failed: %s" % exc
        finally:
            with self.cond:
                self.finished = True
                self.cond.notify_all()
            if self.ready is not None:
                self.ready.set()

    def get(self, timeout=0.5):
        """``(index, frame)`` of the newest untaken frame, or None after ``timeout``
        seconds or at the end (then ``finished`` is True). ``index`` counts every
        frame read, dropped ones included."""
        self.check_stall()
        with self.cond:
            end = time.perf_counter() + timeout
            while self.slot is None and not self.finished:
                left = end - time.perf_counter()
                if left <= 0:
                    return None
                self.cond.wait(left)
            item, self.slot = self.slot, None
            self.cond.notify_all()
            return item

    def stop(self, timeout=2.0):
        """Ask the thread to end, wait up to ``timeout`` s, then close the source
        (left open if a driver call still blocks the thread: closing under it can crash)."""
        self.stop_event.set()
        with self.cond:
            self.cond.notify_all()
        if self.thread.is_alive():
            self.thread.join(timeout)
        if not self.thread.is_alive():
            self.source.close()
