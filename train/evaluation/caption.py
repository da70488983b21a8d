"""``python -m train caption (--checkpoint CKPT | --bundle DIR) IMAGE... [--beam K]``

Prints ``path<TAB>caption`` per image (``--attention OUT_DIR``: also the
Show-Attend-Tell picture of each, for an ``att`` checkpoint). A directory argument captions every
image directly inside it. An unreadable file gets one line on stderr, the
others are still captioned, and the exit status is non-zero at the end.

Also home of the model options shared with ``eval``: a checkpoint runs in
PyTorch (``train.evaluation.torch_backend``), a bundle through the edge runtime
(``edge.backends.open_backend``), so the device's model is measured by the
very code the device runs.
"""
import os
import sys

from edge.errors import NanocapError
from edge.image import list_images, read_image

DEFAULT_BATCH = 32


def add_model_arguments(parser):
    """``--checkpoint | --bundle``, ``--beam``, ``--precision``, ``--backend``, ``--batch-size``."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a nanocap checkpoint (.pt): decode in PyTorch")
    source.add_argument("--bundle", help="an exported bundle directory: decode with the "
                                         "edge runtime (ONNX Runtime by default)")
    parser.add_argument("--beam", type=int, default=1, metavar="K",
                        help="beam width; 1 = greedy (default)")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "int8"),
                        help="bundle graph precision (--bundle only; default fp32)")
    parser.add_argument("--backend", default="ort", choices=("ort", "trt", "auto"),
                        help="edge backend for --bundle (default ort)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH,
                        help="images per call (default %d)" % DEFAULT_BATCH)


def open_captioner(args):
    """An object with ``caption(frames) -> [CaptionResult(text, tokens, latency_ms)]``
    and ``close()``, from ``--checkpoint`` or ``--bundle``."""
    if args.beam < 1:
        raise NanocapError("--beam must be 1 (greedy) or more, not %d" % args.beam)
    if args.batch_size < 1:
        raise NanocapError("--batch-size must be at least 1")
    decode = "greedy" if args.beam == 1 else "beam"
    if args.checkpoint:
        if args.precision != "fp32":
            raise NanocapError("--precision applies to --bundle; a checkpoint runs in fp32")
        from train.evaluation.torch_backend import TorchBackend
        return TorchBackend(args.checkpoint, decode=decode, beam_size=args.beam)
    from edge.backends import open_backend
    return open_backend(args.bundle, backend=args.backend, precision=args.precision,
                        decode=decode, beam_size=args.beam)


def expand_paths(paths):
    """Files as given; a directory becomes the sorted images directly inside it.

    Returns ``(files, problems)``: problems are one-line messages (empty folders,
    missing paths)."""
    files, problems = [], []
    for path in paths:
        if os.path.isdir(path):
            inside = list_images(path)
            if not inside:
                problems.append("no images in directory %s" % path)
            files.extend(inside)
        else:
            files.append(path)
    return files, problems


def caption_files(captioner, files, batch_size, out, err):
    """Caption ``files`` in batches, writing ``path<TAB>caption`` lines to ``out``.

    Unreadable files get one line on ``err``; returns how many failed."""
    failed, batch = 0, []
    for index, path in enumerate(files):
        try:
            batch.append((path, read_image(path)))
        except NanocapError as exc:
            err.write("skipped: %s\n" % exc)
            failed += 1
        if batch and (len(batch) == batch_size or index == len(files) - 1):
            results = captioner.caption([frame for _, frame in batch])
            for (name, _), result in zip(batch, results):
                out.write("%s\t%s\n" % (name, result.text))
            out.flush()
            batch = []
    return failed


def add_arguments(parser):
    parser.add_argument("images", nargs="+", metavar="IMAGE",
                        help="image files or directories of images")
    add_model_arguments(parser)
    parser.add_argument("--attention", metavar="OUT_DIR",
                        help="also write each image's Show-Attend-Tell picture (the caption "
                             "word by word over its attention maps) to OUT_DIR "
                             "(--checkpoint of a --decoder att model)")


def attention_pictures(captioner, files, out_dir):
    """``--attention OUT_DIR``: one picture per readable file (``train.model.attention``)."""
    from train.model.attention import write_attention_figures
    readable, frames = [], []
    for path in files:
        try:
            frames.append(read_image(path))
            readable.append(path)
        except NanocapError:
            pass  # already reported by caption_files
    return write_attention_figures(captioner, readable, frames, out_dir)


def run(args):
    files, problems = expand_paths(args.images)
    for line in problems:
        sys.stderr.write("skipped: %s\n" % line)
    if args.attention and not args.checkpoint:
        raise NanocapError("--attention needs --checkpoint (an att model run in PyTorch); "
                           "a bundle's graphs do not output attention weights")
    captioner = open_captioner(args)
    try:
        if args.attention:
            from train.model.attention import require_attention
            require_attention(captioner.model, args.checkpoint)
        failed = caption_files(captioner, files, args.batch_size, sys.stdout, sys.stderr)
        if args.attention:
            written = attention_pictures(captioner, files, args.attention)
            sys.stderr.write("%d attention picture(s) in %s\n" % (len(written), args.attention))
    finally:
        captioner.close()
    failed += len(problems)
    if failed:
        sys.stderr.write("%d of %d inputs could not be captioned\n"
                         % (failed, len(files) + len(problems)))
        return 1
    return 0
