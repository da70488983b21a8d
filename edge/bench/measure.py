"""Benchmark core (torch-free): time captioning backends on the same frames.

Every backend offers ``caption(frames) -> [CaptionResult(text, tokens,
latency_ms)]`` and ``last_stages_ms`` ({"resize", "inference", "decode"} in ms
of the last call), so one loop measures ONNX Runtime, TensorRT and the PyTorch
reference alike. Times come from ``time.perf_counter``; warm-up calls are not
counted. Rows are plain dicts (the JSON schema of ``scripts/benchmark_fps.py``)::

    {"backend", "precision", "decode", "batch", "captions", "captions_per_s",
     "latency_ms": {"p50", "p95", "p99", "mean"}, "stages_ms": {stage: mean ms},
     "rss_mb", "providers", "agreement", "gflops_per_s"}

Machine facts (CPU, memory, Jetson power mode and clocks, package versions)
and the matrix-multiply peak live in ``edge.bench.system``; tables, markdown,
JSON and the plot in ``edge.bench.report``.
"""
import time

import numpy as np

from edge.errors import NanocapError

# Benchmark backend names -> (edge backend, ONNX Runtime providers or None).
ORT_PROVIDERS = {
    "ort-cpu": ["CPUExecutionProvider"],
    "ort-cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "ort-trt": ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                "CPUExecutionProvider"],
}
BACKENDS = ("torch", "ort-cpu", "ort-cuda", "ort-trt", "trt")
DECODES = ("greedy", "beam")
STAGES = ("resize", "inference", "decode")


class Skip(Exception):
    """A combination that cannot run here; its message says why (reported, not fatal)."""


def percentiles(values, qs=(50, 95, 99)):
    """``{"p50": ..., "p95": ..., "p99": ..., "mean": ...}`` of ``values`` (ms)."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return dict(("p%d" % q, None) for q in qs)
    out = dict(("p%d" % q, float(np.percentile(data, q))) for q in qs)
    out["mean"] = float(data.mean())
    return out


def parse_list(text, allowed, what):
    """``"a,b"`` -> ``["a", "b"]``, each checked against ``allowed``."""
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    bad = [t for t in items if t not in allowed]
    if bad or not items:
        raise NanocapError("--%s: unknown %s (choose from %s)"
                           % (what, ", ".join(bad) or "empty list", ",".join(allowed)))
    return items


def parse_batches(text):
    """``"1,2,4,8"`` (or ``"4"``) -> ``[1, 2, 4, 8]``: frames per call, each >= 1."""
    try:
        sizes = [int(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise NanocapError("--batch: expected sizes >= 1 such as 1 or 1,2,4,8 (got %r)" % text)
    return sorted(set(sizes))


# -- memory -----------------------------------------------------------------

def _proc_status_kb(key):
    """A ``VmRSS``/``VmHWM`` value from /proc/self/status in kB, or None."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (IOError, OSError, ValueError):
        return None
    return None


