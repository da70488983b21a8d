"""Captioning backends: frames in, captions (text, token ids, latency) out.

One interface for every engine::

    backend = open_backend(bundle, backend="auto", precision="fp32", decode="greedy")
    results = backend.caption([frame, ...])   # uint8 [h, w, 3] BGR, any size
    results[0].text, results[0].tokens, results[0].latency_ms
    backend.providers        # what really runs, e.g. ["CPUExecutionProvider"]
    backend.last_stages_ms   # {"resize", "inference", "decode"} of the last call, ms
    backend.close()

Decoding is written once, in ``Backend``: resize to the bundle's input size,
then greedy through the one-call ``caption`` graph, or beam search
(``edge.search.beam_search``) over ``encoder`` + ``decoder_step``, then
detokenising with the bundle vocabulary. ``encoder`` outputs the state and
then any memory tensors (none for the ``fc`` decoder; ``nanocap.json`` names
them); ``decoder_step`` takes ``token, state`` and then those same tensors,
which are passed to every step unchanged (repeated per beam): no backend
special-cases a decoder. Subclasses only open a graph and run
it: ``run(graph_name, feeds) -> list of outputs``.

- ``OrtBackend``: ONNX Runtime, providers tried in the order TensorRT -> CUDA ->
  CPU (only those installed); ``providers`` is ``session.get_providers()``.
- ``TrtBackend``: native TensorRT through ``edge.trt.runner`` (engines built on
  first run by the export builder and cached beside the ONNX).
"""
import importlib
import sys
import time
from collections import namedtuple

import numpy as np

from edge.bundle import check_vocab_size
from edge.errors import NanocapError
from edge.image import resize
from edge.ort_trt import (TRT_PROVIDER, building_note, provider_options, refused_option,
                          trt_options)
from edge.search import beam_search, trim_tokens

CaptionResult = namedtuple("CaptionResult", "text tokens latency_ms")

BACKENDS = ("auto", "ort", "trt")
DECODES = ("greedy", "beam")
ORT_PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider",
                      "CPUExecutionProvider")
ORT_INSTALL = ("ONNX Runtime is not installed: pip install onnxruntime "
               "(onnxruntime-gpu on a CUDA machine; on a Jetson the JetPack wheel)")
NP_DTYPES = {"uint8": np.uint8, "int32": np.int32, "int64": np.int64,
             "float32": np.float32, "float16": np.float16}


def _np_dtype(entry, index, default):
    """numpy dtype of input ``index`` of a graph entry (``default`` if unknown)."""
    try:
        return NP_DTYPES.get(entry["inputs"][index]["dtype"], default)
    except (KeyError, IndexError, TypeError):
        return default


