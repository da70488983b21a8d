#!/usr/bin/env python3
"""Benchmark training's input pipeline and steps on this machine.

    python scripts/benchmark_train.py --data DATASET [--images-dir DIR] [--image-size 224]
        [--device auto|cpu|cuda|cuda:N] [--workers 0,2,8] [--decoders fc,att]
        [--batch-size 32] [--batches 10] [--max-images 2000] [--work DIR] [--json OUT]

Measures, in one run, on the first ``--max-images`` training images:
- input alone (images/s, by worker count): decoding the JPEGs, reading the
  prepared files (``train prepare``, written here first), reading the float16
  feature cache (built here first, per decoder);
- the step alone, one batch held in memory (images/s): ``decoder`` (frozen-encoder
  cross-entropy on cached features), ``joint`` (encoder + decoder), ``scst``
  (sampling, CIDEr-D reward, policy gradient on cached features); fc and att;
- both together (the loader feeding the step, with the most workers given) and
  which bounds it: "input-bound: the step waits N% of the time" when it waits
  >= 10%, else "step-bound"; ``decoder`` from JPEGs runs the frozen encoder per
  batch, as training without the cache would;
- peak resident memory of every row (this process, and with its workers).
The last stdout line is one JSON object (also written to ``--json``).
"""
import argparse
import contextlib
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from edge.bench.system import machine_info  # noqa: E402
from edge.errors import NanocapError, run_cli  # noqa: E402
from edge.vocab import Vocabulary, clean_caption  # noqa: E402
from train import benchmark as tb  # noqa: E402
from train.data import batches as tdata  # noqa: E402
from train.data import feature_cache  # noqa: E402
from train.data import prepared  # noqa: E402
from train.data.loaders import loader_options  # noqa: E402
from train.data.readers import FORMATS, by_split, filter_existing, load_dataset  # noqa: E402
from train.model.build import build_captioner
from train.model.captioner import ModelConfig  # noqa: E402
from train.objectives import scst  # noqa: E402
from train.objectives.cross_entropy import TrainStep, caption_loss  # noqa: E402


def get_parser():
    p = argparse.ArgumentParser(prog="benchmark_train.py", description=__doc__.split("\n\n")[0])
    a = p.add_argument
    a("--data", required=True, help="caption file (as train fit's --data)")
    a("--images-dir", help="folder of the images (default: found beside --data)")
    a("--format", default="auto", choices=FORMATS)
    a("--image-size", type=int, default=224, help="square input side in pixels")
    a("--device", default="auto", help="auto, cpu, cuda or cuda:N (as train fit)")
    a("--workers", default="0,2", help="comma list of DataLoader worker counts (default 0,2)")
    a("--decoders", default="fc,att", help="comma list of fc,att")
    a("--backbone", default="mobilenet_v3_small")
    a("--hidden", type=int, default=512)
    a("--batch-size", type=int, default=32)
    a("--batches", type=int, default=10, help="timed batches per row (default 10)")
    a("--max-images", type=int, default=2000, help="training images used (default 2000)")
    a("--scst-samples", type=int, default=5)
    a("--work", help="folder for the prepared files and caches (default: a temporary one)")
    a("--json", help="also write the JSON summary here")
    a("--debug", action="store_true")
    return p


def pick_device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise NanocapError("--device %s: CUDA is not available on this machine" % name)
    return device


def int_list(text, flag):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 0:
        raise NanocapError("%s takes a comma list of counts >= 0, not %r" % (flag, text))
    return values


