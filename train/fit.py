"""``python -m train fit``: train a captioner (also under ``torchrun``, DDP).

Phases: ``joint`` (encoder + decoder trained together), or with
``--freeze-encoder`` a ``decoder`` phase on encoder features computed once and
cached on disk, then ``--finetune-epochs`` of ``finetune`` (joint, LR / 10).
Each epoch writes ``RUN/last.pt`` (resumed from when present), ``RUN/best.pt``
when the validation CIDEr improves (greedy decoding, ``train.evaluation.metrics.quick_scores``;
without validation images, ``--val-images 0`` or no val split, there is no score
to choose by and ``best.pt`` is the last epoch's) and one line of ``RUN/log.jsonl``.
A resumed run continues exactly (weights, optimizer, best score, per-epoch
seeds); an ``--out`` holding another model config or dataset is refused unless
``--restart`` (``train.fit_checks``). ``--minutes`` stops on a wall-clock budget;
the LR follows a warm-up then a cosine over steps or time, whichever runs out
first. ``--device`` picks where the model runs (auto: CUDA when available).
"""
import contextlib
import os
import time

import torch
import torch.nn as nn

from edge.errors import NanocapError
from edge.vocab import Vocabulary, clean_caption
from train import distributed
from train import epochs as epoch_parts
from train.data import batches as tdata
from train.data.loaders import default_workers
from train.data.prepared import open_prepared
from train.data.readers import FORMATS, by_split, filter_existing, load_dataset
from train.fit_checks import (AUTO_MAX_LEN, RUN_FILES, check_arguments, check_resume, data_digest,
                              max_len_arg, resolve_max_len)
from train.model.build import build_captioner
from train.model.captioner import BACKBONES, ModelConfig
from train.model.checkpoint import read_checkpoint
from train.objectives import scst
from train.objectives.cross_entropy import TrainStep, batch_loss
from train.schedule import Schedule


def add_arguments(parser):
    a = parser.add_argument
    a("--data", required=True, help="caption file (Flickr token/CSV, COCO json, Karpathy json)")
    a("--images-dir", help="folder of the images (default: found beside --data)")
    a("--format", default="auto", choices=FORMATS, help="caption file format (default auto)")
    a("--out", required=True, help="run folder: last.pt, best.pt, log.jsonl, feature cache")
    a("--backbone", default="mobilenet_v3_small",
      help="torchvision model (%s, ...)" % ", ".join(BACKBONES))
    a("--weights", default="imagenet", choices=("imagenet", "none"), help="backbone init")
    a("--rnn", default="gru", choices=("gru", "lstm"))
    a("--decoder", default="fc", choices=("fc", "att"),
      help="fc: pooled features set the state; att: soft attention over the feature map")
    a("--att-reg", type=float, default=0.0, metavar="LAMBDA",
      help="doubly stochastic attention regulariser weight (--decoder att; default 0)")
    a("--hidden", type=int, default=512, help="RNN state size")
    a("--embed", type=int, default=256, help="word embedding size")
    a("--image-size", type=int, default=224, help="square input side in pixels")
    a("--epochs", type=int, default=20, help="epochs (decoder epochs with --freeze-encoder)")
    a("--minutes", type=float, help="wall-clock budget for the whole run")
    a("--batch-size", type=int, default=32, help="images per batch (each with its captions)")
    a("--lr", type=float, default=1e-3, help="peak Adam learning rate")
    a("--min-count", type=int, default=5, help="minimum word count for the vocabulary")
    a("--max-len", type=max_len_arg, default=None, metavar="N|auto",
      help="decoder steps = longest caption in words + <end> (default auto: the longest "
           "training caption's, at most %d; the exported graph runs exactly this many)" % AUTO_MAX_LEN)
    a("--label-smoothing", type=float, default=0.0)
    a("--freeze-encoder", action="store_true", help="two-step: cache features, train decoder")
    a("--finetune-epochs", type=int, default=0, help="joint epochs after --freeze-encoder")
    a("--workers", type=int,
      help="DataLoader workers (default: cores up to 8 decoding JPEGs, else 0 on CPU, 4 on CUDA)")
    a("--seed", type=int, default=0)
    a("--device", default="auto", help="auto (CUDA when available, else the CPU), cpu, cuda "
      "(under torchrun: each rank its LOCAL_RANK's GPU) or cuda:N (default auto)")
    a("--val-images", type=int, default=250, help="validation images decoded per epoch")
    a("--clip", type=float, default=5.0, help="gradient norm clipping")
    a("--dropout", type=float, default=0.2)
    a("--bn-momentum", type=float, default=0.1, help="backbone BatchNorm momentum")
    a("--augment", action="store_true",
      help="random crops (>= 90%% of each side) before the resize; reads images every epoch")
    a("--preload-mb", type=float, default=2048, help="preload images when they fit in this")
    a("--prepared", metavar="DIR",
      help="read the images from DIR, written by python -m train prepare, not from the files")
    a("--no-progress", action="store_true", help="no tqdm progress bar")
    scst.add_arguments(a)
    a("--restart", action="store_true",
      help="start a new run in --out even if it holds one (its last.pt, best.pt and "
           "log.jsonl are replaced); without it an --out with a different model config "
           "or dataset is refused")


