"""Options for ONNX Runtime's TensorRT execution provider: engines cached beside
the bundle, with the timing cache, fp16 kernels on the Nano.

Without options the provider rebuilds every engine at every start (minutes on a
Nano) in fp32: its engine cache is off by default. ``trt_options`` turns on
(names from ONNX Runtime's TensorRT execution provider docs)::

    trt_engine_cache_enable  True   keep built engines ...
    trt_engine_cache_path    DIR    ... in the bundle directory
    trt_engine_cache_prefix  caption.fp16.ort-trt   named like nanocap's own engines
    trt_timing_cache_enable  True   and the layer timing cache ...
    trt_timing_cache_path    DIR    ... beside them
    trt_fp16_enable          True   fp16 kernels (the Nano's fastest precision)

The prefix and the timing cache path are newer options than the JetPack 4.6
wheels (ONNX Runtime 1.10/1.11) know; such a provider refuses the session with
"Invalid TensorRT EP option: NAME": ``refused_option`` reads NAME and the
backend retries without it (the cache then keeps ONNX Runtime's own file names,
still in the bundle directory).
"""
import os
import re

TRT_PROVIDER = "TensorrtExecutionProvider"
PREFIX_SUFFIX = ".ort-trt"


def engine_prefix(graph, fp16):
    """``caption.fp16.ort-trt``: the provider's engine files start with it."""
    return "%s.%s%s" % (graph, "fp16" if fp16 else "fp32", PREFIX_SUFFIX)


def trt_options(bundle_dir, graph, fp16):
    """Provider options (strings) of the TensorRT provider for one graph of a bundle."""
    directory = os.path.abspath(bundle_dir)
    flag = "True" if fp16 else "False"
    return {"trt_engine_cache_enable": "True", "trt_engine_cache_path": directory,
            "trt_engine_cache_prefix": engine_prefix(graph, fp16),
            "trt_timing_cache_enable": "True", "trt_timing_cache_path": directory,
            "trt_fp16_enable": flag}


def refused_option(error):
    """The option an "Invalid TensorRT EP option: NAME" error names, else None."""
    found = re.search(r"Invalid TensorRT EP option:\s*(\w+)", str(error))
    return found.group(1) if found else None


def provider_options(providers, options):
    """ONNX Runtime's ``provider_options`` list for ``providers``: ``options`` for the
    TensorRT provider, none for the others."""
    return [dict(options) if p == TRT_PROVIDER else {} for p in providers]


def building_note(bundle_dir, graph, fp16):
    """One line to say before a session whose TensorRT engine is not cached yet, or None."""
    prefix = engine_prefix(graph, fp16)
    names = os.listdir(bundle_dir) if os.path.isdir(bundle_dir) else []
    if any(n.startswith((prefix, "TensorrtExecutionProvider_")) and n.endswith(".engine")
           for n in names):
        return None
    return ("nanocap: ONNX Runtime's TensorRT provider builds its %s engine for %s.onnx on "
            "first use (minutes on a Nano); it is cached in %s for the next start"
            % ("fp16" if fp16 else "fp32", graph, os.path.abspath(bundle_dir)))
