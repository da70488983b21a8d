"""``export verify`` and the fp16/int8 variants on a tiny model and real images."""
import json
import os
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from edge.bundle import load_bundle  # noqa: E402
from edge.vocab import SPECIALS, Vocabulary  # noqa: E402
from export.__main__ import main as export_main  # noqa: E402
from export.floor import floor_problems  # noqa: E402
from export.onnx_export import export_bundle  # noqa: E402
from export.verify import compare  # noqa: E402
from tests.conftest import TINY_WORDS  # noqa: E402
from tests.test_export import needs_py36, run_on_py36  # noqa: E402


@pytest.fixture(scope="module")
def images_dir(real_data):
    return os.path.join(real_data, "flickr8k", "images")


@pytest.fixture(scope="module")
def full_bundle(tiny_checkpoint, images_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("full") / "b")
    export_bundle(tiny_checkpoint, out, precisions=("fp32", "fp16", "int8"),
                  calib_images=images_dir)
    return out


def test_variants_recorded_and_meet_floor(full_bundle):
    bundle = load_bundle(full_bundle)
    for graph in ("caption", "encoder", "decoder_step"):
        assert bundle.precisions(graph) == ["fp32", "fp16", "int8"]
        fp32 = bundle.graph_entry(graph, "fp32")
        for precision in ("fp16", "int8"):
            entry = bundle.graph_entry(graph, precision)
            # the boundary is unchanged: same names, dtypes, shapes as fp32
            assert entry["inputs"] == fp32["inputs"] and entry["outputs"] == fp32["outputs"]
            model = onnx.load(bundle.graph_path(graph, precision))
            # int8 (QDQ) graphs are ONNX Runtime's: TensorRT builds INT8 from fp32
            assert floor_problems(model, tensorrt=precision != "int8") == []
    fp16_ops = set(n.op_type for n in onnx.load(bundle.graph_path("encoder", "fp16")).graph.node)
    assert any(t.data_type == onnx.TensorProto.FLOAT16
               for t in onnx.load(bundle.graph_path("encoder", "fp16")).graph.initializer)
    assert "Conv" in fp16_ops
    int8_ops = set(n.op_type for n in onnx.load(bundle.graph_path("caption", "int8")).graph.node)
    assert {"QuantizeLinear", "DequantizeLinear"} <= int8_ops


def test_verify_cli_reports_every_precision(full_bundle, tiny_checkpoint, images_dir, capsys):
    code = export_main(["verify", "--checkpoint", tiny_checkpoint, "--bundle", full_bundle,
                        "--images", images_dir, "--limit", "12"])
    lines = capsys.readouterr().out.strip().splitlines()
    report = json.loads(lines[-1])
    assert code == 0
    assert sorted(report) == ["fp16", "fp32", "int8"]
    assert report["fp32"]["caption_match"] == 1.0 and report["fp32"]["token_match"] == 1.0
    assert report["fp32"]["max_abs_logit_diff"] < 1e-4
    assert report["fp16"]["max_abs_logit_diff"] < 0.05
    for entry in report.values():
        assert set(entry) >= {"caption_match", "token_match", "max_abs_logit_diff"}


