"""Training inputs: images read with OpenCV and resized with ``edge.image.resize``
(the device's resize), captions as token ids, batching, and the feature cache.

A batch (``collate``) holds B images and all their sampled captions::

    {"inputs": uint8 [B,H,W,3] BGR images or float [B,F] cached features,
     "tokens": int64 [M, L] <start> w1 .. <end> <pad>..., "owner": int64 [M]
     (row of "inputs" each caption belongs to), "index": int64 [B], "skipped": int,
     "bad": [dataset indices of the unreadable images]}

so the encoder runs once per image however many captions it has.
"""
import hashlib
import os

import numpy as np
import torch
from torch.utils.data import Dataset

from edge.errors import NanocapError
from edge.image import read_image, resize

CAPTIONS_PER_IMAGE = 5


def encode_captions(vocab, captions, max_len):
    """Raw captions -> token id lists ``[<start>, ..., <end>]`` (at most max_len words+end)."""
    return [vocab.encode(c, max_len) for c in captions]


def random_crop(image, keep=0.9):
    """A random crop keeping at least ``keep`` of each side: the only augmentation,
    applied to the original before the resize (no flips: captions say left/right)."""
    height, width = image.shape[:2]
    h = int(torch.randint(int(height * keep), height + 1, ()).item())
    w = int(torch.randint(int(width * keep), width + 1, ()).item())
    top = int(torch.randint(0, height - h + 1, ()).item())
    left = int(torch.randint(0, width - w + 1, ()).item())
    return image[top:top + h, left:left + w]


def read_resized(path, size, augment=False, problems=None):
    """``uint8 [size,size,3]`` BGR, or None if the file is missing, corrupt or cut
    short; then the one-line reason is appended to ``problems`` (a list) if given."""
    try:
        image = read_image(path)
        return resize(random_crop(image) if augment else image, (size, size))
    except Exception as exc:  # NanocapError; cv2 errors on damaged files vary by version
        if problems is not None:
            problems.append(str(exc) if isinstance(exc, NanocapError)
                            else "cannot decode image %s: %s" % (path, exc))
        return None


def name_unreadable(problems, debug=False):
    """One log line naming unreadable images: how many, and the first three
    ``problems`` (every one with ``debug``)."""
    shown = problems if debug else problems[:3]
    more = len(problems) - len(shown)
    return "%d unreadable images skipped (corrupt, cut short or not an image): %s%s" % (
        len(problems), "; ".join(shown), "; %d more (--debug lists them)" % more if more else "")


class ImageSource(object):
    """Resized images of ``records``, either preloaded (``array``) or read on demand
    (then optionally augmented: ``random_crop`` before the resize)."""

    def __init__(self, records, size, array=None, augment=False):
        self.records = list(records)
        self.size = size
        self.array = array
        self.augment = augment

    def __len__(self):
        return len(self.records)

    def get(self, index):
        """``uint8 [H,W,3]`` or None (unreadable file; lazy mode only)."""
        if self.array is not None:
            return self.array[index]
        return read_resized(self.records[index].path, self.size, self.augment)


def load_images(records, size, preload_mb=2048, progress=False, augment=False):
    """Preload resized images when they fit in ``preload_mb`` (and no ``augment``),
    dropping unreadable files. Returns ``(ImageSource, problems)``: one line per
    unreadable file naming it; in lazy mode unreadable files are skipped (and
    named) batch by batch instead (``collate``'s ``"bad"``)."""
    need_mb = len(records) * size * size * 3 / 2.0 ** 20
    if augment or need_mb > preload_mb:
        return ImageSource(records, size, augment=augment), []
    kept, arrays, problems = [], [], []
    iterator = records
    if progress:
        from tqdm import tqdm
        iterator = tqdm(records, desc="reading images", unit="img", leave=False)
    for record in iterator:
        image = read_resized(record.path, size, problems=problems)
        if image is not None:
            kept.append(record)
            arrays.append(image)
    array = np.stack(arrays) if arrays else np.zeros((0, size, size, 3), np.uint8)
    return ImageSource(kept, size, array), problems