class Backend(object):
    """Base class: resize, decoding and detokenising, written once.

    Subclasses implement ``open_graph(name, path)`` (called for every graph the
    decode needs, at construction) and ``run(name, feeds) -> [outputs]``.
    """

    name = "base"
    onnx_precision = None  # which ONNX variant's metadata applies (None: ``precision``)

    def __init__(self, bundle, precision="fp32", decode="greedy", beam_size=3):
        if decode not in DECODES:
            raise NanocapError("unknown decode %r (choose from %s)" % (decode, ", ".join(DECODES)))
        self.bundle = bundle
        self.precision = precision
        self.decode = decode
        self.beam_size = int(beam_size)
        self.providers = []
        self.last_stages_ms = {"resize": 0.0, "inference": 0.0, "decode": 0.0}
        self.graphs = ("caption",) if decode == "greedy" else ("encoder", "decoder_step")
        self.variant = self.onnx_precision or precision
        self.entries = dict((g, bundle.graph_entry(g, self.variant)) for g in self.graphs)
        self.input_names = dict((g, [i["name"] for i in e.get("inputs", [])])
                                for g, e in self.entries.items())
        self._inference_s = 0.0

    def _open_all(self):
        for graph in self.graphs:
            self.open_graph(graph, self.bundle.graph_path(graph, self.variant))

    def open_graph(self, name, path):
        raise NotImplementedError

    def run(self, name, feeds):
        raise NotImplementedError

    def close(self):
        """Release engines and sessions (idempotent)."""

    def _timed_run(self, name, feeds):
        t0 = time.perf_counter()
        outputs = self.run(name, feeds)
        self._inference_s += time.perf_counter() - t0
        return outputs

    def _feed(self, graph, values):
        names = self.input_names[graph]
        if len(names) != len(values):
            raise NanocapError("graph %s expects inputs %s" % (graph, names))
        return dict(zip(names, values))

    def _greedy(self, batch):
        """``uint8 [N,H,W,3]`` -> token ids ``[N, T]`` from the one-call caption graph."""
        return self._timed_run("caption", self._feed("caption", [batch]))[0]

    def _beam(self, batch):
        """``uint8 [N,H,W,3]`` -> token ids ``[N, T]`` by beam search over the step graphs.

        ``encoder`` outputs the state, then any memory tensors; ``decoder_step``
        takes ``token, state`` then those same tensors (``nanocap.json`` names
        them): every extra encoder output goes to every step unchanged."""
        state, memory = self._encoder_outputs(batch)
        entry = self.entries["decoder_step"]
        token_dtype = _np_dtype(entry, 0, np.int32)
        state_dtype = _np_dtype(entry, 1, np.float32)

        def step(tokens, step_state, *step_memory):
            values = [np.asarray(tokens, dtype=token_dtype),
                      np.asarray(step_state, dtype=state_dtype)] + list(step_memory)
            logprobs, new_state = self._timed_run("decoder_step",
                                                  self._feed("decoder_step", values))[:2]
            return logprobs, new_state

        vocab = self.bundle.vocab
        tokens, _ = beam_search(step, state, vocab.start_id, vocab.end_id, self.bundle.max_len,
                                beam_size=self.beam_size, memory=memory)
        return tokens

    def _encoder_outputs(self, batch):
        """Run ``encoder``: ``(state [N,S], memory tuple)`` in the dtypes
        ``decoder_step`` declares for its inputs 1, 2, ..."""
        outputs = self._timed_run("encoder", self._feed("encoder", [batch]))
        entry = self.entries["decoder_step"]
        cast = [np.asarray(value, dtype=_np_dtype(entry, 1 + i, np.float32))
                for i, value in enumerate(outputs)]
        return cast[0], tuple(cast[1:])

    def caption(self, frames):
        """Caption ``frames`` (list of ``uint8 [h, w, 3]`` BGR, any size).

        Returns one ``CaptionResult(text, tokens, latency_ms)`` per frame;
        ``latency_ms`` is the whole call (resize + inference + decode) in ms.
        """
        if not len(frames):
            return []
        t0 = time.perf_counter()
        batch = np.stack([resize(f, self.bundle.input_size) for f in frames])
        t1 = time.perf_counter()
        self._inference_s = 0.0
        ids = self._greedy(batch) if self.decode == "greedy" else self._beam(batch)
        vocab = self.bundle.vocab
        tokens = [trim_tokens(row, vocab.end_id) for row in np.asarray(ids)]
        texts = [vocab.decode(t) for t in tokens]
        t2 = time.perf_counter()
        total_ms = (t2 - t0) * 1000.0
        inference_ms = self._inference_s * 1000.0
        self.last_stages_ms = {"resize": (t1 - t0) * 1000.0, "inference": inference_ms,
                               "decode": max(0.0, (t2 - t1) * 1000.0 - inference_ms)}
        return [CaptionResult(text, tok, total_ms) for text, tok in zip(texts, tokens)]

    def describe(self):
        """One line: backend, precision, decode and providers."""
        return "%s %s %s (%s)" % (self.name, self.precision, self.decode,
                                  ", ".join(self.providers) or "?")


def import_onnxruntime():
    """``onnxruntime`` or a ``NanocapError`` naming what to install."""
    try:
        return importlib.import_module("onnxruntime")
    except ImportError:
        raise NanocapError(ORT_INSTALL)


