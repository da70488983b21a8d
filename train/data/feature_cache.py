"""The feature cache of ``train fit --freeze-encoder``: the frozen encoder's output
for every image, computed once and stored on disk as float16.

Files (in the run folder, ``NAME`` = ``train`` or ``val``)::

    features-NAME.npy    float16 [N, F] (fc: pooled) or [N, R, F] (att: regions),
                         divided by 2**exponent; a plain .npy (numpy.load(...,
                         mmap_mode="r") opens it)
    features-NAME.json   {"key": what it was computed from, "shape", "dtype",
                         "exponent", "bad": [indices of unreadable images]},
                         written last

The power-of-two scale (from the first batch, exact) keeps features whose
magnitude is far from 1 inside float16's range (a randomly initialised
backbone's pooled features are about 1e-9, below float16's smallest number).

Built by DataLoader workers (JPEG decoding in parallel) feeding the encoder on
the model's device; read row by row (``train.data.arrayfile``) by the workers of
every epoch, so resident memory does not grow with the number of images. Under
DDP rank 0 builds it while the other ranks wait at a barrier, then every rank
opens the same files. A cache whose key differs, or whose files are missing,
cut short or damaged, is rebuilt and the reason logged.
"""
import json
import os

import numpy as np
import torch

from edge.errors import NanocapError
from train import distributed
from train.data import arrayfile
from train.data import loaders

DTYPE = np.float16
FP16_MAX = float(np.finfo(np.float16).max)


class FeatureArray(object):
    """Cached features of the readable images: ``len``, ``[i]`` -> float32 tensor
    ``[F]`` or ``[R,F]``, ``[a:b]`` -> ``[b-a, ...]``. ``rows[i]`` is item i's row
    in the file. Picklable (DataLoader workers each open the file)."""

    def __init__(self, array, rows, exponent=0):
        self.array, self.rows = array, np.asarray(rows, dtype=np.int64)
        self.shape, self.exponent = (len(self.rows),) + array.row_shape, int(exponent)

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        if isinstance(index, slice):
            picked = range(*index.indices(len(self)))
            return torch.stack([self[i] for i in picked]) if len(picked) else \
                torch.zeros((0,) + self.shape[1:])
        row = self.array.read(int(self.rows[index])).astype(np.float32)
        return torch.from_numpy(np.ldexp(row, self.exponent))


def paths(folder, name):
    """``(data .npy, metadata .json)`` of cache ``name`` in ``folder``."""
    base = os.path.join(folder, "features-%s" % name)
    return base + ".npy", base + ".json"


def open_cache(folder, name, key):
    """``(ArrayFile, metadata)`` of a valid cache for ``key``, or ``(None, reason)``."""
    data_path, meta_path = paths(folder, name)
    if not os.path.isfile(meta_path) or not os.path.isfile(data_path):
        return None, "not built yet"
    try:
        with open(meta_path) as handle:
            meta = json.load(handle)
        array = arrayfile.ArrayFile(data_path)
    except (ValueError, OSError, NanocapError) as exc:
        return None, str(exc)
    if meta.get("key") != key:
        return None, "computed from another model, settings or image list"
    if list(array.shape) != meta.get("shape") or array.dtype != np.dtype(DTYPE):
        return None, "%s holds %s %s, its metadata says %s" % (data_path, array.dtype, array.shape,
                                                               meta.get("shape"))
    return array, meta


@torch.no_grad()
def build(model, source, folder, name, key, device, workers, batch_size=64):
    """Encode every image of ``source`` (an ``ImageSource``) into the cache files;
    returns ``(ArrayFile, metadata)``. Model put in eval mode for the pass."""
    data_path, meta_path = paths(folder, name)
    if os.path.exists(meta_path):
        os.remove(meta_path)  # no valid metadata until the data is complete
    was_training = model.training
    model.eval()
    array, bad, exponent, tmp = None, [], 0, data_path + ".tmp"
    try:
        for indices, images, missing in loaders.image_loader(source, batch_size, workers, device):
            bad.extend(missing)
            if images is None:
                continue
            out = model.encode(images.to(device, non_blocking=True)).float().cpu().numpy()
            if array is None:
                array = arrayfile.create(tmp, (len(source),) + out.shape[1:], DTYPE)
                exponent = int(np.ceil(np.log2(max(float(np.abs(out).max()), 1e-30))))
            out = np.clip(np.ldexp(out, -exponent), -FP16_MAX, FP16_MAX)
            for row, values in zip(indices, out):
                array.write(row, values)
    finally:
        model.train(was_training)
    if array is None:  # no readable image at all
        array = arrayfile.create(tmp, (len(source), model.feature_dim), DTYPE)
    array.close()
    os.replace(tmp, data_path)
    meta = {"key": key, "shape": list(array.shape), "dtype": "float16", "exponent": exponent,
            "bad": sorted(bad)}
    with open(meta_path + ".tmp", "w") as handle:
        json.dump(meta, handle)
    os.replace(meta_path + ".tmp", meta_path)
    return arrayfile.ArrayFile(data_path), meta


def cached_features(model, source, folder, name, key, device, workers, build_here=True, log=print):
    """``(FeatureArray of the readable images, their indices in source)``, from the
    cache when valid for ``key``, else built (only when ``build_here``; a rank that
    does not build expects a valid cache and fails naming it otherwise)."""
    array, meta = open_cache(folder, name, key)
    if array is None:
        if not build_here:
            raise NanocapError("feature cache %s is not usable: %s" % (paths(folder, name)[0], meta))
        if meta != "not built yet":
            log("feature cache %s: %s; rebuilding" % (paths(folder, name)[0], meta))
        array, meta = build(model, source, folder, name, key, device, workers)
    skip = set(meta["bad"])
    keep = [i for i in range(len(source)) if i not in skip]
    return FeatureArray(array, keep, meta.get("exponent", 0)), keep


def shared(model, source, folder, name, key, ctx, workers):
    """``cached_features`` under DDP (``ctx``: ``train.distributed.Context``): rank 0
    opens or builds the cache while the other ranks wait, then they open it."""
    if ctx.main:
        found = cached_features(model, source, folder, name, key, ctx.device, workers)
    distributed.barrier(ctx)
    if not ctx.main:
        found = cached_features(model, source, folder, name, key, ctx.device, workers,
                                build_here=False)
    return found
