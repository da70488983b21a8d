"""DDP plumbing for ``torchrun --nproc_per_node N -m train fit ...``.

Under torchrun (``WORLD_SIZE`` > 1) one process per GPU joins an NCCL group, or
a gloo group on CPU. Only rank 0 writes files and logs. ``train fit --device``
(``resolve_device``) picks the device: ``auto`` (CUDA when available), ``cpu``,
``cuda`` (each rank its ``LOCAL_RANK``'s GPU) or ``cuda:N`` (one process).
"""
import hashlib
import os

import torch
import torch.distributed as dist

from edge.errors import NanocapError


class Context(object):
    """Where this process runs: ``rank``, ``world``, ``local_rank``, ``device``."""

    def __init__(self, rank=0, world=1, local_rank=0, device="cpu"):
        self.rank, self.world, self.local_rank = rank, world, local_rank
        self.device = torch.device(device)

    @property
    def distributed(self):
        return self.world > 1

    @property
    def main(self):
        return self.rank == 0


DEVICES = "auto, cpu, cuda or cuda:N"


def resolve_device(name, local_rank=0, world=1):
    """``--device`` -> ``torch.device``; a bad value, or CUDA asked for where there is
    none (or not that GPU), is one ``NanocapError`` line (exit 2)."""
    text = str(name).strip().lower()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cpu":
        return torch.device("cpu")
    kind, _, index = text.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise NanocapError("--device must be %s, not %r" % (DEVICES, name))
    if not torch.cuda.is_available():
        raise NanocapError("--device %s: CUDA is not available here (torch %s, %s); use "
                           "--device cpu" % (name, torch.__version__, "built without CUDA"
                                             if torch.version.cuda is None else "no GPU found"))
    if index and world > 1:
        raise NanocapError("--device %s names one GPU for %d processes: under torchrun use "
                           "--device cuda (each rank takes its LOCAL_RANK's GPU)" % (name, world))
    number, count = int(index or local_rank), torch.cuda.device_count()
    if number >= count:
        raise NanocapError("--device %s: GPU %d asked for, %d present" % (name, number, count))
    return torch.device("cuda", number)


def setup(device="auto"):
    """Resolve ``device`` (``resolve_device``), join the process group if launched by
    torchrun (NCCL on CUDA, gloo on the CPU); return a ``Context``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device, local_rank, world)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
        if not cuda:  # share the CPU cores instead of oversubscribing them
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    return Context(rank, world, local_rank, device)


def cleanup(ctx):
    """Leave the process group, all ranks together: a rank that tears gloo down
    while its peer still talks to it can abort at exit (std::terminate, seen
    about one run in six with 2 CPU ranks)."""
    if ctx.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier(ctx):
    if ctx.distributed:
        dist.barrier()


def _reduce(ctx, values, op):
    """A list of floats reduced element-wise over all ranks with ``op``."""
    if not ctx.distributed:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64)
    if ctx.device.type == "cuda":  # NCCL reduces CUDA tensors only
        tensor = tensor.to(ctx.device)
    dist.all_reduce(tensor, op=op)
    return tensor.cpu().tolist()


def max_across(ctx, values):
    """Element-wise maximum of a list of floats over all ranks (the same answer
    everywhere, so every rank takes the same stop/LR decisions)."""
    return _reduce(ctx, values, dist.ReduceOp.MAX)


def sum_across(ctx, values):
    """Element-wise sum of a list of floats over all ranks."""
    return _reduce(ctx, values, dist.ReduceOp.SUM)


def mean_across(ctx, value):
    """Mean of a float over all ranks."""
    return sum_across(ctx, [value])[0] / ctx.world


def parameters_digest(module):
    """sha1 hex of ``module``'s parameters (names, shapes, values) in order: equal
    on every rank after a correct DDP run (buffers such as BatchNorm statistics
    are left out: each rank updates its own from its own batches)."""
    digest = hashlib.sha1()
    for name, param in module.named_parameters():
        digest.update(("%s %s %s;" % (name, tuple(param.shape), param.dtype)).encode("utf-8"))
        digest.update(param.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def gather_strings(ctx, text):
    """Every rank's ``text`` as a list (rank order); ``[text]`` when not distributed."""
    if not ctx.distributed:
        return [text]
    out = [None] * ctx.world
    dist.all_gather_object(out, text)
    return out


def check_ranks_agree(ctx, model, log):
    """After DDP training every rank must hold the same weights: one log line
    with the digests, or a ``NanocapError`` naming them."""
    digests = gather_strings(ctx, parameters_digest(model))
    if len(set(digests)) > 1:
        raise NanocapError("DDP ranks ended with different weights (sha1 %s)" % ", ".join(digests))
    log("weights identical on %d ranks (sha1 %s)" % (ctx.world, digests[0]))