def ort_provider_order(available, wanted=None):
    """Providers to try: ``wanted`` (or TensorRT -> CUDA -> CPU), only those available."""
    order = list(wanted) if wanted else list(ORT_PROVIDER_ORDER)
    usable = [p for p in order if p in available]
    if not usable:
        raise NanocapError("none of the ONNX Runtime providers %s is available here (have: %s)"
                           % (", ".join(order), ", ".join(available)))
    return usable


def session_options(ort, threads=None):
    """ONNX Runtime session options for one caption at a time: all graph
    optimisations, sequential execution, ``threads`` intra-op threads (None:
    ONNX Runtime's default, one per core).

    Worker threads keep ONNX Runtime's default of spinning between operators: a
    batch-1 caption is hundreds of tiny operators, and on an idle 2-core machine
    the synthetic model's caption graph took 1.82 ms spinning against 2.72 ms
    sleeping (2 threads; 1 thread: 2.39 ms). On a CPU busy with other work the
    order reverses (6.4 ms against 2.8 ms measured at load 9): there one thread
    (``threads=1``, the benchmark's ``--threads 1``) is the steadier choice.
    They stop spinning when a call returns (``session.force_spinning_stop``;
    ONNX Runtime >= 1.15 reads it, older ones ignore it), so the next frame's
    resize does not compete with them: 1280x720 -> 224 took 0.51 ms instead of
    0.69 ms right after a caption, at an unchanged caption time.
    """
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.force_spinning_stop", "1")
    if threads:
        options.intra_op_num_threads = int(threads)
    return options


class OrtBackend(Backend):
    """ONNX Runtime sessions, one per graph; ``providers`` = what the session uses."""

    name = "ort"

    def __init__(self, bundle, precision="fp32", decode="greedy", beam_size=3,
                 providers=None, threads=None, trt_fp16=None):
        Backend.__init__(self, bundle, precision, decode, beam_size)
        self.ort = import_onnxruntime()
        self.wanted = ort_provider_order(self.ort.get_available_providers(), providers)
        self.threads = threads
        # TensorRT provider kernels: fp16 unless fp32 was asked for (the Nano's fastest)
        self.trt_fp16 = precision != "fp32" if trt_fp16 is None else bool(trt_fp16)
        self.sessions = {}
        self._open_all()
        self.providers = list(self.sessions[self.graphs[0]].get_providers())

    def _session(self, path, providers, options):
        return self.ort.InferenceSession(path, sess_options=session_options(self.ort, self.threads),
                                         providers=providers,
                                         provider_options=provider_options(providers, options))

    def open_graph(self, name, path):
        """Open ``path``; a provider that fails to start is dropped and the next tried.
        The TensorRT provider caches its engines beside the bundle (``edge.ort_trt``);
        an option its ONNX Runtime does not know is dropped and the session retried."""
        providers, last = list(self.wanted), None
        options = trt_options(self.bundle.directory, name, self.trt_fp16)
        if TRT_PROVIDER in providers:
            note = building_note(self.bundle.directory, name, self.trt_fp16)
            if note:
                sys.stderr.write(note + "\n")
        while providers:
            try:
                self.sessions[name] = self._session(path, providers, options)
            except Exception as exc:  # ORT raises its own exception types
                last = exc
                if options.pop(refused_option(exc) or "", None) is None:
                    providers = providers[1:]
                continue
            outputs = [(o.name, o.shape) for o in self.sessions[name].get_outputs()]
            return check_vocab_size(self.bundle, name, outputs, path)
        raise NanocapError("ONNX Runtime cannot load %s: %s" % (path, str(last).splitlines()[0]
                                                               if str(last) else repr(last)))

    def run(self, name, feeds):
        return self.sessions[name].run(None, feeds)

    def close(self):
        self.sessions = {}


