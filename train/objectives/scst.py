"""Self-critical sequence training (Rennie et al. 2017): the ``scst`` phase of
``python -m train fit ... --scst-epochs N``, after the cross-entropy phases.

For each training image the decoder samples ``K`` captions (``--scst-samples``,
multinomial, ``train.model.decoding.sample_search`` over ``model.step``); each is
rewarded with its CIDEr-D (``train.objectives.cider``) against the image's references,
document frequencies from the training split's references. The baseline is
the mean reward of the image's other samples (``--scst-baseline mean``) or the
reward of its greedy caption (``greedy``). Loss (per token, as
self-critical.pytorch)::

    -sum_{i,t} (r_i - b_i) * log p(w_it) * mask_it / sum mask

so captions better than the baseline become more likely. As in that codebase,
rewards count the ``<end>`` token as a word on both sides, which penalises
captions cut off mid-phrase. The encoder is frozen (eval mode, no gradient);
the decoder is trained. Each epoch logs the mean reward and the mean sampled
caption length (words, ``<end>`` excluded) beside the usual validation; the
best validation CIDEr still picks ``best.pt``.

The phase reads its inputs through the cross-entropy phases' loader (workers
decode the images; with ``--freeze-encoder`` and no fine-tuning, the decoder
phase's feature cache instead: no encoder pass at all). Under torchrun every
rank runs the same number of batches (``DistributedSampler`` pads) and reaches
every collective: a rank whose batch held no readable image adds a zero
gradient; a batch unreadable on every rank is skipped by all. Unreadable images
are named at the end of the epoch, as in cross-entropy. Each epoch is seeded
from its number (``train.epochs.seed_epoch``), so a resumed run equals an
uninterrupted one. ``--scst-lr`` defaults to 5e-5, the learning rate of
self-critical.pytorch's SCST configs (``fc_rl``, ``updown_sc``, ``a2i2_sc``).
"""
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from edge.errors import NanocapError
from train import distributed
from train import epochs as epoch_parts
from train.data import batches as tdata
from train.model.decoding import greedy_search, sample_search
from train.objectives.cider import CiderD

BASELINES = ("mean", "greedy")


def add_arguments(add):
    """The SCST flags of ``train fit`` (``add`` is ``parser.add_argument``)."""
    add("--scst-epochs", type=int, default=0,
        help="self-critical (CIDEr-D reward) epochs after the cross-entropy phases")
    add("--scst-samples", type=int, default=5, help="captions sampled per image in SCST")
    add("--scst-baseline", default="mean", choices=BASELINES,
        help="SCST baseline: mean reward of the other samples, or the greedy caption's")
    add("--scst-lr", type=float, default=5e-5,
        help="Adam learning rate of the SCST phase (default 5e-5, self-critical.pytorch's)")


def phases(args):
    """The ``scst`` phase of ``train.fit``'s plan: ``[("scst", epochs, lr)]`` or ``[]``;
    checks the SCST flags before any training starts."""
    if args.scst_samples < 1 or (args.scst_baseline == "mean" and args.scst_samples < 2):
        raise NanocapError("--scst-samples must be >= 2 with --scst-baseline mean (>= 1 with greedy)")
    return [("scst", args.scst_epochs, args.scst_lr)] if args.scst_epochs > 0 else []


def trim_ids(row, end_id):
    """Token ids up to and including ``<end>`` (``<start>`` dropped, ``<pad>`` gone)."""
    out = []
    for token in row:
        if token == end_id:
            out.append(token)
            break
        if token > 0:
            out.append(token)
    return out


class Reward(object):
    """CIDEr-D of token-id captions against an image's references.

    ``references``: per training image, its captions as token-id lists
    (``vocab.encode`` form, ``<start>`` first); document frequencies come from
    them. ``id_limit``: the vocabulary size.
    """

    def __init__(self, references, id_limit, end_id):
        self.end_id = end_id
        self.refs = [[trim_ids(r[1:], end_id) for r in refs] for refs in references]
        self.scorer = CiderD.from_references(self.refs, id_limit)

    def __call__(self, tokens, images):
        """``tokens LongTensor [B*K, T]`` (rows of image ``images[i]`` together,
        K per image) -> rewards ``float64 [B*K]``."""
        rows = tokens.tolist()
        per_image = len(rows) // len(images)
        cands = [trim_ids(r, self.end_id) for r in rows]
        refs = [self.refs[i] for i in images]
        return self.scorer.score(cands, refs, np.repeat(np.arange(len(images)), per_image))


