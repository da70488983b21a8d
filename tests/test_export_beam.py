"""The beam graph (``export onnx --beam K``): beam search in one ONNX graph,
within the JetPack 4.6 floor, equal to ``train.model.decoding``'s beam search
(also under ONNX Runtime 1.10 on Python 3.6 when installed), and normalised by
length as it is."""
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from edge.bundle import load_bundle  # noqa: E402
from export.onnx_export import export_bundle  # noqa: E402
from tests.conftest import PY36  # noqa: E402
from tests.test_export import _images, _session, run_on_py36  # noqa: E402
from train.model.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402


def test_beam_graph_matches_pytorch_beam_search(tiny_checkpoint, tmp_path):
    """``--beam 3``: beam search in one graph, within the floor, equal to train.model.decoding."""
    from export.floor import floor_problems
    from train.model.decoding import beam_search
    out = str(tmp_path / "beam")
    meta = export_bundle(tiny_checkpoint, out, beam=3, max_len=6)
    assert meta["beam"] == {"size": 3, "length_norm": 0.7}
    entry = load_bundle(out).graph_entry("caption_beam")
    assert entry["outputs"] == [{"name": "tokens", "dtype": "int32", "shape": ["N", 6]},
                                {"name": "score", "dtype": "float32", "shape": ["N"]}]
    path = os.path.join(out, "caption_beam.onnx")
    assert floor_problems(path) == []
    model, vocab, _ = load_checkpoint(tiny_checkpoint)
    images = _images(3, seed=4)
    with torch.no_grad():
        state = model.init_state(model.encode(torch.from_numpy(images)))
    ref_tokens, ref_scores = beam_search(model.step, state, vocab.start_id, vocab.end_id, 6,
                                         beam_size=3, length_norm=0.7)
    tokens, scores = _session(path).run(None, {"image": images})
    np.testing.assert_array_equal(tokens, ref_tokens.numpy())
    np.testing.assert_allclose(scores, ref_scores.numpy(), atol=1e-4)
    if PY36 is not None:
        np.testing.assert_array_equal(run_on_py36(path, images, tmp_path), tokens)


def test_beam_graph_normalises_by_length_when_beams_end_early(tiny_checkpoint, tmp_path):
    """A model whose beams end at different steps: ``<end>`` first (log-prob -1.9,
    one step) against "red" six times (-0.43 each, 2.6 in all). Unnormalised the
    short caption wins; divided by length ** 0.7 the long one does, in PyTorch's
    beam search and in ``caption_beam.onnx`` alike."""
    from train.model.decoding import beam_search
    model, vocab, _ = load_checkpoint(tiny_checkpoint)
    with torch.no_grad():
        model.out.weight.mul_(0.05)  # the image barely matters: the biases decide
        model.out.bias.copy_(torch.linspace(-1.5, -2.5, len(vocab)))
        model.out.bias[vocab.stoi["red"]] = 2.0
        model.out.bias[vocab.end_id] = 0.5
    checkpoint = str(tmp_path / "ends_early.pt")
    save_checkpoint(checkpoint, model, vocab, {"epoch": 0})
    images = _images(3, seed=4)
    with torch.no_grad():
        state = model.init_state(model.encode(torch.from_numpy(images)))
    want, want_scores = beam_search(model.step, state, vocab.start_id, vocab.end_id, 6,
                                    beam_size=3, length_norm=0.7)
    short, _ = beam_search(model.step, state, vocab.start_id, vocab.end_id, 6, beam_size=3,
                           length_norm=0.0)
    assert short[:, 0].tolist() == [vocab.end_id] * 3 and want[:, 5].tolist() == [vocab.stoi["red"]] * 3
    out = str(tmp_path / "beam")
    assert export_bundle(checkpoint, out, beam=3, max_len=6)["beam"]["length_norm"] == 0.7
    tokens, scores = _session(os.path.join(out, "caption_beam.onnx")).run(None, {"image": images})
    np.testing.assert_array_equal(tokens, want.numpy())
    np.testing.assert_allclose(scores, want_scores.numpy(), atol=1e-4)
