"""``python -m export COMMAND``: bundle export, parity checks, TensorRT engines."""
from edge.cli import dispatch

COMMANDS = [
    ("onnx", "export.onnx_export", "export a checkpoint to a bundle of ONNX graphs"),
    ("verify", "export.verify", "compare PyTorch and ONNX Runtime captions"),
    ("trt", "export.trt", "build TensorRT engines from a bundle (on the target)"),
]


def main(argv=None):
    return dispatch("python -m export", "nanocap export", COMMANDS, argv)


def entry():
    raise SystemExit(main())


if __name__ == "__main__":
    entry()
