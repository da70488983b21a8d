"""The learning-rate schedule of ``train fit``: linear warm-up, then a cosine
over steps or over the ``--minutes`` budget, whichever runs out first."""
import math
import time

from train import distributed


def learning_rate(base, step, warmup, progress):
    """Linear warm-up for ``warmup`` steps, then cosine to 2% of ``base`` at progress 1."""
    if step < warmup:
        return base * (step + 1) / warmup
    floor = 0.02 * base
    return floor + (base - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


class Schedule(object):
    """Warm-up + cosine LR over ``total`` steps or until ``deadline`` (time.time()
    seconds), whichever comes first; the same decisions on every rank."""

    def __init__(self, lr, total, deadline):
        self.lr, self.total, self.deadline = lr, max(1, total), deadline
        self.warmup = min(200, max(1, self.total // 20))
        self.start = time.time()

    def lr_at(self, step, ctx):
        """The LR for ``step``, or None once the time budget is spent."""
        now = time.time()
        progress = step / float(self.total)
        if self.deadline is not None:
            progress = max(progress, (now - self.start) / max(1e-6, self.deadline - self.start))
        over = float(self.deadline is not None and now >= self.deadline)
        over, progress = distributed.max_across(ctx, [over, progress])
        return None if over else learning_rate(self.lr, step, self.warmup, progress)
