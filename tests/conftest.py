"""Shared fixtures: the real data excerpts in tests/fixtures/data and tiny models."""
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
REAL_DATA = os.path.join(FIXTURES, "data")
PY36_VENV = os.path.join(ROOT, ".venv36")


def py36_python():
    """``(interpreter path or None, reason)`` of the Jetson-floor runtime venv
    (Python 3.6, numpy 1.19.5, onnxruntime 1.10.0, OpenCV 4.6): ``$NANOCAP_PY36``
    if set, else ``.venv36/bin/python`` as ``.ci/py36-venv`` builds it."""
    path = os.environ.get("NANOCAP_PY36") or os.path.join(PY36_VENV, "bin", "python")
    if os.path.isfile(path):
        return path, ""
    return None, ("no Python 3.6 runtime venv at %s (build it with .ci/py36-venv; "
                  "needs a pyenv Python 3.6)" % path)


PY36, PY36_MISSING = py36_python()
needs_py36 = pytest.mark.skipif(PY36 is None, reason=PY36_MISSING)


@pytest.fixture(scope="session")
def real_data():
    """Path of tests/fixtures/data: excerpts of real Flickr8k/COCO/Karpathy/metrics
    files in their original formats (see tests/fixtures/README.md)."""
    return REAL_DATA


TINY_WORDS = ["a", "red", "blue", "green", "circle", "square", "triangle", "on",
              "left", "right", "of", "the", "small", "big", "and"]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A random-weight checkpoint: mobilenet_v3_small at 64 px, GRU-32, 19 words.

    Returns the checkpoint path. Deterministic (seeded) so tests can compare runs.
    """
    torch = pytest.importorskip("torch")
    from edge.vocab import SPECIALS, Vocabulary
    from train.model.build import build_captioner
    from train.model.captioner import ModelConfig
    from train.model.checkpoint import save_checkpoint

    torch.manual_seed(0)
    vocab = Vocabulary(list(SPECIALS) + TINY_WORDS)
    config = ModelConfig(vocab_size=len(vocab), image_size=64, embed=16, hidden=32,
                         max_len=8)
    model = build_captioner(config, weights="none").eval()
    path = str(tmp_path_factory.mktemp("ckpt") / "tiny.pt")
    save_checkpoint(path, model, vocab, {"epoch": 0})
    return path


def calibrate_batchnorm(model, images):
    """Set every BatchNorm's statistics from ``images`` (uint8 ``[N,H,W,3]`` BGR): a
    ``--weights none`` backbone then gives features of order 1 instead of ~1e-9, so
    the random model's captions depend on the image. Returns ``model`` in eval mode."""
    import torch
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None          # a plain average over the calibration batch
    model.train()
    with torch.no_grad():
        model.encode(torch.from_numpy(images))
    return model.eval()


@pytest.fixture(scope="session")
def varied_bundle(tmp_path_factory):
    """Like ``tiny_bundle`` (fp32, step graphs for beam search), but its BatchNorm
    statistics come from 8 fixture photos (``calibrate_batchnorm``): different
    images get different captions, so a caption handed to the wrong frame shows."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    import cv2
    import numpy as np
    from edge.vocab import SPECIALS, Vocabulary
    from export.onnx_export import export_bundle
    from train.model.build import build_captioner
    from train.model.captioner import ModelConfig
    from train.model.checkpoint import save_checkpoint

    folder = os.path.join(REAL_DATA, "flickr8k", "images")
    names = sorted(os.listdir(folder))[:8]
    images = np.stack([cv2.resize(cv2.imread(os.path.join(folder, n)), (64, 64)) for n in names])
    torch.manual_seed(0)
    vocab = Vocabulary(list(SPECIALS) + TINY_WORDS)
    config = ModelConfig(vocab_size=len(vocab), image_size=64, embed=16, hidden=32, max_len=8)
    model = calibrate_batchnorm(build_captioner(config, weights="none"), images)
    root = tmp_path_factory.mktemp("varied")
    save_checkpoint(str(root / "varied.pt"), model, vocab, {"epoch": 0})
    export_bundle(str(root / "varied.pt"), str(root / "bundle"), precisions=("fp32",))
    return str(root / "bundle")


@pytest.fixture(scope="session")
def tiny_bundle(tiny_checkpoint, tmp_path_factory):
    """``tiny_checkpoint`` exported (fp32 only) to a bundle directory; returns its path."""
    pytest.importorskip("onnx")
    from export.onnx_export import export_bundle

    out = str(tmp_path_factory.mktemp("bundle") / "tiny")
    export_bundle(tiny_checkpoint, out, precisions=("fp32",))
    return out


@pytest.fixture(scope="session")
def beam_bundles(tmp_path_factory):
    """``{"fc": dir, "att": dir}``: random-weight tiny fc and att models exported with
    fp32 + fp16 and ``--beam 3`` (T = 5), for the TensorRT tests."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from edge.vocab import SPECIALS, Vocabulary
    from export.onnx_export import export_bundle
    from train.model.build import build_captioner
    from train.model.captioner import ModelConfig
    from train.model.checkpoint import save_checkpoint

    root, bundles = tmp_path_factory.mktemp("beam_bundles"), {}
    vocab = Vocabulary(list(SPECIALS) + TINY_WORDS)
    for decoder in ("fc", "att"):
        torch.manual_seed(1)
        config = ModelConfig(vocab_size=len(vocab), image_size=64, embed=16, hidden=32,
                             max_len=5, decoder=decoder)
        path = str(root / ("%s.pt" % decoder))
        save_checkpoint(path, build_captioner(config, weights="none").eval(), vocab, {"epoch": 0})
        bundles[decoder] = str(root / decoder)
        export_bundle(path, bundles[decoder], precisions=("fp32", "fp16"), beam=3)
    return bundles
