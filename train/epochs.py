"""What every training epoch shares, cross-entropy (``train.fit``) and SCST
(``train.objectives.scst``) alike: its inputs (the encoder-feature cache, the
DataLoader), its seeds (a resumed epoch draws what it would have), and its end
(validation CIDEr on the model's device, ``last.pt``/``best.pt``, ``log.jsonl``).
"""
import json
import os

import torch
from torch.utils.data import DataLoader

from train import distributed
from train.data import batches as tdata
from train.data import feature_cache
from train.data.loaders import EpochSampler, default_workers, loader_options
from train.evaluation.metrics import quick_scores
from train.model.checkpoint import save_checkpoint
from train.model.decoding import greedy_search


def feature_inputs(model, source, args, ctx, name):
    """Encoder features of ``source`` cached in ``RUN/features-<name>.npy`` (float16,
    ``train.feature_cache``): ``(FeatureArray, source)`` with unreadable images
    dropped from both. Rank 0 builds the cache; the other ranks wait and open it."""
    key = tdata.cache_key((model.config.to_dict(), args.weights, args.seed), source.records)
    workers = args.workers if args.workers is not None else default_workers(source.decodes_files,
                                                                             ctx.device)
    plain = source.subset(range(len(source)), augment=False)  # no augmentation in cached features
    features, keep = feature_cache.shared(model, plain, args.out, name, key, ctx, workers)
    return features, source.subset(keep)


@torch.no_grad()
def evaluate(model, inputs, records, vocab, batch_size=64):
    """Greedy-decode the val images (or features) once, on the model's device;
    ``(quick_scores, sample)``."""
    model.eval()
    hyps, device = {}, model.device
    if isinstance(inputs, tdata.ImageSource):
        batches = ((idx, model.encode(images.to(device)))
                   for idx, images in tdata.image_batches(inputs, batch_size))
    else:
        batches = ((list(range(s, min(s + batch_size, len(inputs)))),
                    inputs[s:s + batch_size].to(device)) for s in range(0, len(inputs), batch_size))
    for indices, features in batches:
        state, memory = model.init_decoder(features.float())
        tokens, _ = greedy_search(model.step, state, vocab.start_id, vocab.end_id,
                                  model.config.max_len, memory=memory)
        for i, row in zip(indices, tokens.tolist()):
            hyps[i] = vocab.decode(row)
    model.train()
    if not hyps:
        return {}, ""
    refs = dict((i, records[i].captions) for i in hyps)
    return quick_scores(refs, hyps), hyps[min(hyps)]


def make_loader(dataset, args, ctx, lazy):
    """The training DataLoader: shuffled by an ``EpochSampler`` (equal shares per rank), workers
    (``--workers``, default ``loaders.default_workers``; ``lazy``: images decoded
    from files), pinned memory on CUDA, persistent workers and prefetching."""
    workers = args.workers if args.workers is not None else default_workers(lazy, ctx.device)
    sampler = EpochSampler(len(dataset), ctx.world, ctx.rank, args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    per_rank = len(sampler)
    lone_last = per_rank > args.batch_size and per_rank % args.batch_size == 1  # BatchNorm needs 2
    return DataLoader(dataset, batch_size=args.batch_size, sampler=sampler,
                      collate_fn=tdata.collate, generator=generator, drop_last=lone_last,
                      **loader_options(workers, ctx.device))



def caption_loader(inputs, source, vocab, model, args, ctx, from_features):
    """``(token lists, loader)`` of ``source``'s captions, encoded at the model's
    ``max_len``, over ``inputs`` (``source`` itself, or its cached features when
    ``from_features``); images are decoded in the workers when read from files."""
    tokens = [tdata.encode_captions(vocab, r.captions, model.config.max_len) for r in source.records]
    loader = make_loader(tdata.CaptionDataset(inputs, tokens), args, ctx,
                         lazy=not from_features and source.array is None)
    return tokens, loader


def adam(params, lr, opt_state=None):
    """Adam over ``params`` at ``lr``, resumed from ``opt_state`` (a state dict) if given."""
    optimizer = torch.optim.Adam(params, lr=lr)
    if opt_state is not None:
        optimizer.load_state_dict(opt_state)
    return optimizer

def seed_epoch(loader, args, state):
    """Seed what epoch ``state["epoch"]`` draws (dropout, sampling, shuffling, the
    ranks' shares) from its number: a resumed epoch draws what it would have."""
    torch.manual_seed(args.seed + 1000 * state["epoch"])
    loader.generator.manual_seed(args.seed + state["epoch"])
    loader.sampler.set_epoch(state["epoch"])   # the shuffle and every item's draws


def end_epoch(model, vocab, optimizer, state, name, loss_sum, seen, skipped, seconds,
              val_inputs, val_src, args, ctx, log, extra=None):
    """Validate (rank 0), write last.pt / best.pt / log.jsonl (plus ``extra`` fields), print one line."""
    train_loss = distributed.mean_across(ctx, loss_sum / max(1, seen))
    if ctx.main:
        scores, sample = ({}, "")
        if len(val_src):
            scores, sample = evaluate(model, val_inputs, val_src.records, vocab)
        score = scores.get("CIDEr")  # None without validation: best.pt = the last epoch
        best = score is None or state["best_score"] is None or score > state["best_score"]
        if best and score is not None:
            state["best_score"] = score
        entry = {"epoch": state["epoch"], "phase": name, "phase_epoch": state["phase_epoch"],
                 "step": state["step"], "train_loss": round(train_loss, 5), "images": seen * ctx.world,
                 "skipped": len(skipped), "seconds": round(seconds, 2), "val": scores,
                 "val_images": len(val_src), "sample": sample, "best": best}
        entry.update(extra or {})
        save_checkpoint(os.path.join(args.out, "last.pt"), model, vocab, state, optimizer)
        if best:
            save_checkpoint(os.path.join(args.out, "best.pt"), model, vocab, state)
        with open(os.path.join(args.out, "log.jsonl"), "a") as handle:
            handle.write(json.dumps(entry) + "\n")
        log("epoch %d (%s) loss %.3f | val BLEU-4 %s CIDEr %s | %.0fs | %s"
            % (state["epoch"], name, train_loss, _fmt(scores.get("Bleu_4")), _fmt(scores.get("CIDEr")),
               seconds, sample))
        if skipped:
            log("%d unreadable images skipped this epoch: %s"
                % (len(skipped), ", ".join(os.path.basename(p) for p in skipped[:5])
                   + (" ..." if len(skipped) > 5 else "")))
    distributed.barrier(ctx)


def _fmt(value):
    return "n/a" if value is None else "%.3f" % value
