"""What ``python -m train recipe`` runs in each phase, and what it should cost.

``Plan.commands(phase)`` gives the project's own command lines for the training,
test, export and verify phases (``[(prog, argv)]``, run in-process by
``train.recipe.run``). ``Plan.cost(phase)`` estimates a phase from the per-1000-image
timings measured on the 2-core development CPU (README, "workstation recipe":
MobileNetV3-small, 224 px, GRU-512, ``att``) scaled to the training split's size;
on a GPU those are divided by ``GPU_SPEEDUP``, an estimate (none measured yet).
Once a training phase has run an epoch, its measured seconds per epoch (from
``OUT/train/log.jsonl``) replace the estimate.
"""
import json
import os
import shlex

from train.recipe import sources as recipe_data

PHASES = ("download", "layout", "weights", "decoder", "finetune", "scst", "test", "export",
          "verify")
DESCRIPTIONS = {
    "download": "download the archives (resumable, checksums checked)",
    "layout": "unpack the archives where the readers find them",
    "weights": "ImageNet weights of the backbone (torchvision, once into ~/.cache/torch)",
    "decoder": "cache the frozen encoder's features, train the decoder (cross-entropy)",
    "finetune": "joint fine-tuning of encoder and decoder (cross-entropy, LR / 10)",
    "scst": "self-critical training on CIDEr-D",
    "test": "decode the test split with the best checkpoint and score it",
    "export": "export the bundle (ONNX) and score each precision on the test split",
    "verify": "check the bundle's captions against PyTorch's",
}
# Seconds per 1000 training images (5 captions each), 2-core CPU, measured (README).
CPU_SECONDS_PER_1000 = {"cache": 2.0, "decoder": 33.0, "finetune": 44.0, "scst": 109.0}
GPU_SPEEDUP = 30.0  # estimate: "one to two orders of magnitude" (README); not measured
GPU_CLASS = "one RTX 3090 / A100-class GPU"
DOWNLOAD_MBPS = 20.0  # assumed network speed for the estimate
EXTRACT_MBPS = 150.0  # assumed disk speed for the estimate

FULL = {"backbone": "mobilenet_v3_small", "weights": "imagenet", "image_size": 224,
        "hidden": 512, "embed": 256, "decoder": "att", "batch_size": 64,
        "precisions": "fp32,fp16", "score_limit": 1000, "verify_limit": 200, "extra": [],
        "export_extra": []}
EPOCHS = {"coco": (10, 2, 5), "flickr8k": (20, 5, 10), "flickr30k": (15, 3, 5)}
TINY = {"backbone": "mobilenet_v3_small", "weights": "none", "image_size": 64, "hidden": 32,
        "embed": 16, "decoder": "att", "batch_size": 4, "precisions": "fp32",
        "score_limit": None, "verify_limit": 4, "export_extra": ["--no-check"],
        "extra": ["--min-count", "1", "--val-images", "4", "--scst-samples", "2",
                  "--workers", "0", "--max-len", "8"]}


