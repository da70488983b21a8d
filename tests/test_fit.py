"""``python -m train fit``: learning, checkpoints, resume, two-step mode, bad
input (real COCO/Flickr8k files, corrupt JPEGs), and DDP with 2 CPU processes."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from train.__main__ import main
from train.data.synth import write_dataset
from train.model.checkpoint import load_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
TINY = ["--weights", "none", "--image-size", "64", "--hidden", "32", "--embed", "16",
        "--batch-size", "8", "--max-len", "12", "--min-count", "1", "--no-progress"]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """50 synthetic images at 64 px (40 train, 5 val, 5 test)."""
    out = str(tmp_path_factory.mktemp("shapes"))
    return write_dataset(out, 50, size=64, seed=0)


def _log(run):
    with open(os.path.join(run, "log.jsonl")) as handle:
        return [json.loads(line) for line in handle]


def _cli(*args, **kwargs):
    """Run ``python -m train ARGS`` (or another module via ``module=``) in a subprocess."""
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    command = [sys.executable] + kwargs.get("prefix", ["-m", "train"]) + list(args)
    return subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=300)


def _one_line_error(result, text):
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and text in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_loss_decreases_checkpoints_and_resume(shapes, tmp_path, capsys):
    run = str(tmp_path / "run")
    args = ["fit", "--data", shapes, "--out", run, "--lr", "3e-3"] + TINY
    assert main(args + ["--epochs", "3"]) == 0
    log = _log(run)
    assert [e["epoch"] for e in log] == [1, 2, 3]
    losses = [e["train_loss"] for e in log]
    assert losses[0] > losses[1] > losses[2] and losses[2] < losses[0] * 0.95, losses
    assert set(log[0]["val"]) >= {"Bleu_4", "CIDEr"} and log[0]["val_images"] == 5
    model, vocab, payload = load_checkpoint(os.path.join(run, "last.pt"))
    assert payload["train"]["epoch"] == 3 and "optimizer" in payload
    assert model.config.image_size == 64 and model.config.hidden == 32
    assert "circle" in vocab.stoi
    best = [e for e in log if e["best"]][-1]
    assert load_checkpoint(os.path.join(run, "best.pt"))[2]["train"]["epoch"] == best["epoch"]
    # resume from last.pt: only the fourth epoch runs
    assert main(args + ["--epochs", "4"]) == 0
    assert "resuming from" in capsys.readouterr().out
    assert [e["epoch"] for e in _log(run)] == [1, 2, 3, 4]


def test_two_step_training_caches_features(shapes, tmp_path):
    run = str(tmp_path / "run")
    args = ["fit", "--data", shapes, "--out", run, "--freeze-encoder", "--epochs", "2",
            "--finetune-epochs", "1", "--rnn", "lstm"] + TINY
    assert main(args) == 0
    assert [e["phase"] for e in _log(run)] == ["decoder", "decoder", "finetune"]
    for name in ("features-train.npy", "features-train.json", "features-val.npy", "features-val.json"):
        assert os.path.isfile(os.path.join(run, name)), name
    model = load_checkpoint(os.path.join(run, "last.pt"))[0]
    assert model.config.rnn == "lstm"


def test_minutes_budget_stops_early(shapes, tmp_path, capsys):
    run = str(tmp_path / "run")
    quick = TINY + ["--val-images", "0"]
    assert main(["fit", "--data", shapes, "--out", run, "--epochs", "1"] + quick) == 0
    assert main(["fit", "--data", shapes, "--out", run, "--epochs", "1000",  # resumed
                 "--minutes", "0.02"] + quick) == 0
    assert "time budget of 0.0 min reached" in capsys.readouterr().out
    epochs = [e["epoch"] for e in _log(run)]
    assert 1 <= len(epochs) < 1000 and epochs == list(range(1, len(epochs) + 1))
    assert load_checkpoint(os.path.join(run, "last.pt"))[2]["train"]["epoch"] == epochs[-1]


def test_coco_with_most_images_missing(real_data, tmp_path):
    result = _cli("fit", "--data", os.path.join(real_data, "coco", "captions_val2017.json"),
                  "--images-dir", os.path.join(real_data, "coco", "val2017"),
                  "--out", str(tmp_path / "run"), "--epochs", "1", *TINY)
    assert result.returncode == 0, result.stderr
    assert "60 images missing" in result.stdout
    train_line = [l for l in result.stdout.splitlines() if l.startswith("train ")][0]
    n_train, n_val = int(train_line.split()[1]), int(train_line.split()[4])
    assert n_train + n_val == 4 and n_val > 0


@pytest.fixture
def with_corrupt(real_data, tmp_path):
    """A Karpathy file over 10 real Flickr8k JPEGs (1 val) and 2 corrupt ones (train)."""
    images = tmp_path / "images"
    images.mkdir()
    real = sorted(os.listdir(os.path.join(real_data, "flickr8k", "images")))[:10]
    entries = []
    for name in real:
        shutil.copy(os.path.join(real_data, "flickr8k", "images", name), str(images / name))
        entries.append((name, "a dog runs on the grass"))
    for name in ("truncated.jpg", "garbage.jpg"):
        shutil.copy(os.path.join(FIXTURES, "corrupt", name), str(images / name))
        entries.append((name, "a broken image"))
    data = {"images": [{"filename": n, "split": "val" if i == 0 else "train",
                        "sentences": [{"raw": c}]} for i, (n, c) in enumerate(entries)]}
    (tmp_path / "dataset.json").write_text(json.dumps(data))
    return str(tmp_path / "dataset.json")


def test_corrupt_images_are_skipped_and_counted(with_corrupt, tmp_path):
    result = _cli("fit", "--data", with_corrupt, "--out", str(tmp_path / "run"), "--epochs", "1", *TINY)
    assert result.returncode == 0, result.stderr
    line = [l for l in result.stdout.splitlines() if "2 unreadable images skipped" in l][0]
    assert "truncated.jpg" in line and "garbage.jpg" in line  # named, not only counted
    assert "train 9 images, val 1 images" in result.stdout


def test_corrupt_images_skipped_when_streaming_with_augmentation(with_corrupt, tmp_path, capsys):
    run = str(tmp_path / "run")
    assert main(["fit", "--data", with_corrupt, "--out", run, "--epochs", "1", "--augment",
                 "--workers", "0"] + TINY + ["--batch-size", "4"]) == 0
    line = [l for l in capsys.readouterr().out.splitlines() if "skipped this epoch" in l][0]
    assert line.startswith("2 unreadable images skipped this epoch")
    assert "truncated.jpg" in line and "garbage.jpg" in line
    assert _log(run)[0]["images"] == 9 and _log(run)[0]["skipped"] == 2


def test_random_crop_keeps_most_of_the_image():
    import numpy as np
    from train.data.batches import random_crop
    image = np.zeros((100, 80, 3), np.uint8)
    shapes = set(random_crop(image).shape for _ in range(20))
    assert all(90 <= h <= 100 and 72 <= w <= 80 for h, w, _ in shapes) and len(shapes) > 1


def test_bad_input_is_one_line(real_data, tmp_path):
    empty = tmp_path / "captions.txt"
    empty.write_text("")
    _one_line_error(_cli("fit", "--data", str(empty), "--out", str(tmp_path / "a"), *TINY),
                    "caption file is empty")
    odd = tmp_path / "notes.txt"
    odd.write_text("some notes\nnot captions at all\n")
    _one_line_error(_cli("fit", "--data", str(odd), "--out", str(tmp_path / "b"), *TINY),
                    "cannot tell the caption format")
    token = os.path.join(real_data, "flickr8k", "Flickr8k.token.txt")
    result = _cli("fit", "--data", token, "--out", str(tmp_path / "c"), *TINY)
    _one_line_error(result, "no usable images in the train split")
    assert "151 listed" in result.stderr


def test_torchrun_two_processes(shapes, tmp_path):
    run = str(tmp_path / "run")
    result = _cli("--standalone", "--nproc_per_node", "2", "-m", "train", "fit", "--data", shapes,
                  "--out", run, "--epochs", "2", *TINY,
                  prefix=["-m", "torch.distributed.run"])
    assert result.returncode == 0, result.stderr[-3000:]
    log = _log(run)
    assert [e["epoch"] for e in log] == [1, 2]   # rank 0 alone writes the log
    assert log[0]["images"] == 40                 # both ranks' shares of the 40 images
    model, _, payload = load_checkpoint(os.path.join(run, "last.pt"))
    assert payload["train"]["epoch"] == 2
    # every rank digests its own parameters at the end; they agree, and equal rank 0's saved ones
    from train.distributed import parameters_digest
    agree = [l for l in result.stdout.splitlines() if l.startswith("weights identical on 2 ranks")]
    assert agree == ["weights identical on 2 ranks (sha1 %s)" % parameters_digest(model)], \
        result.stdout[-2000:]


def test_max_len_auto_is_the_longest_training_caption(shapes, capsys):
    """The default ``--max-len`` (auto) unrolls one step per word of the longest
    training caption plus ``<end>``, at most 20; a number is kept as given."""
    import argparse

    from edge.vocab import clean_caption
    from train.data.readers import by_split, load_dataset
    from train.fit import add_arguments
    from train.fit_checks import resolve_max_len

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--data", shapes, "--out", "x"])
    train = by_split(load_dataset(shapes))["train"]
    longest = max(len(clean_caption(c)) for r in train for c in r.captions)
    assert longest + 1 < 20
    assert resolve_max_len(args, train) == longest + 1 == args.max_len
    assert "%d decoder steps" % (longest + 1) in capsys.readouterr().out
    args = parser.parse_args(["--data", shapes, "--out", "x", "--max-len", "auto"])
    train[0].captions.append(" ".join(["word"] * 30))
    assert resolve_max_len(args, train) == 20
    args = parser.parse_args(["--data", shapes, "--out", "x", "--max-len", "7"])
    assert resolve_max_len(args, train) == 7
