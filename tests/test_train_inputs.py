"""Training inputs at scale: the float16 feature cache on disk (built by DataLoader
workers, reused, rebuilt when damaged, shared by DDP ranks), ``train prepare``'s
image file read by ``train fit --prepared``, and the training benchmark's report."""
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edge.errors import NanocapError  # noqa: E402
from train.__main__ import main  # noqa: E402
from train.data import feature_cache  # noqa: E402
from train.data.batches import ImageSource, read_resized  # noqa: E402
from train.data.readers import by_split, load_dataset  # noqa: E402
from train.data.synth import write_dataset  # noqa: E402
from train.model.build import build_captioner  # noqa: E402
from train.model.captioner import ModelConfig  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--weights", "none", "--image-size", "64", "--hidden", "32", "--embed", "16",
        "--batch-size", "8", "--max-len", "12", "--min-count", "1", "--no-progress",
        "--val-images", "4", "--epochs", "1"]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return write_dataset(str(tmp_path_factory.mktemp("shapes")), 24, size=64, seed=1, ext="jpg")


class PidSource(ImageSource):
    """An ImageSource noting which process read each image (files in ``pid_dir``)."""

    def __init__(self, records, size, pid_dir):
        super().__init__(records, size)
        self.pid_dir = pid_dir

    def get(self, index):
        open(os.path.join(self.pid_dir, str(os.getpid())), "w").close()
        return super().get(index)


class NoEncoder(torch.nn.Module):
    """Stands where a model would if the cache were (wrongly) rebuilt."""

    def encode(self, images):
        raise AssertionError("the cache was rebuilt instead of reused")


def _model(decoder):
    torch.manual_seed(0)
    return build_captioner(ModelConfig(vocab_size=20, image_size=64, hidden=16, embed=8, max_len=8,
                                 decoder=decoder)).eval()


@pytest.mark.parametrize("decoder", ["fc", "att"])
def test_feature_cache_is_float16_on_disk_built_by_workers_and_reused(decoder, shapes, tmp_path):
    records = by_split(load_dataset(shapes))["train"][:10]
    broken = str(tmp_path / "broken.jpg")
    with open(broken, "wb") as handle:
        handle.write(b"not a jpeg")  # unreadable: listed in the metadata, left out of the features
    records[3] = records[3]._replace(path=broken)
    pid_dir = str(tmp_path / "pids")
    os.makedirs(pid_dir)
    model, folder = _model(decoder), str(tmp_path / "run")
    os.makedirs(folder)
    source = PidSource(records, 64, pid_dir)
    features, keep = feature_cache.cached_features(model, source, folder, "train", "k1", "cpu", 2)
    assert str(os.getpid()) not in os.listdir(pid_dir) and os.listdir(pid_dir)  # workers decoded
    assert keep == [i for i in range(10) if i != 3] and len(features) == 9
    on_disk = np.load(os.path.join(folder, "features-train.npy"), mmap_mode="r")
    assert on_disk.dtype == np.float16
    assert on_disk.ndim == (3 if decoder == "att" else 2)  # att: regions [N, R, F]
    images = torch.from_numpy(np.stack([read_resized(records[i].path, 64) for i in keep]))
    with torch.no_grad():
        fresh = model.encode(images).float()
    got = features[0:len(features)]
    assert got.dtype == torch.float32 and got.shape == fresh.shape
    scale = fresh.abs().max()
    assert ((got - fresh).abs().max() / scale) < 2e-3  # float16's precision, not more
    assert ((fresh[1:] - fresh[:-1]).abs().max() / scale) > 2e-2  # images tell apart
    assert torch.equal(features[4], got[4])
    stamp = os.path.getmtime(os.path.join(folder, "features-train.npy"))
    again, keep2 = feature_cache.cached_features(NoEncoder(), source, folder, "train", "k1", "cpu", 0)
    assert keep2 == keep and torch.equal(again[0:9], got)
    assert os.path.getmtime(os.path.join(folder, "features-train.npy")) == stamp


def test_a_cut_short_cache_is_named_and_rebuilt(shapes, tmp_path):
    records = by_split(load_dataset(shapes))["train"][:6]
    model, folder = _model("fc"), str(tmp_path)
    source = ImageSource(records, 64)
    first, _ = feature_cache.cached_features(model, source, folder, "train", "k", "cpu", 0)
    path = os.path.join(folder, "features-train.npy")
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) - 100)
    lines = []
    rebuilt, _ = feature_cache.cached_features(model, source, folder, "train", "k", "cpu", 0,
                                               log=lines.append)
    assert len(lines) == 1 and path in lines[0] and "cut short" in lines[0] and "rebuilding" in lines[0]
    assert torch.equal(rebuilt[0:6], first[0:6])
    # another key (model or image list changed): rebuilt, reason given
    feature_cache.cached_features(model, source, folder, "train", "k2", "cpu", 0, log=lines.append)
    assert "another model" in lines[-1]
    # a rank that may not build fails naming the file when it finds no usable cache
    os.remove(os.path.join(folder, "features-train.json"))
    with pytest.raises(NanocapError, match="features-train.npy is not usable"):
        feature_cache.cached_features(model, source, folder, "train", "k2", "cpu", 0, build_here=False)


