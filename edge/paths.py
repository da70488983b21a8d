"""Outputs never overwrite what the live captioner was given.

``python -m edge`` writes recordings, a caption log and snapshots; before
anything opens, ``check_output_paths(args)`` refuses (one line, exit 2) any
output path that is the input file, lies inside the input folder, is the
bundle folder or lies inside it (for every input, ``{input}`` expanded
as ``edge.inputs`` does), or is named twice (``python -m edge v.mp4
v.mp4``, ``--log v.mp4``, ``--log BUNDLE/nanocap.json``). Paths are compared
after resolving symbolic links, so a link to the input is the input.
"""
import os

from edge.errors import NanocapError


def _real(path):
    return os.path.realpath(os.path.abspath(path))


def _inside(path, folder):
    """True when ``path`` is ``folder`` or anything under it (both resolved)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def local_input(uri):
    """The local file or folder an input URI reads, or None (cameras, streams,
    synthetic frames). Uses the one URI parser of ``edge.sources``."""
    from edge.sources import parse_uri
    spec = parse_uri(uri)
    return spec.location if spec.kind in ("file", "image", "folder") else None


def output_files(args):
    """``[(flag or output name, path)]`` for every file or folder the run may write."""
    written = [(name, name) for name in args.outputs
               if not name.startswith(("display://", "http://"))]
    if args.log:
        written.append(("--log", args.log))
    if not args.headless and args.snapshot_dir:
        written.append(("--snapshot-dir", args.snapshot_dir))
    return written


def check_output_paths(args):
    """``NanocapError`` naming the first output path that would overwrite the input,
    the bundle or another output (``args``: the parsed ``python -m edge`` arguments)."""
    from edge.inputs import input_uris, per_input
    given = [("the bundle", _real(args.bundle))]
    uris = input_uris(args)
    for uri in uris:
        source = local_input(uri)
        if source is not None:
            given.append(("the input", _real(source)))
    seen = {}
    for flag, path in [(f, p) for f, name in output_files(args)
                       for p in sorted(set(per_input(name, len(uris))))]:
        real = _real(path)
        for what, protected in given:
            folder = what == "the bundle" or os.path.isdir(protected)
            if real == protected or (folder and _inside(real, protected)):
                where = "is" if real == protected else "is inside"
                raise NanocapError("output %s %s %s %s: refusing to write there (nothing given "
                                   "is overwritten)" % (path, where, what, protected))
        if real in seen and flag != "--snapshot-dir":
            raise NanocapError("output %s is given twice (%s and %s)" % (path, seen[real], flag))
        seen[real] = flag
