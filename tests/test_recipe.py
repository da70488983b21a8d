"""``python -m train recipe``: the whole recipe at the tiny size, offline, against a
real local HTTP server serving archives in COCO's and Karpathy's original layouts
(made from the real fixture photos and captions), interrupted and resumed."""
import contextlib
import json
import os
import signal
import subprocess
import sys

from conftest import ROOT
from range_server import RangeServer
from recipe_archives import make_coco_archives, make_flickr8k_archive, write_checksums
from train.__main__ import main as train_main
from train.recipe.plan import PHASES


def recipe(*args):
    return [sys.executable, "-m", "train", "recipe"] + [str(a) for a in args]


def log_phases(run):
    with open(os.path.join(str(run), "train", "log.jsonl")) as handle:
        return [json.loads(line)["phase"] for line in handle]


@contextlib.contextmanager
def one_torch_thread():
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def test_tiny_coco_recipe_runs_every_phase_and_resumes_where_it_was_interrupted(tmp_path, capsys):
    served, root, run = str(tmp_path / "served"), tmp_path / "data", tmp_path / "run"
    sums = write_checksums(str(tmp_path / "SHA256SUMS"), make_coco_archives(served))
    with RangeServer(served) as server:
        args = recipe("coco", "--root", root, "--out", run, "--tiny", "--base-url", server.url,
                      "--checksums", sums, "--no-progress")
        env = dict(os.environ, OMP_NUM_THREADS="1")  # 2 busy cores: no thread contention
        first = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 universal_newlines=True, env=env)
        seen = []
        for line in first.stdout:  # Ctrl-C as soon as the fine-tuning phase starts
            seen.append(line)
            if line.startswith("[5/9] finetune:"):
                first.send_signal(signal.SIGINT)
        first.wait(timeout=120)
        err = first.stderr.read()
        assert first.returncode == 130, "".join(seen) + err
        assert "interrupted in phase finetune; re-run the same command to resume" in err
        state = json.load(open(str(run / "recipe.json")))
        assert [p for p in PHASES if state["phases"].get(p, {}).get("done")] == list(PHASES[:4])
        finished_first = dict((p, state["phases"][p]) for p in PHASES[:4])
        assert log_phases(run) == ["decoder"]
        downloads = len(server.requests)
        assert downloads == 4

        capsys.readouterr()
        with one_torch_thread():  # the same command again, in this process
            assert train_main(args[3:]) == 0
        assert len(server.requests) == downloads  # nothing downloaded again
    out = capsys.readouterr().out
    for number, phase in enumerate(PHASES[:4], 1):
        assert "[%d/9] %s: done earlier, skipped" % (number, phase) in out
    assert "resuming from %s" % (run / "train" / "last.pt") in out  # fit's own resume
    assert log_phases(run) == ["decoder", "finetune", "scst"]  # no epoch trained twice
    state = json.load(open(str(run / "recipe.json")))
    assert all(state["phases"][p]["done"] for p in PHASES)
    assert dict((p, state["phases"][p]) for p in PHASES[:4]) == finished_first  # not run again
    assert state["paths"] == {"data": str(root / "karpathy" / "dataset_coco.json"),
                              "images_dir": str(root / "coco")}
    # the layout: what the readers read, and only the caption annotations
    assert sorted(os.listdir(str(root / "coco"))) == ["annotations", "train2014", "val2014"]
    assert sorted(os.listdir(str(root / "coco" / "annotations"))) == [
        "captions_train2014.json", "captions_val2014.json"]
    assert "images present: test 2/2, train 10/10, val 2/2" in "".join(seen)
    scores = json.load(open(str(run / "test_scores.json")))
    assert set(scores) >= {"Bleu_4", "METEOR", "ROUGE_L", "CIDEr"}
    meta = json.load(open(str(run / "bundle" / "nanocap.json")))
    assert meta["scores"]["fp32"]["split"] == "test" and "CIDEr" in meta["scores"]["fp32"]
    assert "fp32  caption_match 1.0000" in out  # verify ran on the test images
    assert "recipe done" in out


def test_dry_run_prints_every_phase_and_command_without_doing_anything(tmp_path, capsys):
    assert train_main(["recipe", "flickr30k", "--root", str(tmp_path / "d"), "--out",
                       str(tmp_path / "r"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    for number, phase in enumerate(PHASES, 1):
        assert "[%d/9] %s: " % (number, phase) in out
    assert "--weights imagenet" in out and "--scst-epochs 5" in out and "--finetune-epochs 3" in out
    assert "estimate" in out and "flickr30k images you place in" in out
    assert not (tmp_path / "d").exists() and not (tmp_path / "r").exists()


def test_flickr8k_checks_the_placed_archive_and_finds_its_images(tmp_path, capsys):
    served, root = str(tmp_path / "served"), tmp_path / "data"
    sums = write_checksums(str(tmp_path / "SHA256SUMS"), make_coco_archives(served))
    args = ["recipe", "flickr8k", "--root", str(root), "--out", str(tmp_path / "run"),
            "--checksums", sums, "--until", "layout", "--no-progress"]
    with RangeServer(served) as server:
        assert train_main(args + ["--base-url", server.url]) == 2  # no archive placed yet
        captured = capsys.readouterr()
        assert "https://forms.illinois.edu/sec/1713398" in captured.err
        assert len(captured.err.strip().splitlines()) == 1
        make_flickr8k_archive(str(root))
        assert train_main(args + ["--base-url", server.url]) == 0
        assert [r[0] for r in server.requests] == ["caption_datasets.zip"]  # fetched once
    out = capsys.readouterr().out
    assert "Flickr8k_Dataset.zip ok (zip archive, 20 files)" in out
    assert "images present: test 2/2, train 6/6, val 2/2" in out
    state = json.load(open(str(tmp_path / "run" / "recipe.json")))
    assert state["paths"]["images_dir"] == str(root / "flickr8k" / "Flicker8k_Dataset")


def test_an_out_holding_another_recipe_is_refused(tmp_path, capsys):
    os.makedirs(str(tmp_path / "run"))
    with open(str(tmp_path / "run" / "recipe.json"), "w") as handle:
        json.dump({"dataset": "coco", "tiny": True, "root": str(tmp_path / "data"),
                   "phases": {}}, handle)
    code = train_main(["recipe", "flickr8k", "--root", str(tmp_path / "data"), "--out",
                       str(tmp_path / "run"), "--tiny", "--dry-run"])
    assert code == 2
    assert "holds a recipe with dataset coco, not flickr8k" in capsys.readouterr().err
