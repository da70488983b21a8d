"""Build TensorRT engines from a bundle's ONNX graphs, on the target device.

One code path for TensorRT 8.2 (JetPack 4.6 on the Nano: explicit-batch network,
``max_workspace_size``), 10.x (``set_memory_pool_limit``) and 11 (no precision
flags, no calibrators: every network is strongly typed). All use
``build_serialized_network``, one optimisation profile for the dynamic batch
(1 .. ``max_batch``) and a timing cache.

Precision: where the builder has precision flags (8.x, 10.x) the fp32 ONNX is
built with ``BuilderFlag.FP16`` (and ``INT8`` with an entropy calibrator that
writes / reads a calibration cache); ``platform_has_fast_fp16/int8`` are
honoured: the Nano has no INT8, so an int8 request builds fp16 there (with a
message), and a GPU without fast FP16 builds fp32. Where it has none (11), an
fp16 engine is built from the bundle's fp16 ONNX as a strongly typed network
(precision from the ONNX types; a bundle without one builds fp32, saying so), and
INT8 is one clear error (no calibrator API).

TensorRT (and the ONNX parser of 8.2) has no uint8 tensors: the builder hands
the parser a copy of the graph whose uint8 ``image`` input is declared float32
(the graph's first op casts it to float anyway; the runner feeds float32).

Files, beside the bundle's ONNX (engines are not portable across GPUs or
TensorRT versions, so the name says both)::

    caption.fp16.trt8.2.1.NVIDIA_Tegra_X1.engine        the plain serialized engine
    caption.fp16.trt8.2.1.NVIDIA_Tegra_X1.engine.json   sidecar: ONNX sha256, I/O, ...
    decoder_step_greedy.fp16.trt8.2.1.NVIDIA_Tegra_X1.engine   decoder_step + TopK(1)
    timing.trt8.2.1.NVIDIA_Tegra_X1.cache               shared timing cache
    caption.3f2a...(16 hex).trt8.2.1.calib              INT8 calibration cache

An engine is rebuilt when its sidecar's ONNX sha256 (or max batch) differs; a
calibration cache is named by the first 16 hex digits of its ONNX's sha256, so a
re-exported graph is never calibrated with the old graph's scales. A timing cache
TensorRT cannot read (corrupt, truncated) is discarded with a warning and
rebuilt. ``tensorrt`` is imported lazily; torch and onnx are never imported;
pycuda only for INT8 calibration from images (the calibrator copies batches to
the GPU): fp32/fp16 builds and builds from a calibration cache need no pycuda.
"""
import contextlib
import datetime
import json
import os
import re
import sys

import numpy as np

from edge.atomic import write_bytes, write_json
from edge.bundle import sha256_file
from edge.errors import NanocapError
from edge.trt.calibrator import CALIB_BATCH, make_calibrator, raise_calibration_error
from edge.trt.cuda import cuda_device, gpu_name
from edge.trt.heads import HEADS
from edge.trt.onnx_wire import float_image_inputs

DEFAULT_WORKSPACE_MB = 1024
DEFAULT_MAX_BATCH = 16
INSTALL_HINT = ("TensorRT's Python bindings are not installed: on a Jetson they come with "
                "JetPack (sudo apt install python3-libnvinfer; in a venv use "
                "--system-site-packages), on a desktop pip install tensorrt; "
                "or use the ONNX Runtime backend (--backend ort)")
_LOGGER = []


def import_tensorrt():
    """The ``tensorrt`` module, or ``NanocapError`` naming TensorRT and how to get it."""
    try:
        import tensorrt
    except ImportError:
        raise NanocapError(INSTALL_HINT)
    return tensorrt


def trt_logger(trt):
    """One shared ``trt.Logger`` (warnings and errors)."""
    if not _LOGGER:
        _LOGGER.append(trt.Logger(trt.Logger.WARNING))
    return _LOGGER[0]


def trt_version(trt):
    """``"8.2.1"`` from ``trt.__version__`` (major.minor.patch)."""
    return ".".join(str(trt.__version__).split(".")[:3])


def trt_major(trt):
    return int(str(trt.__version__).split(".")[0])


def precision_flags(trt):
    """True where the builder takes ``BuilderFlag.FP16``/``INT8`` (8.x, 10.x); TensorRT
    11 has neither: its networks are strongly typed (precision from the ONNX types)."""
    return hasattr(trt.BuilderFlag, "FP16")