def mean_baseline(rewards, k):
    """Per sample, the mean reward of the other ``k - 1`` samples of its image: ``[B*K]``."""
    grouped = rewards.reshape(-1, k)
    return ((grouped.sum(axis=1, keepdims=True) - grouped) / (k - 1)).reshape(-1)


def scst_loss(logprobs, mask, advantage):
    """Policy-gradient loss: ``logprobs [M, T]`` of the sampled tokens, ``mask [M, T]``,
    ``advantage [M]`` (reward - baseline) -> scalar, averaged over tokens."""
    mask = mask.to(logprobs.dtype)
    weighted = advantage.to(logprobs.dtype).unsqueeze(1) * logprobs * mask
    return -weighted.sum() / mask.sum().clamp(min=1.0)


def scst_batch(model, features, image_ids, reward, vocab, k, baseline, max_len):
    """Sample ``k`` captions per image from encoder ``features [B, ...]`` (on the
    model's device), reward them, return ``(loss, stats)``: ``stats = {"reward": mean
    sampled reward, "length": mean words, "greedy": mean greedy reward or None}``.
    The folded decoder weights are built once for the whole batch."""
    with model.folded_once():
        state, memory = model.init_decoder(features.float())  # a float16 cache's rows too
        tokens, logprobs, mask = sample_search(
            model.step, state.repeat_interleave(k, dim=0), vocab.start_id, vocab.end_id, max_len,
            memory=tuple(m.repeat_interleave(k, dim=0) for m in memory))  # k rows per image
        rewards = reward(tokens.cpu(), image_ids)
        greedy_mean = None
        if baseline == "greedy":
            greedy, _ = greedy_search(model.step, state.detach(), vocab.start_id, vocab.end_id,
                                      max_len, memory=memory)
            greedy_rewards = reward(greedy.cpu(), image_ids)
            base = np.repeat(greedy_rewards, k)
            greedy_mean = float(greedy_rewards.mean())
        else:
            base = mean_baseline(rewards, k)
    advantage = torch.as_tensor(rewards - base, dtype=torch.float32).to(logprobs.device)
    loss = scst_loss(logprobs, mask, advantage)
    ended = (tokens == vocab.end_id).any(dim=1)
    words = mask.sum(dim=1) - ended.long()
    return loss, {"reward": float(rewards.mean()), "length": float(words.float().mean()),
                  "greedy": greedy_mean}


def frozen_features(model, inputs, from_features):
    """A batch's ``inputs`` (on the model's device) -> encoder features, no gradient:
    cached features as float, or images through the frozen encoder (eval mode)."""
    if from_features:
        return inputs.float()
    with torch.no_grad():
        return model.encode(inputs).float()


def _average_gradients(params, ctx):
    """Under torchrun: mean of every gradient over the ranks (no DDP wrapper needed);
    a parameter without a gradient (a rank with no readable image) adds zeros."""
    if not ctx.distributed:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad /= ctx.world


def scst_update(model, batch, from_features, reward, vocab, params, optimizer, args, ctx):
    """One optimizer step on ``batch`` (``train.data.batches.collate``'s; on this rank it may
    hold no readable image: a zero gradient then). Returns ``(loss sum over the
    batch's images, stats, images)``; ``stats`` None for an empty batch."""
    optimizer.zero_grad(set_to_none=True)
    loss_sum, stats, images = 0.0, None, 0
    if "inputs" in batch:
        features = frozen_features(model, batch["inputs"].to(model.device, non_blocking=True),
                                   from_features)
        images = features.shape[0]
        loss, stats = scst_batch(model, features, batch["index"].tolist(), reward, vocab,
                                 args.scst_samples, args.scst_baseline, model.config.max_len)
        loss.backward()
        loss_sum = loss.item() * images
    _average_gradients(params, ctx)
    nn.utils.clip_grad_norm_(params, args.clip)
    optimizer.step()
    return loss_sum, stats, images


