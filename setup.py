"""nanocap: a real-time camera captioner for the NVIDIA Jetson Nano."""
from setuptools import find_packages, setup

TRAIN = ["torch>=1.13", "torchvision>=0.14", "pycocoevalcap>=1.2", "tqdm"]
EXPORT = ["onnx>=1.12", "onnxruntime>=1.10"]
# paho-mqtt: the mqtt:// output (1.6.1 is the newest for the Jetson's Python 3.6)
MQTT = ["paho-mqtt>=1.6"]
EDGE = ["opencv-python>=4.1", "onnxruntime>=1.10"] + MQTT
# gpu replaces onnxruntime: install it instead of [edge]/[export], never beside them.
# TensorRT pinned to the API generations edge/trt is tested against (10.x, 11.0; the
# Nano's 8.2 comes with JetPack); pycuda moves the runner's data (docs/tensorrt.md).
GPU = ["onnxruntime-gpu>=1.10", "tensorrt>=10.3,<11.1", "pycuda>=2022.1"]
DEV = TRAIN + EXPORT + MQTT + ["opencv-python-headless>=4.1", "pytest", "vermin", "matplotlib"]

setup(
    name="nanocap",
    version="0.1.0",
    description="Real-time camera captioning (MobileNet + GRU) for the Jetson Nano",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["edge", "edge.*", "export", "export.*", "train", "train.*"]),
    python_requires=">=3.6",
    install_requires=["numpy>=1.19"],
    extras_require={"train": TRAIN, "export": EXPORT, "edge": EDGE, "gpu": GPU, "mqtt": MQTT,
                    "dev": DEV},
    entry_points={"console_scripts": [
        "nanocap-train=train.__main__:entry",
        "nanocap-export=export.__main__:entry",
        "nanocap-live=edge.live_cli:entry",
    ]},
)