def run(args):
    check_arguments(args)
    ctx = distributed.setup(args.device)
    try:
        return fit(args, ctx)
    finally:
        distributed.cleanup(ctx)


def prepare_records(args, log):
    """``{split: records}`` with missing images dropped (and counted)."""
    records = load_dataset(args.data, args.images_dir, args.format, log=log,
                           debug=getattr(args, "debug", False))
    listed = by_split(records)
    records, _ = filter_existing(records, log)
    splits = by_split(records)
    if not splits["train"]:
        present = ", ".join("%s %d" % (s, len(splits[s])) for s in ("val", "test") if splits[s])
        raise NanocapError("no usable images in the train split (%d listed, all missing%s); "
                           "check --data and --images-dir"
                           % (len(listed["train"]), "; present: " + present if present else ""))
    return splits


def build_model(args, vocab, resume):
    """The Captioner: rebuilt from ``resume`` (a checkpoint dict) or new from ``args``."""
    if resume is not None:
        model = build_captioner(ModelConfig.from_dict(resume["config"]), weights="none")
        model.load_state_dict(resume["model"])
        return model
    config = ModelConfig(vocab_size=len(vocab), backbone=args.backbone, rnn=args.rnn,
                         embed=args.embed, hidden=args.hidden, image_size=args.image_size,
                         max_len=args.max_len, dropout=args.dropout, bn_momentum=args.bn_momentum,
                         decoder=args.decoder)
    return build_captioner(config, weights=args.weights)


def load_sources(args, splits, size, log, ctx):
    """Train and val image sources: prepared files (``--prepared``), preloaded or
    read on demand; unreadable files counted and named."""
    val_records = splits["val"][:args.val_images]
    if getattr(args, "prepared", None):
        train, bad = open_prepared(args.prepared, splits["train"], size, args.augment)
        val, bad_val = open_prepared(args.prepared, val_records, size)
    else:
        workers = args.workers if args.workers is not None else default_workers(True, "cpu")
        train, bad = tdata.load_images(splits["train"], size, args.preload_mb, workers=workers,
                                       progress=ctx.main and not args.no_progress, augment=args.augment)
        val, bad_val = tdata.load_images(val_records, size, args.preload_mb, workers=workers)
    if bad + bad_val:
        log(tdata.name_unreadable(bad + bad_val, getattr(args, "debug", False)))
    if not len(train):
        raise NanocapError("no usable images in the train split (%d unreadable, e.g. %s)"
                           % (len(bad), bad[0] if bad else "?"))
    return train, val


def phases(args):
    """``[(name, epochs, lr)]`` of the run."""
    if not args.freeze_encoder:
        return [("joint", args.epochs, args.lr)] + scst.phases(args)
    plan = [("decoder", args.epochs, args.lr)]
    if args.finetune_epochs > 0:
        plan.append(("finetune", args.finetune_epochs, args.lr * 0.1))
    return plan + scst.phases(args)


def fit(args, ctx):
    log = print if ctx.main else (lambda *a, **k: None)
    torch.manual_seed(args.seed)
    started = time.time()
    deadline = started + args.minutes * 60 if args.minutes else None
    if ctx.main:
        try:
            os.makedirs(args.out, exist_ok=True)
        except OSError as exc:
            raise NanocapError("cannot create --out %s: %s" % (args.out, exc))
        if args.restart:
            for name in RUN_FILES:
                if os.path.isfile(os.path.join(args.out, name)):
                    os.remove(os.path.join(args.out, name))
    distributed.barrier(ctx)
    last_path = os.path.join(args.out, "last.pt")
    resume = read_checkpoint(last_path) if os.path.isfile(last_path) else None
    splits = prepare_records(args, log)
    resolve_max_len(args, splits["train"], log)
    if resume is not None:
        check_resume(args, resume, splits, last_path)
        vocab = Vocabulary.from_dict(resume["vocab"])
        log("resuming from %s (epoch %d)" % (last_path, resume["train"].get("epoch", 0)))
    else:
        vocab = Vocabulary.build([clean_caption(c) for r in splits["train"] for c in r.captions],
                                 min_count=args.min_count)
    model = build_model(args, vocab, resume).to(ctx.device)
    size = model.config.image_size
    train_src, val_src = load_sources(args, splits, size, log, ctx)
    log("train %d images, val %d images, vocabulary %d words, %s on %s x%d"
        % (len(train_src), len(val_src), len(vocab), model.config.backbone, ctx.device, ctx.world))
    state = {"phase": 0, "phase_epoch": 0, "phase_step": 0, "epoch": 0, "step": 0, "best_score": None,
             "data": os.path.abspath(args.data), "data_digest": data_digest(splits["train"])}
    state.update(resume["train"] if resume else {})
    plan = phases(args)
    for index, (name, epochs, lr) in enumerate(plan):
        if index < state["phase"]:
            continue
        if index > state["phase"]:
            state.update(phase=index, phase_epoch=0, phase_step=0)
        phase_deadline = deadline
        if deadline is not None and index < len(plan) - 1:
            phase_deadline = time.time() + (deadline - time.time()) / 2.0
        opt_state = resume.get("optimizer") if resume and resume["train"].get("phase") == index else None
        runner = scst.run_scst_phase if name == "scst" else run_phase
        stopped = runner(name, epochs, lr, model, vocab, train_src, val_src, state, opt_state,
                         phase_deadline, args, ctx, log)
        if stopped:
            break
    if ctx.distributed:
        distributed.check_ranks_agree(ctx, model, log)
    log("done in %.1f min; best val score %s; %s" % ((time.time() - started) / 60.0,
        "%.4f" % state["best_score"] if state["best_score"] is not None else "n/a",
        os.path.join(args.out, "best.pt")))
    return 0