def test_verify_fails_for_another_checkpoint(full_bundle, tmp_path, images_dir, capsys):
    """A bundle checked against a different model must exit non-zero."""
    from train.model.build import build_captioner
    from train.model.captioner import ModelConfig
    from train.model.checkpoint import save_checkpoint
    torch.manual_seed(123)
    vocab = Vocabulary(list(SPECIALS) + TINY_WORDS)
    config = ModelConfig(vocab_size=len(vocab), image_size=64, embed=16, hidden=32, max_len=8)
    other = str(tmp_path / "other.pt")
    save_checkpoint(other, build_captioner(config).eval(), vocab)
    code = export_main(["verify", "--checkpoint", other, "--bundle", full_bundle,
                        "--images", images_dir, "--limit", "4", "--precision", "fp32"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["fp32"]["caption_match"] < 0.99
    assert code == 1


def test_min_match_floors_every_precision(full_bundle, tiny_checkpoint, images_dir, tmp_path,
                                          capsys):
    """An int8 graph that disagrees with PyTorch passes the defaults (int8 has no
    floor) and fails a given ``--min-match int8=...``; bad floors are one line."""
    from edge.bundle import write_meta
    copy = str(tmp_path / "b")
    shutil.copytree(full_bundle, copy)
    torch.manual_seed(7)  # another model's caption graph in the int8 slot
    from train.model.build import build_captioner
    from train.model.captioner import ModelConfig
    from train.model.checkpoint import save_checkpoint
    vocab = Vocabulary(list(SPECIALS) + TINY_WORDS)
    config = ModelConfig(vocab_size=len(vocab), image_size=64, embed=16, hidden=32, max_len=8)
    other = str(tmp_path / "other.pt")
    save_checkpoint(other, build_captioner(config).eval(), vocab)
    export_bundle(other, str(tmp_path / "o"))
    shutil.copy(str(tmp_path / "o" / "caption.onnx"), os.path.join(copy, "caption.int8.onnx"))
    write_meta(copy, load_bundle(copy, verify=False).meta)
    base = ["verify", "--checkpoint", tiny_checkpoint, "--bundle", copy, "--images", images_dir]
    assert export_main(base) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out.strip().splitlines()[-1])
    assert report["fp32"]["caption_match"] == 1.0 and report["int8"]["caption_match"] < 1.0
    assert export_main(base + ["--min-match", "int8=1", "--min-match", "fp16=0.5"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "int8 caption_match" in err[0] and "below its floor 1.00" in err[0]
    assert export_main(base + ["--min-match", "int8=0"]) == 0
    capsys.readouterr()
    for bad in ("int8", "int8=2", "fp9=0.5", "int8=x"):
        assert export_main(base + ["--min-match", bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--min-match" in err[0], err


def test_verify_clear_errors(full_bundle, tiny_checkpoint, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert export_main(["verify", "--checkpoint", tiny_checkpoint, "--bundle", full_bundle,
                        "--images", str(empty)]) == 2
    assert "no images found" in capsys.readouterr().err
    assert export_main(["verify", "--checkpoint", tiny_checkpoint, "--bundle",
                        str(tmp_path / "nobundle"), "--images", str(empty)]) == 2


def test_compare_figures():
    vocab = Vocabulary(list(SPECIALS) + TINY_WORDS)
    ref = np.array([[4, 5, 2, 0], [4, 6, 7, 2]], dtype=np.int32)
    got = np.array([[4, 5, 2, 0], [4, 8, 7, 2]], dtype=np.int32)
    ref_s = np.array([[-1.0, -2.0, -0.5, 0.0], [-1.0, -2.0, -3.0, -0.1]], dtype=np.float32)
    got_s = ref_s + np.array([[0.01, 0.0, 0.0, 0.0], [0.0, 0.02, 9.0, 9.0]], dtype=np.float32)
    figures = compare(ref, ref_s, got, got_s, vocab)
    assert figures["caption_match"] == 0.5
    assert figures["token_match"] == 7 / 8.0
    # the diverged prefix (steps 2, 3 of image 1) is not compared
    assert figures["max_abs_logit_diff"] == pytest.approx(0.02, abs=1e-6)


@needs_py36
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_variants_run_on_onnxruntime_1_10(full_bundle, tmp_path, precision):
    images = np.random.RandomState(5).randint(0, 256, (3, 64, 64, 3)).astype(np.uint8)
    path = load_bundle(full_bundle).graph_path("caption", precision)
    old = run_on_py36(path, images, tmp_path)
    now = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(
        None, {"image": images})[0]
    assert old.shape == now.shape == (3, 8) and old.dtype == np.int32
    np.testing.assert_array_equal(old, now)