class CaptionDataset(Dataset):
    """Item i: ``(i, image uint8 [H,W,3] or feature [F] or None, token lists)``.

    ``inputs`` is an ``ImageSource`` or a float tensor ``[N, F]`` of cached
    features; up to ``per_image`` captions are sampled for each item.
    """

    def __init__(self, inputs, token_lists, per_image=CAPTIONS_PER_IMAGE):
        self.inputs = inputs
        self.token_lists = token_lists
        self.per_image = per_image

    def __len__(self):
        return len(self.token_lists)

    def __getitem__(self, index):
        if isinstance(self.inputs, ImageSource):
            item = self.inputs.get(index)
        else:
            item = self.inputs[index]
        captions = self.token_lists[index]
        if len(captions) > self.per_image:
            order = torch.randperm(len(captions))[:self.per_image].tolist()
            captions = [captions[k] for k in order]
        return index, item, captions

    def name(self, index):
        """The image file of item ``index`` (for naming an unreadable one)."""
        return self.inputs.records[index].path


def pad_tokens(token_lists, pad_id=0):
    """List of id lists -> ``int64 [M, L]`` padded with ``pad_id``."""
    length = max(len(t) for t in token_lists)
    out = torch.full((len(token_lists), length), pad_id, dtype=torch.long)
    for row, ids in enumerate(token_lists):
        out[row, :len(ids)] = torch.as_tensor(ids, dtype=torch.long)
    return out


def collate(items):
    """Items from ``CaptionDataset`` -> batch dict (see module docstring);
    items whose image could not be read are dropped and counted."""
    good = [it for it in items if it[1] is not None]
    batch = {"skipped": len(items) - len(good), "bad": [it[0] for it in items if it[1] is None]}
    if not good:
        return batch
    first = good[0][1]
    if isinstance(first, np.ndarray):
        batch["inputs"] = torch.from_numpy(np.stack([it[1] for it in good]))
    else:
        batch["inputs"] = torch.stack([torch.as_tensor(it[1]) for it in good])
    token_lists, owner = [], []
    for row, (_, _, captions) in enumerate(good):
        token_lists.extend(captions)
        owner.extend([row] * len(captions))
    batch["tokens"] = pad_tokens(token_lists)
    batch["owner"] = torch.as_tensor(owner, dtype=torch.long)
    batch["index"] = torch.as_tensor([it[0] for it in good], dtype=torch.long)
    return batch


def image_batches(source, batch_size):
    """Yield ``(indices list, uint8 tensor [b,H,W,3])`` over a source; unreadable
    images (lazy mode) are left out."""
    for start in range(0, len(source), batch_size):
        indices, images = [], []
        for index in range(start, min(start + batch_size, len(source))):
            image = source.get(index)
            if image is not None:
                indices.append(index)
                images.append(image)
        if images:
            yield indices, torch.from_numpy(np.stack(images))


@torch.no_grad()
def compute_features(model, source, batch_size=64, device="cpu"):
    """Encoder features ``float32 [N, ...]`` of every image (``[N, F]`` pooled for
    ``fc``, ``[N, R, F]`` regions for ``att``; zeros for unreadable ones) and a
    bool mask ``[N]`` of the readable ones. Model in eval mode."""
    was_training = model.training
    model.eval()
    features = None
    ok = torch.zeros(len(source), dtype=torch.bool)
    for indices, images in image_batches(source, batch_size):
        batch = model.encode(images.to(device)).float().cpu()
        if features is None:
            features = torch.zeros((len(source),) + tuple(batch.shape[1:]))
        features[indices] = batch
        ok[indices] = True
    if features is None:  # no readable image at all
        features = torch.zeros(len(source), model.feature_dim)
    model.train(was_training)
    return features, ok


def cache_key(parts, records):
    """Hex digest naming a feature cache: model/settings ``parts`` + image paths."""
    digest = hashlib.sha1(repr(parts).encode("utf-8"))
    for record in records:
        digest.update(record.path.encode("utf-8"))
    return digest.hexdigest()[:16]


def cached_features(path, key, compute):
    """Features from ``path`` if it holds ``key``, else ``compute()`` saved there.

    ``compute() -> (features [N,F], ok [N])``; returns the same pair."""
    if os.path.isfile(path):
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
            if data.get("key") == key:
                return data["features"], data["ok"]
        except Exception:  # a half-written or foreign file: recompute
            pass
    features, ok = compute()
    tmp = path + ".tmp"
    torch.save({"key": key, "features": features, "ok": ok}, tmp)
    os.replace(tmp, path)
    return features, ok