def has_calibrators(trt):
    """True where TensorRT has the INT8 calibrator API (8.x, 10.x; not 11)."""
    return precision_flags(trt) and hasattr(trt, "IInt8EntropyCalibrator2")


def safe_name(text):
    """A file-name-safe form of a GPU name: ``NVIDIA Tegra X1`` -> ``NVIDIA_Tegra_X1``."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", str(text)).strip("_") or "gpu"


def engine_file(graph, precision, version, gpu, head=None):
    """``caption.fp16.trt8.2.1.NVIDIA_Tegra_X1.engine`` (``decoder_step_greedy...``
    with the greedy head)."""
    label = graph + ("_" + head if head else "")
    return "%s.%s.trt%s.%s.engine" % (label, precision, version, safe_name(gpu))




# -- building ------------------------------------------------------------------
def choose_precision(builder, precision, log):
    """The precision this GPU can build: int8 -> fp16 -> fp32 by the platform flags."""
    fast16 = getattr(builder, "platform_has_fast_fp16", True)
    fast8 = getattr(builder, "platform_has_fast_int8", True)
    if precision == "int8" and not fast8:
        fallback = "fp16" if fast16 else "fp32"
        log("TensorRT: this GPU has no fast INT8 (e.g. the Jetson Nano); building %s instead"
            % fallback)
        precision = fallback
    if precision == "fp16" and not fast16:
        log("TensorRT: this GPU has no fast FP16; building fp32 instead")
        precision = "fp32"
    return precision


def fastest_precision(log=None):
    """The fastest precision TensorRT can build here without calibration data:
    fp16 where the GPU has fast FP16 (``platform_has_fast_fp16``: the Nano and
    every recent GPU), else fp32. Said on ``log`` when given."""
    trt = import_tensorrt()
    builder = new_builder(trt)
    # deprecated in TensorRT 10.5 (every GPU it supports has fast FP16): absent -> True
    precision = "fp16" if getattr(builder, "platform_has_fast_fp16", True) else "fp32"
    if log:
        log("TensorRT: precision %s (the fastest this GPU supports; --precision chooses "
            "another)" % precision)
    return precision


def _parse(trt, builder, data, onnx_path):
    flags = 0  # 11: strongly typed, always (its STRONGLY_TYPED flag is deprecated)
    if trt_major(trt) < 10:  # explicit batch is the only mode from 10 on
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, trt_logger(trt))
    if not parser.parse(data):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise NanocapError("TensorRT cannot parse %s: %s"
                           % (onnx_path, "; ".join(errors) or "unknown error"))
    return network, parser


def _set_workspace(trt, config, workspace_mb):
    size = int(workspace_mb) << 20
    if hasattr(config, "set_memory_pool_limit"):  # 8.4+ and 10.x
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, size)
    else:  # 8.0 - 8.3 (JetPack 4.6 has 8.2)
        config.max_workspace_size = size


def _profile(builder, network, max_batch, opt_batch=1, fixed=None):
    """Batch range 1..max_batch (or exactly ``fixed``) for every network input."""
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        rest = tuple(int(d) for d in tensor.shape)[1:]
        if any(d < 0 for d in rest):
            raise NanocapError("input %s has a dynamic non-batch axis %s"
                               % (tensor.name, tuple(tensor.shape)))
        if fixed:
            shapes = [(fixed,) + rest] * 3
        else:
            shapes = [(1,) + rest, (min(opt_batch, max_batch),) + rest, (max_batch,) + rest]
        profile.set_shape(tensor.name, *shapes)
    return profile


def _timing_cache(config, path, log):
    """Attach the timing cache at ``path`` (or a new one) to ``config``; a file
    TensorRT cannot read is deleted with a warning and a new cache started."""
    data = b""
    if path and os.path.isfile(path):
        with open(path, "rb") as handle:
            data = handle.read()
    if data and not _attach_timing_cache(config, data):
        log("TensorRT: timing cache %s is unreadable (corrupt or truncated); discarded, "
            "a new one is built" % path)
        os.remove(path)
        data = b""
    if not data and not _attach_timing_cache(config, b""):
        log("TensorRT: cannot create a timing cache; building without one")


def _attach_timing_cache(config, data):
    """True when TensorRT accepted ``data`` as a timing cache (the API answers a bad
    blob with None, False or an exception, depending on the version)."""
    try:
        cache = config.create_timing_cache(data)
        return cache is not None and config.set_timing_cache(cache, False) is not False
    except Exception:  # TensorRT's own error types
        return False


def _save_timing_cache(config, path):
    if not path:
        return
    cache = config.get_timing_cache()
    if cache is not None:
        write_bytes(path, cache.serialize())


def build_engine(onnx_path, engine_path, precision="fp16", workspace_mb=DEFAULT_WORKSPACE_MB,
                 max_batch=DEFAULT_MAX_BATCH, calibration=None, timing_cache=None,
                 log=None, cuda=None, builder=None, head=None):
    """Build one engine from ``onnx_path`` and write it to ``engine_path``.

    ``precision``: fp32/fp16/int8 as built (see ``choose_precision`` first); without
    precision flags (TensorRT 11) the ONNX's own types decide and this is a label.
    ``head``: a key of ``HEADS`` (layers appended to the parsed network).
    ``calibration``: for int8, ``(feeds list or None, cache path)``; a cache that
    exists is used without feeds. ``cuda``: device-memory helper for the
    calibrator (``edge.trt.cuda.cuda_device()`` by default, only when it has feeds).
    Returns the input dtypes of the built network ``{name: numpy dtype}``."""
    trt = import_tensorrt()
    log = log or _stderr
    builder = builder or new_builder(trt)
    with open(onnx_path, "rb") as handle:
        data, _ = float_image_inputs(handle.read())
    network, parser = _parse(trt, builder, data, onnx_path)
    if head:
        HEADS[head][0](trt, network)
    config = builder.create_builder_config()
    _set_workspace(trt, config, workspace_mb)
    config.add_optimization_profile(_profile(builder, network, max_batch))
    if precision in ("fp16", "int8") and precision_flags(trt):
        config.set_flag(trt.BuilderFlag.FP16)
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    input_dtypes = dict((t.name, np.dtype(trt.nptype(t.dtype))) for t in inputs)
    calibrator = None
    if precision == "int8":
        _need_calibrators(trt)
        feeds, cache_path = calibration or (None, None)
        config.set_flag(trt.BuilderFlag.INT8)
        calibrator = make_calibrator(trt, feeds, cache_path, input_dtypes, cuda)
        config.int8_calibrator = calibrator
        config.set_calibration_profile(_profile(builder, network, CALIB_BATCH, fixed=CALIB_BATCH))
    _timing_cache(config, timing_cache, log)
    log("TensorRT %s: building %s (%s, batch 1..%d, workspace %d MiB); this takes a while"
        % (trt.__version__, os.path.basename(engine_path), precision, max_batch, workspace_mb))
    serialized = builder.build_serialized_network(network, config)
    raise_calibration_error(calibrator, onnx_path)
    if serialized is None:
        raise NanocapError("TensorRT could not build an engine from %s (see the TensorRT "
                           "messages above; try a larger --workspace-mb)" % onnx_path)
    write_bytes(engine_path, serialized)
    _save_timing_cache(config, timing_cache)
    return input_dtypes


def new_builder(trt):
    """A ``trt.Builder``; no GPU or driver is one clear line."""
    try:
        builder = trt.Builder(trt_logger(trt))
    except Exception as exc:  # TensorRT raises its own error types
        builder, reason = None, (str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    else:
        reason = "no builder returned"
    if builder is None:
        raise NanocapError("TensorRT cannot start (no usable NVIDIA GPU or driver?): %s" % reason)
    return builder


def _stderr(message):
    sys.stderr.write(message + "\n")


# -- the bundle's engines ---------------------------------------------------------
def read_sidecar(engine_path):
    """The sidecar dict of an engine, or None when missing or unreadable."""
    try:
        with open(engine_path + ".json") as handle:
            return json.load(handle)
    except (IOError, OSError, ValueError):
        return None


FALLBACKS = {"int8": ("int8", "fp16", "fp32"), "fp16": ("fp16", "fp32"), "fp32": ("fp32",)}


def _current(path, digest, precision, max_batch):
    """True when ``path`` is an engine built from ONNX ``digest`` for ``precision``."""
    side = read_sidecar(path)
    return bool(os.path.isfile(path) and side and side.get("onnx_sha256") == digest
                and side.get("requested_precision") == precision
                and int(side.get("max_batch", 0)) >= max_batch)


def _need_calibrators(trt):
    if not has_calibrators(trt):
        raise NanocapError("TensorRT %s has no INT8 calibration (no calibrator API): build "
                           "fp16 (--precision fp16) or run the bundle's int8 graph with ONNX "
                           "Runtime (--backend ort --precision int8)" % trt_version(trt))


def _source(bundle, graph, precision, typed):
    """The ONNX variant an engine of ``precision`` is built from: fp32 where the
    builder has precision flags, else (strongly typed) the graph of that precision;
    None when the bundle has none."""
    variant = precision if typed else "fp32"
    return variant if variant in bundle.precisions(graph) else None


def ensure_engine(bundle, graph, precision="fp16", workspace_mb=DEFAULT_WORKSPACE_MB,
                  max_batch=DEFAULT_MAX_BATCH, calib_images=None, force=False, log=None,
                  cuda=None, head=None):
    """Path of a current engine for ``graph`` of ``bundle`` (a loaded ``Bundle``),
    building it when missing, stale (ONNX sha256 changed) or ``force``d.
    ``head``: a key of ``HEADS`` (``"greedy"``: decoder_step + TopK(1))."""
    if precision not in FALLBACKS:
        raise NanocapError("TensorRT precision must be fp32, fp16 or int8, not %r" % precision)
    trt = import_tensorrt()
    log = log or _stderr
    typed = not precision_flags(trt)
    if precision == "int8":
        _need_calibrators(trt)
    version, gpu = trt_version(trt), (cuda.name() if cuda is not None else gpu_name())
    for candidate in FALLBACKS[precision]:
        variant = _source(bundle, graph, candidate, typed)
        path = os.path.join(bundle.directory, engine_file(graph, candidate, version, gpu, head))
        if variant and not force and _current(path, sha256_file(bundle.graph_path(
                graph, variant)), precision, max_batch):
            return path
    builder = new_builder(trt)
    built_as = choose_precision(builder, precision, log)
    if _source(bundle, graph, built_as, typed) is None:
        log("TensorRT %s builds %s from the ONNX's own types and this bundle has no %s %s "
            "graph (export --precision fp32,%s adds it): building fp32"
            % (version, built_as, built_as, graph, built_as))
        built_as = "fp32"
    onnx_path = bundle.graph_path(graph, _source(bundle, graph, built_as, typed))
    digest = sha256_file(onnx_path)
    path = os.path.join(bundle.directory, engine_file(graph, built_as, version, gpu, head))
    calibration = None
    if built_as == "int8":
        calibration = _calibration(bundle, graph, version, digest, calib_images)
    timing = os.path.join(bundle.directory, "timing.trt%s.%s.cache" % (version, safe_name(gpu)))
    with contextlib.ExitStack() as stack:
        if calibration and calibration[0]:  # the calibrator copies with pycuda on this thread
            cuda = cuda or cuda_device()
            stack.enter_context(cuda.active())
        build_engine(onnx_path, path, built_as, workspace_mb, max_batch, calibration, timing,
                     log, cuda, builder, head)
    _write_sidecar(path, bundle, graph, onnx_path, digest, built_as, precision, trt, gpu,
                   max_batch, workspace_mb, head)
    return path


def _write_sidecar(path, bundle, graph, onnx_path, digest, built_as, precision, trt, gpu,
                   max_batch, workspace_mb, head):
    entry = bundle.graph_entry(graph, "fp32")
    side = {"graph": graph, "onnx": os.path.basename(onnx_path), "onnx_sha256": digest,
            "precision": built_as, "requested_precision": precision, "tensorrt": trt.__version__,
            "gpu": gpu, "max_batch": max_batch, "workspace_mb": workspace_mb, "head": head,
            "strongly_typed": not precision_flags(trt),
            "inputs": [i["name"] for i in entry["inputs"]],
            "outputs": [o["name"] for o in entry["outputs"]] + (HEADS[head][1] if head else []),
            "built": datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")}
    write_json(path + ".json", side)
    return path


def calibration_cache_file(graph, digest, version):
    """``caption.<first 16 hex of the ONNX sha256>.trt8.2.1.calib``."""
    return "%s.%s.trt%s.calib" % (graph, digest[:16], version)


def _calibration(bundle, graph, version, digest, calib_images):
    """``(feeds or None, cache path)`` for an INT8 build of ``graph``."""
    cache = os.path.join(bundle.directory, calibration_cache_file(graph, digest, version))
    feeds = None
    if calib_images and not os.path.isfile(cache):
        from edge.calibration import calibration_feeds, calibration_images
        images = calibration_images(calib_images, bundle.input_size, log=sys.stderr)
        feeds = calibration_feeds(graph, bundle.directory, images, bundle.max_len,
                                  bundle.vocab.start_id, batch=CALIB_BATCH, drop_last=True)
        if not feeds:
            raise NanocapError("INT8 calibration needs at least %d readable images in %s"
                               % (CALIB_BATCH, calib_images))
    return feeds, cache