def scst_inputs(model, train_src, args, ctx):
    """``(inputs, source)`` SCST reads: the decoder phase's cached features when the
    encoder never trained in this run (``--freeze-encoder`` without
    ``--finetune-epochs``: the cache holds this very encoder's output), else the
    images (encoded batch by batch)."""
    if args.freeze_encoder and not args.finetune_epochs:
        return epoch_parts.feature_inputs(model, train_src, args, ctx, "train")
    return train_src, train_src


def run_scst_epoch(model, loader, from_features, reward, vocab, params, optimizer, deadline,
                   state, args, ctx):
    """One pass over ``loader``: ``(sums {"loss", "reward", "length", "greedy"} over
    this rank's images, images, unreadable files, stopped by the deadline)``."""
    sums = {"loss": 0.0, "reward": 0.0, "length": 0.0, "greedy": 0.0}
    seen, skipped = 0, []
    for batch in loader:
        skipped.extend(loader.dataset.name(i) for i in batch["bad"])
        stop = deadline is not None and time.time() >= deadline
        stop, anyone = distributed.max_across(ctx, [float(stop), float("inputs" in batch)])
        if stop:
            return sums, seen, skipped, True
        if not anyone:  # no rank read an image of this batch: all skip it alike
            continue
        loss_sum, stats, images = scst_update(model, batch, from_features, reward, vocab, params,
                                              optimizer, args, ctx)
        state["phase_step"] += 1
        state["step"] += 1
        seen += images
        sums["loss"] += loss_sum
        for key in ("reward", "length", "greedy"):
            sums[key] += ((stats or {}).get(key) or 0.0) * images
    return sums, seen, skipped, False


def run_scst_phase(name, epochs, lr, model, vocab, train_src, val_src, state, opt_state, deadline,
                   args, ctx, log):
    """The ``scst`` phase, called by ``train.fit`` like its cross-entropy phases
    (same arguments); returns True when stopped by the time budget."""
    inputs, train_src = scst_inputs(model, train_src, args, ctx)
    from_features = not isinstance(inputs, tdata.ImageSource)
    references, loader = epoch_parts.caption_loader(inputs, train_src, vocab, model, args, ctx,
                                                    from_features)
    reward = Reward(references, len(vocab), vocab.end_id)
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = epoch_parts.adam(params, lr, opt_state)
    while state["phase_epoch"] < epochs:
        started = time.time()
        model.train()
        model.backbone.eval()
        epoch_parts.seed_epoch(loader, args, state)
        sums, seen, skipped, stopped = run_scst_epoch(model, loader, from_features, reward, vocab,
                                                      params, optimizer, deadline, state, args, ctx)
        if seen or not stopped:
            state["phase_epoch"] += 1
            state["epoch"] += 1
            total = distributed.sum_across(ctx, [float(seen)])[0]
            means = dict(zip(sums, [v / max(1.0, total) for v in
                                    distributed.sum_across(ctx, list(sums.values()))]))
            extra = {"scst_reward": round(means["reward"], 5), "scst_length": round(means["length"], 3),
                     "scst_baseline": args.scst_baseline, "scst_samples": args.scst_samples}
            if args.scst_baseline == "greedy":
                extra["scst_greedy_reward"] = round(means["greedy"], 5)
            log("scst epoch %d: mean reward %.4f, mean sampled length %.2f words%s"
                % (state["epoch"], means["reward"], means["length"], ", greedy reward %.4f"
                   % means["greedy"] if args.scst_baseline == "greedy" else ""))
            epoch_parts.end_epoch(model, vocab, optimizer, state, name, sums["loss"], seen,
                                  skipped, time.time() - started, val_src, val_src, args, ctx,
                                  log, extra=extra)
        if stopped:
            log("time budget of %.1f min reached" % args.minutes)
            return True
    return False
