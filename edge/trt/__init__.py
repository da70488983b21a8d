"""Native TensorRT for the device: everything that touches ``tensorrt`` or pycuda.

- ``build``: engines built from a bundle's ONNX on the target (8.x and 10.x APIs),
  cached beside the ONNX with a JSON sidecar.
- ``calibrator``: the INT8 entropy calibrator and its cache.
- ``cuda``: device memory, copies and a stream through pycuda.
- ``runner``: ``TrtGraph`` runs an engine; ``engine_for`` builds one on first use.
- ``onnx_wire``: the uint8 -> float32 input patch TensorRT 8.2 needs.

Nothing here is imported unless the TensorRT backend is asked for.
"""