def reset_peak_rss():
    """Reset the kernel's peak-RSS mark (Linux >= 4.0); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except (IOError, OSError):
        return False


def peak_rss_mb():
    """Peak resident memory of this process in MiB since the last reset."""
    kb = _proc_status_kb("VmHWM")
    if kb is None:
        import resource  # not on Windows; ru_maxrss is kB on Linux
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0


# -- timing -----------------------------------------------------------------

def time_backend(backend, frames, captions=100, warmup=5, batch=1, clock=time.perf_counter):
    """Caption ``frames`` (uint8 BGR arrays, cycled) with ``backend``.

    ``warmup`` calls are made first and not counted; then enough calls of
    ``batch`` frames to produce ``captions`` captions. Returns a dict with
    ``captions_per_s``, ``latency_ms`` (per call; p50/p95/p99/mean),
    ``stages_ms`` (mean ms per call and stage), ``captions`` (count) and
    ``texts`` (frame index -> first caption text seen for it).
    """
    if not frames:
        raise NanocapError("no frames to benchmark on")
    n = len(frames)
    calls = max(1, int(np.ceil(float(captions) / batch)))
    for i in range(int(warmup)):
        backend.caption([frames[(i * batch + j) % n] for j in range(batch)])
    latencies, stages, texts, done = [], dict((s, 0.0) for s in STAGES), {}, 0
    start = clock()
    for i in range(calls):
        call = [(i * batch + j) % n for j in range(batch)]
        chunk = [frames[k] for k in call]
        t0 = clock()
        results = backend.caption(chunk)
        latencies.append((clock() - t0) * 1000.0)
        for stage, ms in (getattr(backend, "last_stages_ms", None) or {}).items():
            stages[stage] = stages.get(stage, 0.0) + float(ms)
        for k, result in zip(call, results):
            texts.setdefault(k, result.text)
        done += len(results)
    total = clock() - start
    return {"captions": done,
            "captions_per_s": done / total if total > 0 else None,
            "latency_ms": percentiles(latencies),
            "stages_ms": dict((s, v / len(latencies)) for s, v in stages.items()),
            "texts": texts}


def agreement(texts, reference):
    """Fraction of frames (keys of both dicts) whose caption texts are identical."""
    keys = [k for k in texts if k in reference]
    if not keys:
        return None
    return sum(1 for k in keys if texts[k] == reference[k]) / float(len(keys))


# -- running a plan -----------------------------------------------------------

def plan(backends, precisions, decodes):
    """Every (backend, precision, decode) combination, edge backends first and
    ``torch`` (fp32 only: it is the reference) last, so edge rows' memory is
    measured before torch is imported."""
    combos = []
    for backend in [b for b in backends if b != "torch"] + [b for b in backends if b == "torch"]:
        for precision in (["fp32"] if backend == "torch" else precisions):
            for decode in decodes:
                combos.append((backend, precision, decode))
    return combos


def check_providers(name, wanted, used):
    """Raise ``Skip`` unless ONNX Runtime really uses the first wanted provider."""
    if wanted and wanted[0] not in (used or []):
        raise Skip("%s needs %s, but ONNX Runtime used %s"
                   % (name, wanted[0], ", ".join(used or []) or "nothing"))


def run_plan(combos, opener, frames, captions=100, warmup=5, batch=1, progress=None):
    """Measure every combination.

    ``opener(backend, precision, decode) -> backend object`` raises ``Skip``
    (or ``NanocapError``) for one that cannot run here. Returns
    ``(rows, skipped)``; each skipped entry is ``{"backend", "precision",
    "decode", "reason"}``. Agreement is filled in by ``add_agreement``.
    """
    rows, skipped = [], []
    for name, precision, decode in combos:
        key = {"backend": name, "precision": precision, "decode": decode}
        if progress:
            progress("%s %s %s" % (name, precision, decode))
        reset_peak_rss()
        try:
            backend = opener(name, precision, decode)
        except (Skip, NanocapError) as exc:
            skipped.append(dict(key, reason=str(exc)))
            continue
        try:
            row = time_backend(backend, frames, captions, warmup, batch)
        except Exception as exc:  # an engine failing mid-run costs its row, not the run
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            skipped.append(dict(key, reason="failed while measuring: %s" % first))
            continue
        finally:
            providers = list(getattr(backend, "providers", None) or [])
            backend.close()
        row.update(key, batch=batch, providers=providers, rss_mb=peak_rss_mb())
        rows.append(row)
    return rows, skipped


def reference_row(rows, decode, prefer=("torch", "ort-cpu")):
    """The fp32 reference row for ``decode``: torch if measured, else ort-cpu."""
    for name in prefer:
        for row in rows:
            if (row["backend"], row["precision"], row["decode"]) == (name, "fp32", decode):
                return row
    return None


def add_agreement(rows):
    """Set each row's ``agreement`` and ``reference``; drop the ``texts`` maps."""
    for row in rows:
        ref = reference_row(rows, row["decode"])
        row["reference"] = None if ref is None else "%s fp32" % ref["backend"]
        row["agreement"] = None if ref is None else agreement(row["texts"], ref["texts"])
    for row in rows:
        row.pop("texts", None)
    return rows


def add_gflops(rows, flops_per_caption):
    """Achieved GFLOP/s of greedy rows from ``flops_per_caption["greedy"]``
    (encoder + T steps: exactly what the one-graph caption runs; nominal for
    torch, which stops at ``<end>``). Beam rows stop early by a varying amount,
    so they get None rather than a guess."""
    for row in rows:
        flops = (flops_per_caption or {}).get("greedy") if row["decode"] == "greedy" else None
        rate = row.get("captions_per_s")
        row["gflops_per_s"] = flops * rate / 1e9 if flops and rate else None
    return rows


# -- opening the backends to compare ------------------------------------------

def open_edge_backend(bundle, name, precision, decode, beam_size=3, threads=None):
    """Open ``name`` (ort-cpu, ort-cuda, ort-trt or trt) on a loaded bundle.

    ONNX Runtime rows get their providers explicitly (and ``threads`` intra-op
    threads if given); a provider that this ONNX Runtime lacks, or that the
    session silently replaced, is a ``Skip``.
    """
    from edge.backends import OrtBackend, import_onnxruntime, open_backend
    if precision not in bundle.precisions("caption" if decode == "greedy" else "decoder_step"):
        raise Skip("the bundle has no %s graphs for %s decoding" % (precision, decode))
    if name == "trt":
        return open_backend(bundle, "trt", precision, decode, beam_size)
    wanted = ORT_PROVIDERS[name]
    available = import_onnxruntime().get_available_providers()
    if wanted[0] not in available:
        raise Skip("this ONNX Runtime has no %s (has: %s)" % (wanted[0], ", ".join(available)))
    backend = OrtBackend(bundle, precision, decode, beam_size, providers=wanted, threads=threads)
    try:
        check_providers(name, wanted, backend.providers)
    except Skip:
        backend.close()
        raise
    return backend
