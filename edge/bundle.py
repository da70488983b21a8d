"""The bundle: the directory that carries a model from workstation to device.

``nanocap.json`` (schema below) plus the ONNX graphs it names. Every listed file
has its sha256 recorded and checked on load, so a truncated copy or a hand-edited
graph is refused with one clear line. The bundle is checked as a whole: every
graph must be listed in ``files`` (a bundle without ``files`` is refused), every
name stays inside the bundle folder (no absolute path, no ``..``, no symbolic
link out), and the vocabulary must match the size of the graphs' vocabulary
outputs (``VOCAB_OUTPUTS``; checked from ``nanocap.json`` at load and from the
graph itself when a backend opens it: ``check_vocab_size``).

Schema (version 1)::

    {"schema": 1, "format": "nanocap-bundle",
     "vocab": {"words": [...], "pad": 0, "start": 1, "end": 2, "unk": 3},
     "max_len": T,
     "input": {"height": H, "width": W, "layout": "NHWC", "channels": "BGR",
               "dtype": "uint8"},
     "model": {...model config...},
     "graphs": {"caption": {"fp32": {"file": "caption.onnx",
                                     "inputs": [{"name", "dtype", "shape"}],
                                     "outputs": [...]},
                            "fp16": {...}, "int8": {...}},
                "encoder": {...}, "decoder_step": {...}},
     "provenance": {"torch": ..., "onnx": ..., "opset": 13, "date": ...},
     "files": {"caption.onnx": "<sha256>", ...},
     "scores": {"fp32": {"CIDEr": ...}, ...}}

Graph contracts (shapes; N is the dynamic batch):
- caption:      image uint8 [N,H,W,3] -> tokens int32 [N,T], logprobs float32 [N,T]
- encoder:      image uint8 [N,H,W,3] -> state float32 [N,S]
- decoder_step: token int32 [N], state float32 [N,S]
                -> logprobs float32 [N,V], state_out float32 [N,S]
"""
import hashlib
import json
import os

from edge.atomic import write_json
from edge.errors import NanocapError
from edge.vocab import Vocabulary

SCHEMA_VERSION = 1
VOCAB_OUTPUTS = {"decoder_step": "logprobs"}   # graph -> output [N, V] over the vocabulary
META_NAME = "nanocap.json"
PRECISIONS = ("fp32", "fp16", "int8")


def file_digest(path, algo="sha256", chunk=1 << 20):
    """Hex digest (``hashlib`` algorithm ``algo``) of a file's bytes, read in chunks."""
    digest = hashlib.new(algo)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_file(path):
    """Hex sha256 of a file's bytes."""
    return file_digest(path)


def listed_files(meta):
    """Every file name the metadata's graphs refer to."""
    names = []
    for variants in meta.get("graphs", {}).values():
        for entry in variants.values():
            names.append(entry["file"])
    return names


def write_meta(directory, meta):
    """Record the sha256 of every listed file (plus ``meta['extra_files']``) and
    write ``nanocap.json``. Returns the written metadata."""
    meta = dict(meta)
    meta.setdefault("schema", SCHEMA_VERSION)
    meta.setdefault("format", "nanocap-bundle")
    names = listed_files(meta) + list(meta.get("extra_files", []))
    meta["files"] = dict((n, sha256_file(os.path.join(directory, n))) for n in names)
    _dump(directory, meta)
    return meta


def _dump(directory, meta):
    write_json(os.path.join(directory, META_NAME), meta)


def update_scores(directory, precision, scores):
    """Store ``scores`` (metric -> value) for ``precision`` in ``nanocap.json``."""
    bundle = load_bundle(directory, verify=False)
    bundle.meta.setdefault("scores", {})[precision] = scores
    _dump(directory, bundle.meta)


