"""Training inputs: images read with OpenCV and resized with ``edge.image.resize``
(the device's resize), captions as token ids, batching. The feature cache is
``train.data.feature_cache``, prepared image files ``train.data.prepared``.

A batch (``collate``) holds B images and all their sampled captions::

    {"inputs": uint8 [B,H,W,3] BGR images or float [B,F] cached features,
     "tokens": int64 [M, L] <start> w1 .. <end> <pad>..., "owner": int64 [M]
     (row of "inputs" each caption belongs to), "index": int64 [B], "skipped": int,
     "bad": [dataset indices of the unreadable images]}

so the encoder runs once per image however many captions it has.
"""
import hashlib

import numpy as np
import torch
from torch.utils.data import Dataset

from edge.errors import NanocapError
from edge.image import read_image, resize

CAPTIONS_PER_IMAGE = 5


def encode_captions(vocab, captions, max_len):
    """Raw captions -> token id lists ``[<start>, ..., <end>]`` (at most max_len words+end)."""
    return [vocab.encode(c, max_len) for c in captions]


def random_crop(image, keep=0.9, generator=None):
    """A random crop keeping at least ``keep`` of each side: the only augmentation,
    applied to the original before the resize (no flips: captions say left/right).
    ``generator``: a ``torch.Generator`` (default: torch's global one)."""
    height, width = image.shape[:2]

    def draw(low, high):
        return int(torch.randint(low, high, (), generator=generator).item())
    h, w = draw(int(height * keep), height + 1), draw(int(width * keep), width + 1)
    top, left = draw(0, height - h + 1), draw(0, width - w + 1)
    return image[top:top + h, left:left + w]


def read_resized(path, size, augment=False, problems=None, generator=None):
    """``uint8 [size,size,3]`` BGR, or None if the file is missing, corrupt or cut
    short; then the one-line reason is appended to ``problems`` (a list) if given."""
    try:
        image = read_image(path)
        return resize(random_crop(image, generator=generator) if augment else image, (size, size))
    except Exception as exc:  # NanocapError; cv2 errors on damaged files vary by version
        if problems is not None:
            problems.append(str(exc) if isinstance(exc, NanocapError)
                            else "cannot decode image %s: %s" % (path, exc))
        return None


def unreadable_reasons(records, indices, size):
    """One line per unreadable image ``records[i]``, ``i`` in ``indices``, naming
    the file and why (it is read once more: workers only report None)."""
    problems = []
    for index in indices:
        read_resized(records[index].path, size, problems=problems)
    return problems


def name_unreadable(problems, debug=False):
    """One log line naming unreadable images: how many, and the first three
    ``problems`` (every one with ``debug``)."""
    shown = problems if debug else problems[:3]
    more = len(problems) - len(shown)
    return "%d unreadable images skipped (corrupt, cut short or not an image): %s%s" % (
        len(problems), "; ".join(shown), "; %d more (--debug lists them)" % more if more else "")


class ImageSource(object):
    """Resized images of ``records``: held in memory (``array``: ``uint8 [N,H,W,3]``),
    read from prepared files (``array``: a ``train.data.arrayfile.ArrayFile``), or decoded
    on demand from the image files (``array`` None). ``rows[i]`` is record i's row
    in ``array`` (default: i). ``augment``: a random crop (``random_crop``) then
    the resize, on every read."""

    def __init__(self, records, size, array=None, augment=False, rows=None):
        self.records = list(records)
        self.size = size
        self.array = array
        self.augment = augment
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)

    def __len__(self):
        return len(self.records)

    @property
    def decodes_files(self):
        """True when ``get`` decodes image files (the slow path)."""
        return self.array is None

    def get(self, index, generator=None):
        """``uint8 [H,W,3]`` or None (unreadable file; on-demand mode only);
        ``generator`` draws the augmentation's crop."""
        if self.array is None:
            return read_resized(self.records[index].path, self.size, self.augment,
                                generator=generator)
        row = index if self.rows is None else int(self.rows[index])
        image = self.array.read(row) if hasattr(self.array, "read") else self.array[row]
        return (resize(random_crop(image, generator=generator), (self.size, self.size))
                if self.augment else image)

    def name(self, index):
        """The image file of item ``index`` (for naming an unreadable one)."""
        return self.records[index].path

    def subset(self, keep, augment=None):
        """The images at indices ``keep`` (no copy of the pixels)."""
        rows = np.arange(len(self)) if self.rows is None else self.rows
        return ImageSource([self.records[i] for i in keep], self.size, self.array,
                           self.augment if augment is None else augment,
                           None if self.array is None else rows[list(keep)])


def load_images(records, size, preload_mb=2048, progress=False, augment=False, workers=0):
    """Preload resized images when they fit in ``preload_mb`` (and no ``augment``),
    decoded by ``workers`` DataLoader processes, dropping unreadable files. Returns
    ``(ImageSource, problems)``: one line per unreadable file naming it; in lazy
    mode unreadable files are skipped (and named) batch by batch instead
    (``collate``'s ``"bad"``)."""
    from train.data.loaders import image_loader  # loaders imports nothing from here
    need_mb = len(records) * size * size * 3 / 2.0 ** 20
    if augment or need_mb > preload_mb:
        return ImageSource(records, size, augment=augment), []
    array = np.zeros((len(records), size, size, 3), np.uint8)
    keep, bad = [], []
    batches = image_loader(ImageSource(records, size), 64, workers, "cpu")
    if progress:
        from tqdm import tqdm
        batches = tqdm(batches, desc="reading images", unit="batch", leave=False)
    for indices, images, missing in batches:
        bad.extend(missing)
        if images is not None:
            array[indices] = images.numpy()
            keep.extend(indices)
    return ImageSource(records, size, array).subset(keep), unreadable_reasons(records, bad, size)


class CaptionDataset(Dataset):
    """Item i: ``(i, image uint8 [H,W,3] or feature [F] or None, token lists)``.

    ``inputs`` is an ``ImageSource`` or cached features (``train.data.feature_cache.FeatureArray``
    or a float tensor ``[N, ...]``); up to ``per_image`` captions are sampled for each item.
    """

    def __init__(self, inputs, token_lists, per_image=CAPTIONS_PER_IMAGE):
        self.inputs = inputs
        self.token_lists = token_lists
        self.per_image = per_image

    def __len__(self):
        return len(self.token_lists)

    def __getitem__(self, key):
        """``key``: an index, or ``(index, seed)`` from ``train.data.loaders.EpochSampler``:
        then the item's random draws (captions kept, crop) come from ``seed`` alone,
        the same in any worker, a resumed run included."""
        index, seed = key if isinstance(key, tuple) else (key, None)
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        if isinstance(self.inputs, ImageSource):
            item = self.inputs.get(index, generator)
        else:
            item = self.inputs[index]
        captions = self.token_lists[index]
        if len(captions) > self.per_image:
            order = torch.randperm(len(captions), generator=generator)[:self.per_image].tolist()
            captions = [captions[k] for k in order]
        return index, item, captions

    def name(self, index):
        """The image file of item ``index`` (for naming an unreadable one)."""
        return self.inputs.name(index)


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


def cache_key(parts, records):
    """Hex digest naming a feature cache: model/settings ``parts`` + image paths."""
    digest = hashlib.sha1(repr(parts).encode("utf-8"))
    for record in records:
        digest.update(record.path.encode("utf-8"))
    return digest.hexdigest()[:16]
