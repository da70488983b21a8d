"""What machine a benchmark ran on: CPU, memory, package versions, the Jetson's
power mode and clocks, and the measured fp32 matrix-multiply peak (torch-free).
"""
import glob
import os
import platform
import subprocess
import sys
import time

import numpy as np


def _read(path):
    """A small text file's stripped content, or None."""
    try:
        with open(path) as handle:
            return handle.read().replace("\x00", "").strip()
    except (IOError, OSError):
        return None


def cpu_model():
    """The CPU's model name from /proc/cpuinfo (or ``platform.processor()``)."""
    text = _read("/proc/cpuinfo") or ""
    for line in text.splitlines():
        key = line.split(":")[0].strip().lower()
        if key in ("model name", "hardware", "cpu model") and ":" in line:
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def memory_mb():
    """Total memory in MiB from /proc/meminfo, or None."""
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return None


def jetson_model():
    """The board name (e.g. ``NVIDIA Jetson Nano Developer Kit``) or None."""
    model = _read("/proc/device-tree/model")
    if model and ("jetson" in model.lower() or os.path.exists("/etc/nv_tegra_release")):
        return model
    return None


def _run(cmd):
    """stdout of a command (Python 3.6-safe), or None when it cannot run."""
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                universal_newlines=True)
        out, _ = proc.communicate(timeout=10)
        return out if proc.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def nvpmodel_mode():
    """The Jetson power mode reported by ``nvpmodel -q`` (e.g. ``MAXN``), or None."""
    out = _run(["nvpmodel", "-q"])
    for line in (out or "").splitlines():
        if "power mode" in line.lower() and ":" in line:
            return line.split(":", 1)[1].strip()
    return None


def clocks_locked(root="/sys/devices/system/cpu"):
    """True when every CPU's minimum frequency equals its maximum (what
    ``jetson_clocks`` sets), False when not, None where unreadable."""
    cpus = sorted(glob.glob(os.path.join(root, "cpu[0-9]*", "cpufreq")))
    states = []
    for cpufreq in cpus:
        low = _read(os.path.join(cpufreq, "scaling_min_freq"))
        high = _read(os.path.join(cpufreq, "scaling_max_freq"))
        if low and high:
            states.append(low == high)
    return all(states) if states else None


def jetson_info():
    """``{"model", "nvpmodel", "jetson_clocks", "warnings"}`` on a Jetson, else None."""
    model = jetson_model()
    if model is None:
        return None
    mode, locked = nvpmodel_mode(), clocks_locked()
    warnings = []
    if mode is not None and mode.split()[0].upper() not in ("MAXN", "0"):
        warnings.append("power mode is %s, not MAXN: run `sudo nvpmodel -m 0`" % mode)
    if locked is False:
        warnings.append("clocks are not locked: run `sudo jetson_clocks` for stable numbers")
    return {"model": model, "nvpmodel": mode, "jetson_clocks": locked,
            "warnings": warnings}


def machine_info():
    """A dict describing this machine (for the benchmark's JSON)."""
    info = {"hostname": platform.node(), "platform": platform.platform(),
            "arch": platform.machine(), "cpu": cpu_model(),
            "cpu_count": os.cpu_count(), "memory_mb": memory_mb(),
            "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if hasattr(os, "sched_getaffinity"):
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    info["jetson"] = jetson_info()
    return info


def _version(name):
    module = sys.modules.get(name)
    if module is None:
        try:
            module = __import__(name)
        except Exception:  # absent or broken (e.g. TensorRT without a GPU)
            return None
    return getattr(module, "__version__", "unknown")


def versions(names=("numpy", "cv2", "onnxruntime", "tensorrt", "pycuda")):
    """Versions of Python and the runtime packages; torch only if already loaded
    (the edge never imports it)."""
    out = {"python": platform.python_version()}
    for name in names:
        out[name] = _version(name)
    for name in ("torch", "torchvision", "onnx"):
        if name in sys.modules:
            out[name] = getattr(sys.modules[name], "__version__", "unknown")
    return out


def best_seconds(call, seconds):
    """Shortest wall time (s) of ``call()``, repeated for about ``seconds`` (at
    least once): the least disturbed run, the fairest figure on a busy machine."""
    best, deadline = None, time.perf_counter() + seconds
    while True:
        t0 = time.perf_counter()
        call()
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
        if time.perf_counter() > deadline:
            return best


def matmul_peak_gflops(n=1024, seconds=1.0, dtype=np.float32):
    """Best fp32 GFLOP/s of an ``n x n`` numpy matrix multiply (BLAS, all its
    threads), repeated for about ``seconds``: the machine's practical peak."""
    rng = np.random.RandomState(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    out = np.empty((n, n), dtype=dtype)
    np.dot(a, b, out=out)  # warm-up: threads started, pages touched
    return 2.0 * n ** 3 / best_seconds(lambda: np.dot(a, b, out=out), seconds) / 1e9


def ort_best_seconds(model_bytes, threads=None, seconds=0.5):
    """``best_seconds`` of one ONNX Runtime CPU call of ``model_bytes`` (one
    float32 input of fixed shape, all ones) over about ``seconds``, with the
    backends' session options and ``threads`` intra-op threads."""
    from edge.backends import import_onnxruntime, session_options
    ort = import_onnxruntime()
    session = ort.InferenceSession(model_bytes, session_options(ort, threads),
                                   providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name:
            np.ones([int(d) for d in session.get_inputs()[0].shape], np.float32)}
    for _ in range(10):  # warm-up: threads started, weights in cache as a decoder's are
        session.run(None, feed)
    return best_seconds(lambda: session.run(None, feed), seconds)


def ort_matvec_gbs(model_bytes, weight_bytes, empty_bytes, threads=None, seconds=0.5):
    """GB/s at which ONNX Runtime's CPU MatMul streams ``weight_bytes`` of fp32
    weights in the batch-1 matrix-vector model ``model_bytes`` (``export.probes.
    matvec_model``), its best call time less that of ``empty_bytes`` (the same
    model with a tiny matrix): the kernel's rate, without the per-call cost a
    one-graph caption pays once, not per step. None if not measurable."""
    kernel = (ort_best_seconds(model_bytes, threads, seconds)
              - ort_best_seconds(empty_bytes, threads, seconds))
    return float(weight_bytes) / kernel / 1e9 if kernel > 0 else None


def matmul_peak_with_threads(threads=None, n=1024, seconds=1.0):
    """``matmul_peak_gflops`` with BLAS limited to ``threads`` threads, measured
    in a child process (BLAS reads its thread count at import); all threads
    (in this process) when ``threads`` is None. None if the child fails."""
    if not threads:
        return matmul_peak_gflops(n, seconds)
    env = dict(os.environ)
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = str(int(threads))
    code = ("from edge.bench.system import matmul_peak_gflops; "
            "print(matmul_peak_gflops(%d, %r))" % (n, seconds))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    try:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, universal_newlines=True, env=env)
        out, _ = proc.communicate(timeout=120)
        return float(out.strip().splitlines()[-1]) if proc.returncode == 0 else None
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return None