def test_prepare_round_trip_and_fit_reads_the_prepared_file(shapes, tmp_path, capsys):
    shapes = os.path.join(shutil.copytree(os.path.dirname(shapes), str(tmp_path / "own")),
                          "dataset.json")  # its images get damaged below
    prepared = str(tmp_path / "prepared")
    records = [r for r in load_dataset(shapes) if r.split in ("train", "val")]
    with open(records[5].path, "wb") as handle:
        handle.write(b"not a jpeg")  # unreadable when prepared: named, left out
    assert main(["prepare", shapes, "--image-size", "64", "--out", prepared, "--workers", "2",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "1 unreadable" in out and os.path.basename(records[5].path) in out
    array = np.load(os.path.join(prepared, "images.npy"), mmap_mode="r")
    index = json.load(open(os.path.join(prepared, "index.json")))
    assert array.dtype == np.uint8 and array.shape == (len(records), 64, 64, 3)
    assert index["bad"] == [5] and index["image_size"] == 64
    for row, record in enumerate(records):
        if row != 5:  # the very pixels training's own resize gives
            assert np.array_equal(array[row], read_resized(record.path, 64)), record.path
    for record in records:  # from now on only the prepared file holds readable images
        with open(record.path, "wb") as handle:
            handle.write(b"gone")
    run = str(tmp_path / "run")
    assert main(["fit", "--data", shapes, "--out", run, "--prepared", prepared] + TINY) == 0
    out = capsys.readouterr().out
    train_count = len([r for r in records if r.split == "train"]) - (records[5].split == "train")
    assert "train %d images" % train_count in out
    assert "1 unreadable images skipped" in out  # the one bad when prepared, named
    log = [json.loads(line) for line in open(os.path.join(run, "log.jsonl"))]
    assert log[0]["skipped"] == 0 and log[0]["images"] == train_count


def test_prepared_at_another_size_is_refused(shapes, tmp_path, capsys):
    prepared = str(tmp_path / "p")
    assert main(["prepare", shapes, "--image-size", "48", "--out", prepared, "--workers", "0",
                 "--no-progress", "--splits", "train"]) == 0
    capsys.readouterr()
    assert main(["fit", "--data", shapes, "--out", str(tmp_path / "r"), "--prepared", prepared]
                + TINY) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds 48 px images, the model takes 64 px" in err[0], err
    assert main(["fit", "--data", shapes, "--out", str(tmp_path / "r2"), "--prepared",
                 str(tmp_path / "absent")] + TINY) == 2
    assert "cannot read index.json" in capsys.readouterr().err


def test_two_ranks_share_one_feature_cache(shapes, tmp_path):
    run = str(tmp_path / "run")
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "train", "fit", "--data", shapes, "--out", run, "--freeze-encoder", "--workers", "1"]
        + TINY, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        universal_newlines=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(n for n in os.listdir(run) if n.startswith("features-")) == [
        "features-train.json", "features-train.npy", "features-val.json", "features-val.npy"]
    log = [json.loads(line) for line in open(os.path.join(run, "log.jsonl"))]
    assert log[0]["phase"] == "decoder" and log[0]["images"] >= 16  # both ranks' shares


def test_benchmark_reports_every_phase_and_what_bounds_it(shapes, tmp_path):
    out = str(tmp_path / "bench.json")
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "benchmark_train.py"), "--data", shapes,
         "--device", "cpu", "--decoders", "fc", "--workers", "0,1", "--batches", "1",
         "--batch-size", "4", "--max-images", "12", "--image-size", "64", "--hidden", "16",
         "--json", out], cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.load(open(out))
    assert json.loads(result.stdout.strip().splitlines()[-1]) == report
    assert {(r["source"], r["workers"]) for r in report["input"]} == {
        (s, w) for s in ("jpeg", "prepared", "features-fc") for w in (0, 1)}
    assert [r["phase"] for r in report["step"]] == ["decoder", "joint", "scst"]
    assert [(r["phase"], r["source"]) for r in report["together"]] == [
        ("decoder", "features"), ("decoder", "jpeg"), ("joint", "jpeg"), ("joint", "prepared"),
        ("scst", "features")]
    for row in report["input"] + report["step"] + report["together"]:
        assert row["images_per_s"] > 0 and row["peak_rss_mb"] > 50
        assert row["peak_rss_with_workers_mb"] >= row["peak_rss_mb"]
    for row in report["together"]:
        assert re.match(r"(input|step)-bound: the step waits \d+% of the time$", row["bound"])
        assert row["bound"].startswith("input" if row["wait_share"] >= 0.1 else "step")
    assert {"prepared_vs_jpeg_input", "features_fc_vs_jpeg_input",
            "decoder_fc_features_vs_jpeg_together"} <= set(report["speedups"])
    assert len(report["load_average"]) == 3 and report["device"] == "cpu"
    assert "bound=" in result.stdout and "speedup prepared_vs_jpeg_input" in result.stdout


def test_gpu_check_parses_and_fails_loudly_without_cuda(tmp_path):
    script = os.path.join(ROOT, "scripts", "gpu_check.sh")
    assert subprocess.run(["bash", "-n", script]).returncode == 0
    if torch.cuda.is_available():
        pytest.skip("CUDA present: run scripts/gpu_check.sh itself")
    env = dict(os.environ, PYTHON=sys.executable)
    result = subprocess.run(["bash", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, timeout=120, env=env)
    assert result.returncode == 1
    assert "FAILED: no usable CUDA device" in result.stderr and "sees no CUDA device" in result.stderr
    no_torch = tmp_path / "python-without-site-packages"
    no_torch.write_text('#!/bin/sh\nexec "%s" -S "$@"\n' % sys.executable)
    no_torch.chmod(0o755)
    env["PYTHON"] = str(no_torch)
    result = subprocess.run(["bash", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, timeout=120, env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr     # a Python without torch
    assert "has no torch" in result.stderr and "FAILED: no usable CUDA device" in result.stderr