class TrtBackend(Backend):
    """Native TensorRT engines through ``edge.trt.runner`` (built on first run, cached).

    Engines are built from the fp32 ONNX; ``precision`` selects TensorRT's kernels.
    ``precision=None``: the fastest the GPU supports (fp16 on a Nano, see
    ``edge.trt.build.fastest_precision``), said on ``log`` (a stream; stderr)."""

    name = "trt"
    onnx_precision = "fp32"

    def __init__(self, bundle, precision=None, decode="greedy", beam_size=3,
                 workspace_mb=None, log=None, max_batch=1):
        self.runner = import_trt_runner()
        check = getattr(self.runner, "import_tensorrt", None)
        if check:
            check()  # names TensorRT first where both it and pycuda are missing
        if precision is None:
            from edge.trt.build import fastest_precision
            stream = log or sys.stderr
            precision = fastest_precision(log=lambda m: stream.write("nanocap: %s\n" % m))
        Backend.__init__(self, bundle, precision, decode, beam_size)
        self.workspace_mb = workspace_mb
        self.max_batch = max(1, int(max_batch)) * (beam_size if decode == "beam" else 1)
        self.engines = {}
        self._open_all()
        self.providers = ["TensorRT"]

    def open_graph(self, name, path):
        from edge.trt.build import DEFAULT_MAX_BATCH
        kwargs = {} if self.workspace_mb is None else {"workspace_mb": self.workspace_mb}
        if self.max_batch > DEFAULT_MAX_BATCH:  # the profile's batch range: every input (x beam)
            kwargs["max_batch"] = self.max_batch
        if name == "caption":  # one engine where it fits the GPU, else step engines
            self.engines[name] = self.runner.open_caption(self.bundle, self.precision, **kwargs)
            return
        engine = self.runner.engine_for(self.bundle, name, self.precision, **kwargs)
        self.engines[name] = self.runner.TrtGraph(engine)

    def run(self, name, feeds):
        return self.engines[name](feeds)

    def close(self):
        for engine in self.engines.values():
            closer = getattr(engine, "close", None)
            if closer:
                closer()
        self.engines = {}


def import_trt_runner():
    """``edge.trt.runner`` with TensorRT behind it, or one line naming what to install."""
    try:
        return importlib.import_module("edge.trt.runner")
    except ImportError as exc:
        missing = (getattr(exc, "name", None) or "?").split(".")[0]
        raise NanocapError("the TensorRT backend needs %r: install TensorRT's Python bindings "
                           "and pycuda (JetPack ships both; pip install pycuda), or use "
                           "--backend ort" % missing)


def tensorrt_present():
    """True where ``import tensorrt`` would work (checked without importing it)."""
    try:
        import importlib.util
        return importlib.util.find_spec("tensorrt") is not None
    except (ImportError, ValueError):
        return False


def _as_bundle(bundle):
    if isinstance(bundle, str):
        from edge.bundle import load_bundle
        return load_bundle(bundle)
    return bundle


def open_backend(bundle, backend="auto", precision=None, decode="greedy", beam_size=3,
                 providers=None, workspace_mb=None, log=None, max_batch=1):
    """Open a captioning backend on ``bundle`` (a directory path or a loaded ``Bundle``).

    ``backend``: "ort", "trt", or "auto" (TensorRT where it is installed, falling
    back to ONNX Runtime with a note on ``log``, else ONNX Runtime).
    ``precision``: fp32/fp16/int8; None picks per backend: TensorRT's fastest
    on this GPU (fp16 on a Nano; said on ``log``), fp32 for ONNX Runtime.
    ``providers``: ONNX Runtime providers to try (default TensorRT -> CUDA -> CPU).
    ``max_batch``: frames per call at most (the inputs of a live run): TensorRT
    engines' batch profile covers it (times the beam), at least ``DEFAULT_MAX_BATCH``.
    """
    if backend not in BACKENDS:
        raise NanocapError("unknown backend %r (choose from %s)" % (backend, ", ".join(BACKENDS)))
    bundle = _as_bundle(bundle)
    if backend == "trt" or (backend == "auto" and tensorrt_present()):
        try:
            return TrtBackend(bundle, precision, decode, beam_size, workspace_mb=workspace_mb,
                              log=log, max_batch=max_batch)
        except NanocapError as exc:
            if backend == "trt":
                raise
            (log or sys.stderr).write("nanocap: TensorRT not usable (%s); using ONNX Runtime\n"
                                      % exc)
    return OrtBackend(bundle, precision or "fp32", decode, beam_size, providers=providers,
                      trt_fp16=precision in (None, "fp16", "int8"))
