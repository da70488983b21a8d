"""A FAKE ``tensorrt`` module (plus fake CUDA memory) for tests without a GPU.

``make_fake_tensorrt(8 | 10 | 11)`` builds the module (``builder.py``: network,
parser with onnx-tensorrt 8.2's node checks, config, builder; ``runtime.py``:
engines run by ONNX Runtime at the precision they were built for);
``FakeCuda`` stands in for the pycuda helper over fixed-size fake device
allocations (``memory.py``) that raise ``DeviceOverrun`` when overrun.
"""
from tests.fake_tensorrt.builder import (TIMING_MAGIC, VERSIONS, CalibratorAbort,  # noqa: F401
                                         make_fake_tensorrt)
from tests.fake_tensorrt.memory import DeviceOverrun, FakeCuda, read  # noqa: F401
