"""A bounded outbox drained by its own thread: how captions leave the device.

The live loop calls ``put(item)``, which never blocks: when the outbox is full the
oldest item is dropped and counted. A daemon thread hands items to ``send(item)``
in order; an item whose send raises stays at the head and is tried again after a
capped, doubling backoff (so a broker or receiver that is down delays nothing but
this thread, and what was queued goes out once it is back), unless ``max_tries``
is set, after which it is dropped and counted as failed.
"""
import collections
import threading
import time


def camera_name(index):
    """Input ``index``'s name in topics, ids and messages: ``cam<index>``."""
    return "cam%d" % int(index)


def caption_message(record):
    """The message that leaves the device for a ``caption_record`` dict: the same
    fields plus ``input`` (index), ``camera`` and ``time`` (Unix s); None when the
    caption was not shown (only shown captions are published)."""
    if not record.get("shown", True):
        return None
    index = int(record.get("input", 0))
    return dict(record, input=index, camera=camera_name(index), time=round(time.time(), 3))


class Rejected(Exception):
    """Raised by ``send`` for an item the far side refused for good (not retried)."""


class Outbox(object):
    """``send(item)`` called from one thread, items kept in a deque of ``size``.

    ``backoff_s``: the first wait after a failed send (seconds), doubled per
    failure up to ``max_backoff_s``; ``max_tries``: attempts per item (None:
    until it goes through or the outbox closes); ``message(text)`` reports the
    first failure of a run of failures and the recovery, once each.
    """

    def __init__(self, send, name, size=256, backoff_s=0.5, max_backoff_s=30.0,
                 max_tries=None, message=None):
        self.send, self.name = send, name
        self.items = collections.deque()
        self.size, self.max_tries = max(1, int(size)), max_tries
        self.backoff_s, self.max_backoff_s = float(backoff_s), float(max_backoff_s)
        self.message = message or (lambda text: None)
        self.cond = threading.Condition()
        self.closing = False
        self.sent = self.dropped = self.failed = 0
        self.error, self.failing = None, False
        self.thread = threading.Thread(target=self._run, name="outbox-" + name)
        self.thread.daemon = True
        self.thread.start()

    def put(self, item):
        """Queue ``item``; never blocks. Returns False when an older item was dropped."""
        with self.cond:
            dropped = len(self.items) >= self.size
            if dropped:
                self.items.popleft()
                self.dropped += 1
            self.items.append(item)
            self.cond.notify()
        return not dropped

    def pending(self):
        with self.cond:
            return len(self.items)

    def stats(self):
        """``{"sent", "queued", "dropped", "failed", "error"}`` (error: the last
        failure while it lasts, None once a send went through again)."""
        with self.cond:
            return {"sent": self.sent, "queued": len(self.items), "dropped": self.dropped,
                    "failed": self.failed, "error": self.error}

    def _next(self):
        with self.cond:
            while not self.items and not self.closing:
                self.cond.wait()
            return self.items[0] if self.items else None

    def _wait(self, seconds):
        """Sleep ``seconds`` unless closing; True if the outbox is closing."""
        with self.cond:
            if not self.closing:
                self.cond.wait(seconds)
            return self.closing

    def _run(self):
        tries, delay = 0, self.backoff_s
        while True:
            item = self._next()
            if item is None:
                return
            try:
                self.send(item)
            except Rejected as exc:
                self._failed(item, tries + 1, exc, final=True)
                tries, delay = 0, self.backoff_s
                continue
            except Exception as exc:  # any failure of the far side: keep the loop going
                tries += 1
                self._failed(item, tries, exc)
                if self.max_tries is not None and tries >= self.max_tries:
                    tries, delay = 0, self.backoff_s
                    continue
                if self._wait(delay):
                    return
                delay = min(delay * 2.0, self.max_backoff_s)
                continue
            with self.cond:
                if self.items and self.items[0] is item:
                    self.items.popleft()
                self.sent += 1
                recovered, self.error, self.failing = self.failing, None, False
            if recovered:
                self.message("%s: delivering again" % self.name)
            tries, delay = 0, self.backoff_s

    def _failed(self, item, tries, exc, final=False):
        """Count a failed send; drop ``item`` when ``final`` or out of tries. Says
        the first failure of a run of failures, and every dropped item."""
        text = "%s: %s" % (self.name, exc)
        final = final or (self.max_tries is not None and tries >= self.max_tries)
        with self.cond:
            first = not self.failing and not final
            self.error, self.failing = text, self.failing or not final
            if final:
                if self.items and self.items[0] is item:
                    self.items.popleft()
                self.failed += 1
        if final:
            self.message("%s (dropped)" % text)
        elif first:
            self.message("%s (retrying; captions queue, at most %d)" % (text, self.size))

    def close(self, flush_s=2.0):
        """Stop after trying to send what is queued for up to ``flush_s`` seconds."""
        end = time.time() + max(0.0, flush_s)
        while self.pending() and time.time() < end:
            time.sleep(0.02)
        with self.cond:
            self.closing = True
            self.cond.notify_all()
        self.thread.join(timeout=max(0.1, end - time.time()) + 1.0)