class Plan(object):
    """The recipe of ``dataset`` with data in ``root`` and the run in ``out``
    (``tiny``: the test-size configuration)."""

    def __init__(self, dataset, root, out, tiny=False, progress=True):
        self.dataset, self.root, self.out, self.tiny = dataset, root, out, tiny
        self.config = dict(TINY if tiny else FULL)
        self.epochs = (1, 1, 1) if tiny else EPOCHS[dataset]
        self.progress = progress
        spec = recipe_data.DATASETS[dataset]
        self.train_images = spec.train_images
        self.paths = {"data": os.path.join(root, "karpathy", spec.split_file),
                      "images_dir": os.path.join(root, spec.folder)}
        self.train_dir = os.path.join(out, "train")
        self.best = os.path.join(self.train_dir, "best.pt")
        self.bundle = os.path.join(out, "bundle")
        self.scores_path = os.path.join(out, "test_scores.json")

    def describe(self, phase):
        text = DESCRIPTIONS[phase]
        if phase in ("decoder", "finetune", "scst"):
            text += ", %d epochs" % self.phase_epochs(phase)
        return text

    def phase_epochs(self, phase):
        return dict(zip(("decoder", "finetune", "scst"), self.epochs)).get(phase, 0)

    def data_args(self):
        return ["--data", self.paths["data"], "--images-dir", self.paths["images_dir"]]

    def fit_argv(self, phase):
        """``train fit`` arguments of a training phase: the same model and data flags
        every time, with the epochs of the phases up to this one (fit skips the done ones)."""
        c, (decoder, finetune, scst) = self.config, self.epochs
        argv = ["fit"] + self.data_args() + [
            "--out", self.train_dir, "--backbone", c["backbone"], "--weights", c["weights"],
            "--hidden", str(c["hidden"]), "--embed", str(c["embed"]),
            "--image-size", str(c["image_size"]), "--decoder", c["decoder"],
            "--batch-size", str(c["batch_size"]), "--freeze-encoder", "--epochs", str(decoder),
            "--finetune-epochs", str(finetune if phase in ("finetune", "scst") else 0)]
        if phase == "scst":
            argv += ["--scst-epochs", str(scst)]
        if not self.progress:
            argv.append("--no-progress")
        return argv + c["extra"]

    def commands(self, phase):
        """``[(prog, argv)]``: the ``python -m PROG ARGV...`` command lines of ``phase``."""
        test = self.data_args() + ["--split", "test"]
        if phase in ("decoder", "finetune", "scst"):
            return [("train", self.fit_argv(phase))]
        if phase == "test":
            return [("train", ["eval", "--checkpoint", self.best] + test
                     + ["--results", os.path.join(self.out, "test_results.json")])]
        limit = self.config["score_limit"]
        if phase == "export":
            precisions = self.config["precisions"]
            return [("export", ["onnx", "--checkpoint", self.best, "--out", self.bundle,
                                "--precision", precisions] + self.config["export_extra"])] + [
                ("train", ["eval", "--bundle", self.bundle, "--precision", p] + test
                 + ["--update-bundle"] + (["--limit", str(limit)] if limit else []))
                for p in precisions.split(",")]
        if phase == "verify":
            return [("export", ["verify", "--checkpoint", self.best, "--bundle", self.bundle] + test
                     + ["--limit", str(self.config["verify_limit"])])]
        return []

    def cost(self, phase):
        """One phrase: the expected time (or size) of ``phase`` and where the figure comes from."""
        if self.tiny:
            return "seconds (tiny)"
        if phase == "download":
            return self.download_cost()
        if phase == "layout":
            size = sum(a.size or 0 for a in recipe_data.downloads(self.dataset)) or 1.5e9
            return "~%s at %.0f MB/s of disk (estimate)" % (duration(size / 1e6 / EXTRACT_MBPS),
                                                            EXTRACT_MBPS)
        if phase in ("decoder", "finetune", "scst"):
            return self.training_cost(phase)
        return {"weights": "seconds (10 MB)", "test": "minutes (5000 images or fewer)",
                "export": "minutes", "verify": "a minute"}[phase]

    def download_cost(self):
        spec = recipe_data.DATASETS[self.dataset]
        missing = [a for a in recipe_data.downloads(self.dataset)
                   if not os.path.isfile(os.path.join(self.root, a.name))]
        size = sum(a.size or 40e6 for a in missing)
        seconds = size / 1e6 / DOWNLOAD_MBPS
        text = "%s, ~%s at %.0f MB/s (estimate)" % (size_text(size), duration(seconds), DOWNLOAD_MBPS)
        if spec.manual is not None:
            text += "; the %s images you place in %s yourself" % (self.dataset, self.root)
        return text

    def training_cost(self, phase):
        epochs = self.phase_epochs(phase)
        done, seconds = measured_epochs(self.train_dir, phase)
        if seconds:
            return "%s for %d more epochs (measured %s per epoch)" % (
                duration(seconds * max(0, epochs - done)), max(0, epochs - done), duration(seconds))
        per_epoch = CPU_SECONDS_PER_1000[phase] * self.train_images / 1000.0
        total = per_epoch * epochs + (CPU_SECONDS_PER_1000["cache"] * self.train_images / 1000.0
                                      if phase == "decoder" else 0.0)
        gpu = "~%s on %s (estimate: CPU time / %.0f)" % (duration(total / GPU_SPEEDUP), GPU_CLASS,
                                                        GPU_SPEEDUP)
        cpu = "~%s on a 2-core CPU (measured per 1000 images, scaled to %d)" % (
            duration(total), self.train_images)
        return gpu + "; " + cpu if cuda_available() else cpu + "; " + gpu


def measured_epochs(train_dir, phase):
    """``(epochs done, mean seconds per epoch)`` of ``phase`` in ``train_dir/log.jsonl``."""
    times = []
    try:
        with open(os.path.join(train_dir, "log.jsonl"), "r") as handle:
            for line in handle:
                entry = json.loads(line)
                if entry.get("phase") == phase:
                    times.append(float(entry.get("seconds", 0.0)))
    except (OSError, ValueError):
        return 0, None
    return len(times), (sum(times) / len(times) if times else None)


def cuda_available():
    try:
        import torch
        return torch.cuda.is_available()
    except ImportError:
        return False


def duration(seconds):
    """``"42 s"``, ``"12 min"``, ``"3.5 h"``."""
    if seconds < 90:
        return "%.0f s" % seconds
    if seconds < 5400:
        return "%.0f min" % (seconds / 60.0)
    return "%.1f h" % (seconds / 3600.0)


def size_text(size):
    """``"40 MB"``, ``"20.4 GB"``."""
    return "%.0f MB" % (size / 1e6) if size < 1e9 else "%.1f GB" % (size / 1e9)


def shell(prog, argv):
    """The command line ``python -m PROG ARGV...``, quoted for a POSIX shell."""
    return " ".join(["python", "-m", prog] + [shlex.quote(a) for a in argv])
