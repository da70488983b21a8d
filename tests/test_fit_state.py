"""What ``train fit`` keeps between runs, compared tensor by tensor: a resumed
run ends exactly where an uninterrupted one does (weights, optimizer state,
best score); an ``--out`` holding another model config or dataset is refused
(``--restart`` starts anew); the feature cache holds the encoder's output."""
import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from train import epochs as epochs_module  # noqa: E402
from train.__main__ import main  # noqa: E402
from train.data import batches as tdata  # noqa: E402
from train.data.readers import by_split, load_dataset  # noqa: E402
from train.data.synth import write_dataset  # noqa: E402
from train.model.checkpoint import load_checkpoint, read_checkpoint  # noqa: E402

TINY = ["--weights", "none", "--image-size", "64", "--hidden", "32", "--embed", "16",
        "--batch-size", "8", "--max-len", "12", "--min-count", "1", "--no-progress"]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """40 synthetic images at 64 px (32 train, 4 val, 4 test)."""
    return write_dataset(str(tmp_path_factory.mktemp("shapes")), 40, size=64, seed=0)


def assert_same_tensors(a, b, where):
    """Nested dicts/lists of tensors and numbers: equal, bit for bit."""
    if isinstance(a, torch.Tensor):
        if not (isinstance(b, torch.Tensor) and torch.equal(a, b)):
            pytest.fail("%s differs" % where)
    elif isinstance(a, dict):
        assert sorted(a) == sorted(b), where
        for key in a:
            assert_same_tensors(a[key], b[key], "%s.%s" % (where, key))
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tensors(x, y, "%s[%d]" % (where, i))
    elif a != b:
        pytest.fail("%s differs: %r != %r" % (where, a, b))


def test_resume_continues_exactly(shapes, tmp_path, monkeypatch, capsys):
    args = ["fit", "--data", shapes, "--epochs", "2", "--lr", "3e-3"] + TINY
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    assert main(args + ["--out", straight]) == 0

    real_end_epoch = epochs_module.end_epoch

    def end_epoch_then_ctrl_c(*a, **k):  # the user interrupts right after epoch 1's checkpoint
        real_end_epoch(*a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(epochs_module, "end_epoch", end_epoch_then_ctrl_c)
    assert main(args + ["--out", resumed]) == 130
    monkeypatch.undo()
    assert read_checkpoint(os.path.join(resumed, "last.pt"))["train"]["epoch"] == 1
    assert main(args + ["--out", resumed]) == 0
    assert "resuming from" in capsys.readouterr().out

    for name in ("last.pt", "best.pt"):
        a = read_checkpoint(os.path.join(straight, name))
        b = read_checkpoint(os.path.join(resumed, name))
        assert_same_tensors(a["model"], b["model"], name + ".model")
        assert_same_tensors(a["train"], b["train"], name + ".train")  # best_score, steps...
    a, b = (read_checkpoint(os.path.join(r, "last.pt")) for r in (straight, resumed))
    assert a["optimizer"]["state"], "Adam moments are saved"
    assert_same_tensors(a["optimizer"], b["optimizer"], "optimizer")
    assert a["train"]["best_score"] is not None and a["train"]["epoch"] == 2
    with open(os.path.join(resumed, "log.jsonl")) as handle:
        assert [json.loads(line)["epoch"] for line in handle] == [1, 2]


def test_other_config_or_dataset_is_refused_unless_restart(shapes, tmp_path, capsys):
    run = str(tmp_path / "run")
    base = ["fit", "--data", shapes, "--out", run, "--epochs", "1"]
    assert main(base + TINY) == 0
    capsys.readouterr()
    wider = [v if v != "32" else "48" for v in TINY]  # --hidden 48
    assert main(base + wider) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--hidden 32, not 48" in err[0] and "--restart" in err[0], err
    assert main(base + TINY + ["--decoder", "att"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--decoder fc, not att" in err[0], err
    other = write_dataset(str(tmp_path / "other"), 40, size=64, seed=1)
    assert main(["fit", "--data", other, "--out", run, "--epochs", "1"] + TINY) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another dataset" in err[0] and other in err[0], err
    assert load_checkpoint(os.path.join(run, "last.pt"))[0].config.hidden == 32  # untouched
    assert main(base + wider + ["--restart"]) == 0
    assert "resuming" not in capsys.readouterr().out
    assert load_checkpoint(os.path.join(run, "last.pt"))[0].config.hidden == 48
    with open(os.path.join(run, "log.jsonl")) as handle:
        assert len(handle.readlines()) == 1  # the old run's log was replaced


def test_feature_cache_holds_the_encoder_output(shapes, tmp_path):
    run = str(tmp_path / "run")
    assert main(["fit", "--data", shapes, "--out", run, "--freeze-encoder", "--epochs", "1"]
                + TINY) == 0
    model = load_checkpoint(os.path.join(run, "last.pt"))[0]  # encoder frozen: as when cached
    records = by_split(load_dataset(shapes))["train"]
    source, problems = tdata.load_images(records, 64)
    assert not problems
    with torch.no_grad():
        expected = model.encode(torch.from_numpy(np.stack([source.get(i) for i in range(len(source))])))
    cache = np.load(os.path.join(run, "features-train.npy"), mmap_mode="r")
    assert cache.dtype == np.float16 and cache.shape == tuple(expected.shape)
    with open(os.path.join(run, "features-train.json")) as handle:
        exponent = json.load(handle)["exponent"]  # stored as float16 * 2**exponent
    scale = expected.abs().max()
    np.testing.assert_allclose(np.ldexp(cache.astype(np.float32), exponent) / scale, expected.numpy() / scale,
                               rtol=0, atol=2e-3)  # float16: 11 significant bits
    # the check can tell images apart: their features differ far beyond the tolerance
    assert (expected[1:] - expected[:-1]).abs().max() / scale > 1e-2


def test_without_validation_best_is_the_last_epoch(shapes, tmp_path):
    """``--val-images 0``: no score to choose by, so ``best.pt`` is the last epoch's
    weights (not the lowest training loss: SCST's is near 0 whatever it learnt)."""
    run = str(tmp_path / "run")
    assert main(["fit", "--data", shapes, "--out", run, "--epochs", "1", "--val-images", "0",
                 "--scst-epochs", "1", "--scst-samples", "2"] + TINY) == 0
    with open(os.path.join(run, "log.jsonl")) as handle:
        log = [json.loads(line) for line in handle]
    assert [(e["phase"], e["best"], e["val"]) for e in log] == [("joint", True, {}), ("scst", True, {})]
    best, last = (read_checkpoint(os.path.join(run, n)) for n in ("best.pt", "last.pt"))
    assert best["train"]["epoch"] == 2 and best["train"]["best_score"] is None
    assert_same_tensors(best["model"], last["model"], "best.pt")