class Bench(object):
    """Shared state of one run: records, vocabulary, device, rows of results."""

    def __init__(self, args):
        self.args, self.device = args, pick_device(args.device)
        records = load_dataset(args.data, args.images_dir, args.format, debug=args.debug)
        records, _ = filter_existing(by_split(records)["train"], print)
        if not records:
            raise NanocapError("no training images found for %s" % args.data)
        self.records = records[:args.max_images]
        self.vocab = Vocabulary.build([clean_caption(c) for r in self.records for c in r.captions],
                                      min_count=1)
        self.tokens = [tdata.encode_captions(self.vocab, r.captions, 16) for r in self.records]
        self.rows = {"input": [], "step": [], "together": [], "build": []}

    def model(self, decoder):
        config = ModelConfig(vocab_size=len(self.vocab), backbone=self.args.backbone,
                             hidden=self.args.hidden, image_size=self.args.image_size, max_len=16,
                             decoder=decoder)
        torch.manual_seed(0)  # the same encoder as the cache's (its key names the settings)
        return build_captioner(config, weights="none").to(self.device)

    def loader(self, inputs, workers):
        dataset = tdata.CaptionDataset(inputs, self.tokens)
        return DataLoader(dataset, batch_size=self.args.batch_size, shuffle=True,
                          collate_fn=tdata.collate, drop_last=True,
                          **loader_options(workers, self.device))

    def record(self, table, row, peak):
        row.update(peak_rss_mb=round(peak.main_mb), peak_rss_with_workers_mb=round(peak.tree_mb))
        self.rows[table].append(row)
        print("%-9s %s" % (table, " ".join("%s=%s" % (k, _fmt(v)) for k, v in row.items())), flush=True)


def _fmt(value):
    return "%.1f" % value if isinstance(value, float) else str(value).replace(" ", "_")


class FromFeatures(torch.nn.Module):
    """A captioner whose ``encode`` is the identity: ``scst.scst_batch`` on cached features."""

    def __init__(self, model):
        super().__init__()
        self.inner = model

    def encode(self, features):
        return features.float()

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.inner, name)


def make_step(bench, model, phase, from_jpeg=False):
    """``step(batch)``: one optimiser step of ``phase`` (decoder, joint or scst)."""
    for p in model.backbone.parameters():
        p.requires_grad_(phase == "joint")
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    module = TrainStep(model, from_features=phase != "joint")
    reward = scst.Reward(bench.tokens, len(bench.vocab), bench.vocab.end_id)
    cuda = bench.device.type == "cuda"

    def step(batch):
        inputs = batch["inputs"].to(bench.device, non_blocking=True)
        tokens = batch["tokens"].to(bench.device, non_blocking=True)
        if from_jpeg and phase != "joint":  # no cache: the frozen encoder runs per batch
            with torch.no_grad():
                inputs = model.encode(inputs)
        with (torch.autocast("cuda", dtype=torch.float16) if cuda else contextlib.nullcontext()):
            if phase == "scst":
                loss, _ = scst.scst_batch(FromFeatures(model), inputs, batch["index"].tolist(), reward,
                                          bench.vocab, bench.args.scst_samples, "mean", 16)
            else:
                logits = module(inputs, tokens[:, :-1], batch["owner"].to(bench.device))
                loss = caption_loss(logits, tokens[:, 1:], 0.0)
        optimizer.zero_grad(set_to_none=True)
        loss.float().backward()
        optimizer.step()
    return step


def run_bench(args):
    workers = int_list(args.workers, "--workers")
    decoders = [d for d in args.decoders.split(",") if d]
    if not decoders or set(decoders) - {"fc", "att"}:
        raise NanocapError("--decoders takes a comma list of fc,att, not %r" % args.decoders)
    bench = Bench(args)
    size, n = args.image_size, len(bench.records)
    with (contextlib.nullcontext(args.work) if args.work else tempfile.TemporaryDirectory()) as work:
        os.makedirs(work, exist_ok=True)
        jpeg = tdata.ImageSource(bench.records, size)
        with tb.PeakRSS() as peak:
            started = time.perf_counter()
            prepared.write(bench.records, size, os.path.join(work, "prepared"), max(workers))
            rate = n / (time.perf_counter() - started)
        bench.record("build", {"what": "prepare", "images": n, "images_per_s": rate}, peak)
        prep, _ = prepared.open_prepared(os.path.join(work, "prepared"), bench.records, size)
        sources = [("jpeg", jpeg), ("prepared", prep)]
        for name, source in sources:
            for w in workers:
                with tb.PeakRSS() as peak:
                    rate, _ = tb.input_rate(bench.loader(source, w), args.batches)
                bench.record("input", {"source": name, "workers": w, "images_per_s": rate}, peak)
        for decoder in decoders:
            run_decoder(bench, decoder, jpeg, prep, work, workers)
    return summary(bench)