class Bundle(object):
    """A loaded bundle: ``meta`` dict, ``vocab``, ``input_size`` (H, W), ``max_len``."""

    def __init__(self, directory, meta):
        self.directory = directory
        self.meta = meta
        self.vocab = Vocabulary.from_dict(meta["vocab"])
        self.input_size = (int(meta["input"]["height"]), int(meta["input"]["width"]))
        self.max_len = int(meta["max_len"])

    def precisions(self, graph):
        """Precisions exported for ``graph``, in PRECISIONS order."""
        variants = self.meta.get("graphs", {}).get(graph, {})
        return [p for p in PRECISIONS if p in variants]

    def graph_entry(self, graph, precision="fp32"):
        """The metadata entry (file, inputs, outputs) of one graph variant."""
        variants = self.meta.get("graphs", {}).get(graph, {})
        if precision not in variants:
            have = ", ".join(self.precisions(graph)) or "none"
            raise NanocapError("bundle %s has no %s graph in %s (has: %s)"
                               % (self.directory, graph, precision, have))
        return variants[precision]

    def graph_path(self, graph, precision="fp32"):
        """Absolute path of one graph variant's ONNX file (inside the bundle)."""
        return self.inside(self.graph_entry(graph, precision)["file"])

    def inside(self, name):
        """The path of ``name`` in the bundle; ``NanocapError`` when it is absolute,
        climbs out with ``..`` or resolves (through links) outside the folder."""
        folder = os.path.realpath(self.directory)
        if not isinstance(name, str) or not name:
            raise NanocapError("bundle %s names %r as a file" % (self.directory, name))
        path = os.path.join(folder, name)
        if (os.path.isabs(name) or ".." in name.replace("\\", "/").split("/")
                or not os.path.realpath(path).startswith(folder + os.sep)):
            raise NanocapError("bundle %s names %r, which is not a file inside the bundle"
                               % (self.directory, name))
        return path

    def verify(self):
        """Check the bundle as a whole (see the module text); ``NanocapError``
        naming the first bad file."""
        files = self.meta.get("files")
        if not isinstance(files, dict) or not files:
            raise NanocapError("bundle %s lists no files with their sha256 in %s "
                               "(edited or incomplete; re-export it)" % (self.directory, META_NAME))
        for name in listed_files(self.meta):
            if name not in files:
                raise NanocapError("bundle %s: graph %s has no sha256 in %s's files "
                                   "(edited; re-export it)" % (self.directory, name, META_NAME))
        for graph, variants in sorted(self.meta.get("graphs", {}).items()):
            for entry in variants.values():
                check_vocab_size(self, graph, [(o.get("name"), o.get("shape"))
                                               for o in entry.get("outputs", [])],
                                 "%s (as %s describes it)" % (entry["file"], META_NAME))
        for name, expected in sorted(files.items()):
            path = self.inside(name)
            if not os.path.isfile(path):
                raise NanocapError("bundle file missing: %s" % path)
            if sha256_file(path) != expected:
                raise NanocapError("bundle file %s does not match its checksum "
                                   "(corrupt or edited; re-export or re-copy the bundle)"
                                   % path)


def check_vocab_size(bundle, graph, outputs, where):
    """``outputs``: ``[(name, shape)]`` of ``graph``; ``NanocapError`` when its
    vocabulary output's last dimension is a number other than the vocabulary size."""
    for name, shape in outputs:
        if name != VOCAB_OUTPUTS.get(graph) or not shape:
            continue
        size = shape[-1]
        if isinstance(size, int) and size != len(bundle.vocab):
            raise NanocapError("bundle %s: the vocabulary has %d words but %s gives %s over %d "
                               "(nanocap.json and the graphs come from different exports)"
                               % (bundle.directory, len(bundle.vocab), where, name, size))


def load_bundle(directory, verify=True):
    """Load ``directory/nanocap.json``; verify checksums unless ``verify=False``."""
    path = os.path.join(directory, META_NAME)
    if not os.path.isdir(directory):
        raise NanocapError("bundle directory not found: %s" % directory)
    if not os.path.isfile(path):
        raise NanocapError("not a nanocap bundle (no %s): %s" % (META_NAME, directory))
    try:
        with open(path) as handle:
            meta = json.load(handle)
    except ValueError as exc:
        raise NanocapError("bundle metadata %s is not valid JSON: %s" % (path, exc))
    if meta.get("schema") != SCHEMA_VERSION:
        raise NanocapError("bundle %s has schema %r; this nanocap reads schema %d"
                           % (directory, meta.get("schema"), SCHEMA_VERSION))
    try:
        bundle = Bundle(directory, meta)
    except (KeyError, TypeError, ValueError) as exc:
        raise NanocapError("bundle metadata %s is incomplete: %r" % (path, exc))
    if verify:
        bundle.verify()
    return bundle
