"""``python -m export trt``: build (or refresh) a bundle's TensorRT engines on the target.

Thin wrapper over ``edge.trt.build.ensure_engine``, the builder the device runtime
also calls on first run. Prints one line per engine and, last, one JSON object
``{graph: engine file}``. Without TensorRT or a GPU: one line, non-zero exit.
Where the one-graph caption engine would not fit the GPU (a Nano at the design
size, docs/tensorrt.md), it builds what the device captions with instead:
``encoder`` and ``decoder_step_greedy``.
"""
import json
import os

from edge.bundle import load_bundle
from edge.errors import NanocapError
from edge.trt.build import DEFAULT_MAX_BATCH, DEFAULT_WORKSPACE_MB, ensure_engine, read_sidecar

GRAPHS = ("caption", "encoder", "decoder_step", "caption_beam")


def add_arguments(parser):
    parser.add_argument("--bundle", required=True, help="bundle directory")
    parser.add_argument("--precision", default="fp16", choices=("fp16", "int8", "fp32"),
                        help="engine precision (default fp16; int8 falls back where the GPU "
                             "has no fast INT8, e.g. the Nano)")
    parser.add_argument("--workspace-mb", type=int, default=DEFAULT_WORKSPACE_MB,
                        help="builder workspace in MiB (default %d)" % DEFAULT_WORKSPACE_MB)
    parser.add_argument("--graphs", default=None,
                        help="comma-separated graphs of %s (default: all in the bundle)"
                             % ",".join(GRAPHS))
    parser.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH,
                        help="largest batch the engines accept (default %d)" % DEFAULT_MAX_BATCH)
    parser.add_argument("--calib-images", help="images for INT8 calibration (else the "
                                               "calibration cache in the bundle is used)")
    parser.add_argument("--force", action="store_true", help="rebuild even if current")


def _engines(bundle, graphs, precision):
    """``[(graph, head)]`` to build: where the caption engine would not fit this GPU
    (``edge.trt.greedy_steps.caption_fits``), the engines the device captions with
    instead (encoder + greedy-headed decoder_step), said on stdout."""
    from edge.trt.build import import_tensorrt
    from edge.trt.cuda import gpu_total_memory
    from edge.trt.greedy_steps import caption_fits
    import_tensorrt()  # no TensorRT is said first, before any GPU question
    wanted = [(g, None) for g in graphs]
    if "caption" in graphs:
        fits, held, budget = caption_fits(bundle, precision, gpu_total_memory())
        if not fits:
            print("caption: %.0f MiB of per-use weights > this GPU's %.0f MiB budget: "
                  "building the encoder and greedy step engines instead"
                  % (held / 1048576.0, budget / 1048576.0))
            wanted = [w for w in wanted if w[0] not in ("caption", "encoder")]
            wanted = [("encoder", None), ("decoder_step", "greedy")] + wanted
    return wanted


def run(args):
    if args.workspace_mb < 1 or args.max_batch < 1:
        raise NanocapError("--workspace-mb and --max-batch must be positive")
    bundle = load_bundle(args.bundle)
    present = [g for g in GRAPHS if bundle.precisions(g)]
    if args.graphs is None:
        graphs = present
    else:
        graphs = [g.strip() for g in args.graphs.split(",") if g.strip()]
    unknown = [g for g in graphs if g not in present]
    if unknown or not graphs:
        raise NanocapError("--graphs takes %s (the graphs in this bundle), not %r"
                           % (",".join(present), args.graphs))
    built = {}
    for graph, head in _engines(bundle, graphs, args.precision):
        path = ensure_engine(bundle, graph, args.precision, workspace_mb=args.workspace_mb,
                             max_batch=args.max_batch, calib_images=args.calib_images,
                             force=args.force, head=head)
        side = read_sidecar(path) or {}
        label = graph + ("_" + head if head else "")
        print("%-19s %s  (%s, %.1f MiB)" % (label, os.path.basename(path),
                                            side.get("precision", "?"),
                                            os.path.getsize(path) / 1048576.0))
        built[label] = os.path.basename(path)
    print(json.dumps(built, sort_keys=True))
    return 0
