"""DDP plumbing for ``torchrun --nproc_per_node N -m train fit ...``.

Under torchrun (``WORLD_SIZE`` > 1) one process per GPU joins an NCCL group, or
a gloo group on CPU. Only rank 0 writes files and logs.
"""
import os

import torch
import torch.distributed as dist


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


def setup():
    """Join the process group if launched by torchrun; return a ``Context``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = "cuda:%d" % local_rank if cuda else "cpu"
    if cuda:
        torch.cuda.set_device(local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
        if not cuda:  # share the CPU cores instead of oversubscribing them
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    return Context(rank, world, local_rank, device)


def cleanup(ctx):
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx):
    if ctx.distributed:
        dist.barrier()


def max_across(ctx, values):
    """Element-wise maximum of a list of floats over all ranks (the same answer
    everywhere, so every rank takes the same stop/LR decisions)."""
    if not ctx.distributed:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64)
    if ctx.device.type == "cuda":
        tensor = tensor.to(ctx.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor.cpu().tolist()


def mean_across(ctx, value):
    """Mean of a float over all ranks."""
    if not ctx.distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.float64)
    if ctx.device.type == "cuda":
        tensor = tensor.to(ctx.device)
    dist.all_reduce(tensor)
    return tensor.item() / ctx.world