def train_one_epoch(step_module, loader, optimizer, scaler, params, schedule, state, args, ctx, desc):
    """One pass over ``loader``; returns ``(loss sum, images seen, unreadable image files, stopped)``.
    ``scaler`` is AMP's GradScaler (enabled on CUDA only)."""
    cuda = ctx.device.type == "cuda"
    loss_sum, seen, skipped = 0.0, 0, []
    bar = loader
    if ctx.main and not args.no_progress:
        from tqdm import tqdm
        bar = tqdm(loader, desc=desc, leave=False, mininterval=1.0)
    for batch in bar:
        skipped.extend(loader.dataset.name(i) for i in batch["bad"])
        if "inputs" not in batch:
            continue
        lr = schedule.lr_at(state["phase_step"], ctx)
        if lr is None:
            return loss_sum, seen, skipped, True
        for group in optimizer.param_groups:
            group["lr"] = lr
        with (torch.autocast("cuda", dtype=torch.float16) if cuda else contextlib.nullcontext()):
            loss = batch_loss(step_module, batch, args, ctx.device)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(params, args.clip)
        scaler.step(optimizer)
        scaler.update()
        state["phase_step"] += 1
        state["step"] += 1
        loss_sum += loss.item() * len(batch["index"])
        seen += len(batch["index"])
        if bar is not loader:
            bar.set_postfix(loss="%.3f" % loss.item(), refresh=False)
    return loss_sum, seen, skipped, False


def run_phase(name, epochs, lr, model, vocab, train_src, val_src, state, opt_state, deadline,
              args, ctx, log):
    """Train one phase; returns True when stopped by the time budget."""
    from_features = name == "decoder"
    for p in model.backbone.parameters():
        p.requires_grad_(not from_features)
    train_inputs, val_inputs = train_src, val_src
    if from_features:
        train_inputs, train_src = epoch_parts.feature_inputs(model, train_src, args, ctx, "train")
        if len(val_src):
            val_inputs, val_src = epoch_parts.feature_inputs(model, val_src, args, ctx, "val")
    _, loader = epoch_parts.caption_loader(train_inputs, train_src, vocab, model, args, ctx,
                                           from_features)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = epoch_parts.adam(params, lr, opt_state)
    step_module = TrainStep(model, from_features)
    if ctx.distributed:
        model.backbone.to(memory_format=torch.channels_last)  # grads match DDP's buckets
        step_module = nn.parallel.DistributedDataParallel(
            step_module, device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None)
    schedule = Schedule(lr, epochs * len(loader), deadline)
    scaler = torch.amp.GradScaler("cuda", enabled=ctx.device.type == "cuda")
    model.train()
    while state["phase_epoch"] < epochs:
        epoch_start = time.time()
        epoch_parts.seed_epoch(loader, args, state)
        desc = "%s %d/%d" % (name, state["phase_epoch"] + 1, epochs)
        loss_sum, seen, skipped, stopped = train_one_epoch(
            step_module, loader, optimizer, scaler, params, schedule, state, args, ctx, desc)
        if seen or not stopped:
            state["phase_epoch"] += 1
            state["epoch"] += 1
            epoch_parts.end_epoch(model, vocab, optimizer, state, name, loss_sum, seen, skipped,
                                  time.time() - epoch_start, val_inputs, val_src, args, ctx, log)
        if stopped:
            log("time budget of %.1f min reached" % args.minutes)
            return True
    return False


