"""Was the machine quiet enough for a speed ratio to mean anything?

A benchmark asks for ``threads`` cores. The 1-minute load average counts the
runnable work; the cores others leave free are ``cpus - load``. The run is
*busy* when, before it or after it, fewer than ``threads - 0.5`` cores were
free of other work: ``load > cpus - threads + 0.5`` before, or ``load - threads``
(the benchmark's own threads taken out) above the same limit after. With
``threads = 1`` on 2 cores the limit is 1.5. On a busy machine the engines do
not share the cores evenly (PyTorch eager with default threads falls 20x,
ONNX Runtime's one graph much less), so a ratio between them measures the
machine, not the code: it is printed as such, never as the result.
"""
import os


def usable_cpus():
    """CPUs this process may run on (the affinity mask where known)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def load_average():
    """The 1, 5 and 15-minute load averages, or None where the OS has none."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def load_verdict(before, after, cpus, threads):
    """``{"busy", "limit", "load_before", "load_after", "cpus", "threads", "line"}``
    for 1-minute loads ``before`` and ``after`` the run (None: unknown, never busy);
    ``line`` is the one sentence the reports print."""
    limit = cpus - threads + 0.5
    others_after = None if after is None else max(0.0, after - threads)
    busy = any(x is not None and x > limit for x in (before, others_after))
    fmt = lambda x: "?" if x is None else "%.2f" % x      # noqa: E731
    line = "load average %s before, %s after, on %d CPUs, %d thread%s per engine" % (
        fmt(before), fmt(after), cpus, threads, "" if threads == 1 else "s")
    if busy:
        line += ("; BUSY MACHINE: other work took more than %.1f of the %d CPUs, so the "
                 "speed ratios of this run measure the machine, not the code (left out of the "
                 "table; rerun on a quiet machine)" % (limit, cpus))
    else:
        line += "; quiet enough (other work below %.1f CPUs)" % limit
    return {"busy": busy, "limit": limit, "load_before": before, "load_after": after,
            "cpus": cpus, "threads": threads, "line": line}
