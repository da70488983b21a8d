"""Measuring tools of ``scripts/benchmark_train.py``: resident memory of a process
and its DataLoader workers, the input pipeline alone, a training step alone,
and both together with the share of time the step waits for its input.
"""
import os
import threading
import time

import torch

WAIT_BOUND = 0.10  # the step waiting >= 10% of the time: input-bound


def _status_kb(pid, field="VmRSS"):
    try:
        with open("/proc/%d/status" % pid) as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _children(pid):
    found = []
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, tid)) as handle:
                found.extend(int(c) for c in handle.read().split())
    except (OSError, ValueError):
        pass
    return found


def tree_rss_mb(pid=None):
    """``(this process, with all its descendants)`` resident set sizes in MiB
    (the sum counts pages shared by forked workers once per process)."""
    pid = pid or os.getpid()
    own = _status_kb(pid)
    total, stack = own, _children(pid)
    while stack:
        child = stack.pop()
        total += _status_kb(child)
        stack.extend(_children(child))
    return own / 1024.0, total / 1024.0


class PeakRSS(object):
    """``with PeakRSS() as peak: ...`` then ``peak.main_mb``, ``peak.tree_mb``:
    the highest resident memory sampled every ``interval`` seconds."""

    def __init__(self, interval=0.02):
        self.interval, self.main_mb, self.tree_mb = interval, 0.0, 0.0
        self._stop = threading.Event()

    def _sample(self):
        main, tree = tree_rss_mb()
        self.main_mb, self.tree_mb = max(self.main_mb, main), max(self.tree_mb, tree)

    def _run(self):
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self):
        self._sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()
        return False


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def batch_images(batch):
    """Images in a batch (``"index"``; 0 for an all-unreadable batch)."""
    return len(batch["index"]) if "index" in batch else 0


def input_rate(loader, batches):
    """Images/s of ``loader`` alone over ``batches`` batches, after one warm-up
    batch (which starts the workers). Returns ``(images/s, images)``."""
    iterator = iter(loader)
    next(iterator)
    images, started = 0, time.perf_counter()
    for _ in range(batches):
        try:
            images += batch_images(next(iterator))
        except StopIteration:
            break
    return images / max(1e-9, time.perf_counter() - started), images


def step_rate(step, batch, batches, device):
    """Images/s of ``step(batch)`` alone, one batch already in memory, repeated."""
    step(batch)
    _sync(device)
    started = time.perf_counter()
    for _ in range(batches):
        step(batch)
    _sync(device)
    return batch_images(batch) * batches / max(1e-9, time.perf_counter() - started)


def together_rate(loader, step, batches, device):
    """Loader feeding the step: ``{"images_per_s", "wait_share", "bound"}`` where
    ``wait_share`` is the fraction of the time spent waiting for the next batch."""
    iterator = iter(loader)
    step(next(iterator))
    _sync(device)
    images, waited, started = 0, 0.0, time.perf_counter()
    for _ in range(batches):
        before = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            break
        waited += time.perf_counter() - before
        step(batch)
        _sync(device)
        images += batch_images(batch)
    total = max(1e-9, time.perf_counter() - started)
    share = waited / total
    return {"images_per_s": images / total, "wait_share": share, "bound": bound_text(share)}


def bound_text(wait_share):
    """``"input-bound: the step waits 63% of the time"`` or ``"step-bound: ..."``."""
    kind = "input-bound" if wait_share >= WAIT_BOUND else "step-bound"
    return "%s: the step waits %.0f%% of the time" % (kind, 100 * wait_share)