def run_decoder(bench, decoder, jpeg, prep, work, workers):
    args, n = bench.args, len(bench.records)
    model = bench.model(decoder)
    with tb.PeakRSS() as peak:
        started = time.perf_counter()
        key = tdata.cache_key(("bench", decoder, args.image_size), bench.records)
        feats, _ = feature_cache.cached_features(model, jpeg, work, "bench-" + decoder, key,
                                                 bench.device, max(workers), log=lambda *a: None)
        rate = n / (time.perf_counter() - started)
    bench.record("build", {"what": "feature cache", "decoder": decoder, "images": n,
                           "images_per_s": rate}, peak)
    for w in workers:
        with tb.PeakRSS() as peak:
            rate, _ = tb.input_rate(bench.loader(feats, w), args.batches)
        bench.record("input", {"source": "features-" + decoder, "workers": w, "images_per_s": rate},
                     peak)
    for phase, source in (("decoder", feats), ("joint", jpeg), ("scst", feats)):
        batch = next(iter(bench.loader(source, 0)))
        with tb.PeakRSS() as peak:
            rate = tb.step_rate(make_step(bench, model, phase), batch, args.batches, bench.device)
        bench.record("step", {"phase": phase, "decoder": decoder, "images_per_s": rate}, peak)
    w = max(workers)
    for phase, name, source in (("decoder", "features", feats), ("decoder", "jpeg", jpeg),
                                ("joint", "jpeg", jpeg), ("joint", "prepared", prep),
                                ("scst", "features", feats)):
        step = make_step(bench, model, phase, from_jpeg=name == "jpeg")
        with tb.PeakRSS() as peak:
            row = tb.together_rate(bench.loader(source, w), step, args.batches, bench.device)
        bench.record("together", dict({"phase": phase, "decoder": decoder, "source": name,
                                       "workers": w}, **row), peak)


def summary(bench):
    """The JSON object: machine, rows, and the speed-ups the docs quote (input
    alone: each source at its best worker count; together: with the most workers)."""
    def rate(table, **match):  # the best row: each input at its best worker count
        rows = [r for r in bench.rows[table] if all(r.get(k) == v for k, v in match.items())]
        return max(r["images_per_s"] for r in rows) if rows else None

    speedups = {"prepared_vs_jpeg_input": _ratio(rate("input", source="prepared"),
                                                 rate("input", source="jpeg"))}
    for decoder in {r.get("decoder") for r in bench.rows["step"]}:
        speedups["features_%s_vs_jpeg_input" % decoder] = _ratio(
            rate("input", source="features-" + decoder), rate("input", source="jpeg"))
        speedups["decoder_%s_features_vs_jpeg_together" % decoder] = _ratio(
            rate("together", phase="decoder", decoder=decoder, source="features"),
            rate("together", phase="decoder", decoder=decoder, source="jpeg"))
    info = machine_info()
    return {"machine": info, "load_average": info.get("loadavg"), "device": str(bench.device),
            "torch": torch.__version__, "images": len(bench.records), "image_size": bench.args.image_size,
            "batch_size": bench.args.batch_size, "batches": bench.args.batches,
            "build": bench.rows["build"], "input": bench.rows["input"], "step": bench.rows["step"],
            "together": bench.rows["together"], "speedups": speedups}


def _ratio(a, b):
    return round(a / b, 2) if a and b else None


def main(argv=None):
    def body(argv_):
        args = get_parser().parse_args(argv_)
        result = run_bench(args)
        for key, value in sorted(result["speedups"].items()):
            print("speedup %s: %s" % (key, value))
        text = json.dumps(result)
        if args.json:
            with open(args.json, "w") as handle:
                handle.write(text + "\n")
        print(text)
        return 0
    return run_cli(body, argv, prog="benchmark_train.py")


if __name__ == "__main__":
    sys.exit(main())
