"""DataLoader settings shared by training, the feature cache, ``train prepare``
and the training benchmark: worker processes decode or read the inputs, pinned
host memory and a prefetch queue on CUDA, workers kept across epochs.
"""
import os

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

PREFETCH = 4  # batches queued per worker


class EpochSampler(Sampler):
    """This rank's share of a shuffle that depends only on ``seed`` and the epoch
    (``set_epoch``), padded as ``DistributedSampler`` pads so every rank gets
    ``ceil(n / world)`` items. Yields ``(index, item_seed)``: ``CaptionDataset``
    draws that item's randomness from ``item_seed``, so what an epoch reads is
    the same in fresh or persistent workers, in a resumed run or an unbroken one."""

    def __init__(self, n, world=1, rank=0, seed=0):
        self.n, self.world, self.rank, self.seed = int(n), int(world), int(rank), int(seed)
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def __len__(self):
        return -(-self.n // self.world)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        order = torch.randperm(self.n, generator=generator).tolist()
        order += order[:len(self) * self.world - self.n]          # pad: equal shares
        base = (self.seed * 1000003 + self.epoch) * 1000003
        for index in order[self.rank::self.world]:
            yield index, (base + index) % (2 ** 62)


def default_workers(decodes_jpegs, device):
    """Workers when ``--workers`` is not given: every core (at most 8) when images
    are decoded from files; 0 on CPU and 4 on CUDA when inputs are read from
    memory, prepared files or the feature cache (a row read costs microseconds)."""
    cores = os.cpu_count() or 1
    if decodes_jpegs:
        return min(8, cores)
    return min(4, cores) if torch.device(device).type == "cuda" else 0


def loader_options(workers, device):
    """Keyword arguments for ``DataLoader``: ``num_workers``, and with workers
    ``persistent_workers`` and ``prefetch_factor``; ``pin_memory`` on CUDA."""
    options = {"num_workers": int(workers), "pin_memory": torch.device(device).type == "cuda"}
    if workers > 0:
        options.update(persistent_workers=True, prefetch_factor=PREFETCH)
    return options


class ImageItems(Dataset):
    """Item i: ``(i, uint8 [H,W,3] or None)`` from an ``ImageSource`` (anything with
    ``get(i)`` and ``len``)."""

    def __init__(self, source):
        self.source = source

    def __len__(self):
        return len(self.source)

    def __getitem__(self, index):
        return index, self.source.get(index)


def collate_images(items):
    """``ImageItems`` items -> ``(indices [b] list, uint8 tensor [b,H,W,3] or None,
    bad indices list)``; unreadable images left out."""
    good = [(i, image) for i, image in items if image is not None]
    bad = [i for i, image in items if image is None]
    images = torch.from_numpy(np.stack([image for _, image in good])) if good else None
    return [i for i, _ in good], images, bad


def image_loader(source, batch_size, workers, device):
    """In-order batches ``(indices, images, bad)`` of every image of ``source``."""
    return DataLoader(ImageItems(source), batch_size=batch_size, shuffle=False,
                      collate_fn=collate_images, **loader_options(workers, device))
