#!/usr/bin/env python3
"""Benchmark a bundle: every backend, precision and decoding side by side.

    python scripts/benchmark_fps.py --bundle DIR [--checkpoint CKPT]
        [--backends torch,ort-cpu,ort-cuda,ort-trt,trt] [--precisions fp32,fp16,int8]
        [--decode greedy,beam] [--frames N] [--warmup N] [--source URI] [--batch 1,2,4,8]
        [--json OUT] [--markdown OUT] [--plot OUT.png]

Combinations that cannot run here are listed as skipped with the reason. The
PyTorch eager reference (``torch``, needs ``--checkpoint``) runs in the same
process on the same frames, so speed-ups are ratios measured in one run. The
measuring is in ``edge.bench.measure``; this file only wires it together. The last
stdout line is one JSON summary object.

Beside the measured rows, for a device we cannot reach from here: FLOPs and
bytes of weights read per caption (per precision, ``train.model.flops``), ONNX
operators per step and per caption (``export.floor.operator_counts``), and a
Jetson Nano FP16 roofline estimate (``edge.bench.roofline``), an upper-bound
estimate, labelled as such; on a Jetson the measured rows sit next to it.
The same roofline for this CPU in fp32 uses two ceilings measured in the run
(the matrix-multiply peak, and ONNX Runtime streaming one decoder step's
weights through a batch-1 MatMul) and says how close each greedy row comes.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from edge.bench import report as bench_report, system as bench_system  # noqa: E402
from edge.bench import measure as bench, roofline  # noqa: E402
from edge.bench.load import load_average, load_verdict, usable_cpus  # noqa: E402
from edge.bundle import load_bundle  # noqa: E402
from edge.errors import NanocapError, run_cli  # noqa: E402

MAX_DISTINCT_FRAMES = 100
MATMUL_N = 1024


def get_parser():
    p = argparse.ArgumentParser(prog="benchmark_fps.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", required=True, help="bundle directory (python -m export onnx)")
    p.add_argument("--checkpoint", help="checkpoint .pt: adds the PyTorch eager reference row")
    p.add_argument("--backends", default=",".join(bench.BACKENDS),
                   help="comma list of %s (default: all; unavailable ones are skipped)"
                   % ",".join(bench.BACKENDS))
    p.add_argument("--precisions", default="fp32,fp16,int8", help="comma list (default: all)")
    p.add_argument("--decode", default="greedy,beam", help="comma list of greedy,beam")
    p.add_argument("--beam-size", type=int, default=3, help="beam width K (default 3)")
    p.add_argument("--frames", type=int, default=100,
                   help="captions measured per combination (default 100)")
    p.add_argument("--warmup", type=int, default=5, help="uncounted warm-up calls (default 5)")
    p.add_argument("--source", default="synthetic://",
                   help="where frames come from: synthetic://, an image folder or a video file")
    p.add_argument("--batch", default="1",
                   help="frames per call, or a comma list of sizes measured one after the other "
                        "(1,2,4,8: one frame of each of B cameras per call; default 1)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for ONNX Runtime and PyTorch alike (default 1: steady "
                   "on a shared machine; 0: all usable cores)")
    p.add_argument("--live-frames", type=int, default=None,
                   help="frames for the end-to-end live-loop row (default --frames; 0: skip it)")
    p.add_argument("--json", help="write the whole report as JSON here")
    p.add_argument("--markdown", help="write the table as markdown here")
    p.add_argument("--plot", help="write a bar chart PNG here (needs matplotlib)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def load_frames(source, count):
    """Up to ``count`` distinct ``uint8`` BGR frames from ``source`` (any size);
    ``synthetic://`` is read unpaced here (pacing is for the live row)."""
    from edge.sources import open_source, parse_uri
    spec = parse_uri(source)
    uri = source
    if spec.kind == "synthetic" and "pace" not in spec.options:
        uri += ("&" if "?" in source else "?") + "pace=0"
    src, frames = open_source(uri), []
    try:
        while len(frames) < min(count, MAX_DISTINCT_FRAMES):
            frame = src.read()
            if frame is None:
                break
            frames.append(frame)
    finally:
        src.close()
    if not frames:
        raise NanocapError("no frames could be read from %s" % source)
    return frames


def make_opener(bundle, checkpoint, beam_size, threads=None):
    """``opener(name, precision, decode) -> backend`` for ``edge.bench.measure.run_plan``."""
    def opener(name, precision, decode):
        if name != "torch":
            return bench.open_edge_backend(bundle, name, precision, decode, beam_size, threads)
        if not checkpoint:
            raise bench.Skip("the PyTorch reference needs --checkpoint")
        try:
            from train.evaluation.torch_backend import TorchBackend
        except ImportError as exc:
            raise bench.Skip("PyTorch is not installed here (%s)" % exc)
        return TorchBackend(checkpoint, decode=decode, beam_size=beam_size, threads=threads)
    return opener


def model_cost(bundle, beam_size):
    """Parameters and FLOPs per caption (needs torch; else a note)."""
    try:
        from train.model.flops import cost_from_config
    except ImportError as exc:
        return {"params": None, "flops_per_caption": None,
                "note": "FLOPs not counted: PyTorch is not installed (%s)" % exc}
    return cost_from_config(bundle.meta["model"], max_len=bundle.max_len, beam_size=beam_size)


def operator_summary(bundle, beam_size):
    """Operators in the bundle's graphs (needs onnx; else a note): per graph and
    precision, per decoder step of the one-graph caption ((caption - encoder) / T),
    and per caption: greedy = ``caption.onnx`` (one call), beam = ``encoder`` +
    T x K-row ``decoder_step`` calls (no early stop). ``kernels`` leaves out
    shape-only operators (``export.floor.operator_counts``)."""
    try:
        from export.floor import operator_counts
    except ImportError as exc:
        return {"note": "operators not counted: onnx is not installed (%s)" % exc}
    graphs = {}
    for graph in ("caption", "encoder", "decoder_step"):
        for precision in bundle.precisions(graph):
            graphs["%s %s" % (graph, precision)] = operator_counts(
                bundle.graph_path(graph, precision))
    caption, encoder = graphs.get("caption fp32"), graphs.get("encoder fp32")
    step = graphs.get("decoder_step fp32")
    if not (caption and encoder and step):
        return {"graphs": graphs}
    t = float(bundle.max_len)
    out = {"graphs": graphs, "max_len": bundle.max_len, "beam_size": beam_size,
           "calls_per_caption": {"greedy": 1, "beam": 1 + bundle.max_len}}
    for key, name in (("operators", "operators"), ("kernels", "kernels")):
        out["%s_per_step" % key] = {"one_graph": (caption[name] - encoder[name]) / t,
                                    "decoder_step": step[name]}
        out["%s_per_caption" % key] = {"greedy": caption[name],
                                       "beam": encoder[name] + bundle.max_len * step[name]}
    return out


def matvec_ceiling(bundle, cost, threads):
    """GB/s at which ONNX Runtime's MatMul streams one greedy decoder step's fp32
    weights, per-call cost excluded (``export.probes`` + ``edge.bench.system.
    ort_matvec_gbs``); None without onnx, onnxruntime or the model's cost."""
    step = (((cost or {}).get("weight_bytes_per_caption") or {}).get("fp32") or {}).get("step")
    try:
        from export.probes import matvec_model, step_matrix_shape
    except ImportError:
        return None
    if not step:
        return None
    rows, cols = step_matrix_shape(bundle.meta["model"].get("hidden", 512), step)
    model, empty = matvec_model(rows, cols), matvec_model(8, 8)
    try:  # the better of two 1-second tries, like the matmul peak (before and after the rows)
        rates = [bench_system.ort_matvec_gbs(model, 4.0 * rows * cols, empty, threads, 1.0)
                 for _ in range(2)]
    except NanocapError:
        return None
    return max([r for r in rates if r] or [None])


def live_row(bundle, source, frames):
    """The end-to-end live loop (``edge.live.run_live``: capture thread ->
    async captioner -> overlay, headless, no recording) for ``frames`` frames,
    a video file paced like a camera (``--realtime``); backend auto at the live
    captioner's default precision (TensorRT: the GPU's fastest; ONNX Runtime:
    fp32), greedy, the scene gate off (caption whenever the captioner is free, so
    ``caption_fps`` is the captioner's throughput in the loop)."""
    from edge.backends import open_backend
    from edge.gate import SceneGate
    from edge.live import run_live
    from edge.sources import open_source, parse_uri
    src = open_source(source)
    backend = open_backend(bundle, "auto", None, "greedy")
    realtime = parse_uri(source).kind == "file"     # cameras and synthetic:// pace themselves
    summary = run_live(src, backend, sinks=(), log=None, realtime=realtime, max_frames=frames,
                       message=lambda text: None, gate=SceneGate(enabled=False))
    lat = summary.get("caption_latency_ms") or {}
    return {"source": source, "frames": summary.get("frames"),
            "display_fps": summary.get("display_fps"), "caption_fps": summary.get("caption_fps"),
            "caption_latency_p50_ms": lat.get("p50"), "caption_latency_p95_ms": lat.get("p95"),
            "dropped_frames": summary.get("dropped_frames"), "backend": summary.get("backend"),
            "providers": summary.get("providers")}


def _ratio(top, bottom):
    return top / bottom if top and bottom else None


def headline(report):
    """Key ratios for the last stdout line (and the demo's report)."""
    results = report["results"]
    smallest = min([r.get("batch", 1) for r in results] or [1])
    rows = dict(((r["backend"], r["precision"], r["decode"]), r) for r in results
                if r.get("batch", 1) == smallest)
    torch, ort, int8 = (rows.get((name, precision, "greedy"), {}) for name, precision in
                        (("torch", "fp32"), ("ort-cpu", "fp32"), ("ort-cpu", "int8")))
    rate = lambda row: row.get("captions_per_s")          # noqa: E731
    p50 = lambda row: (row.get("latency_ms") or {}).get("p50")  # noqa: E731
    peak, cpu = report.get("matmul_peak_gflops"), report.get("cpu_estimate")
    return {"rows": len(rows), "skipped": len(report["skipped"]),
            "ort_fp32_vs_torch": _ratio(rate(ort), rate(torch)),
            "ort_fp32_vs_torch_p50_latency": _ratio(p50(torch), p50(ort)),
            "int8_vs_fp32": _ratio(rate(int8), rate(ort)),
            "int8_vs_torch": _ratio(rate(int8), rate(torch)),
            "ort_fp32_gflops_per_s": ort.get("gflops_per_s"), "matmul_peak_gflops": peak,
            "fraction_of_peak": _ratio(ort.get("gflops_per_s"), peak),
            "fraction_of_cpu_roofline": _ratio(cpu_bound_ms(cpu, smallest),
                                               (ort.get("stages_ms") or {}).get("inference")),
            "live_display_fps": (report.get("live") or {}).get("display_fps"),
            "busy": (report.get("load") or {}).get("busy"),
            "batch_gain": batch_gain(results, smallest)}


def cpu_bound_ms(cpu_rows, batch):
    """This CPU's roofline bound (ms per call) at ``batch``; None without one."""
    rows = [r["roofline_ms"] for r in cpu_rows or [] if r.get("batch", 1) == batch]
    return rows[0] if rows else None


def batch_gain(results, smallest):
    """``{batch: aggregate captions/s / that at the smallest batch}`` for ONNX
    Runtime fp32 greedy (the captioner's multi-camera path); {} with one size."""
    rates = dict((r.get("batch", 1), r["captions_per_s"]) for r in results
                 if (r["backend"], r["precision"], r["decode"]) == ("ort-cpu", "fp32", "greedy"))
    base = rates.get(smallest)
    return dict((str(b), _ratio(rate, base)) for b, rate in sorted(rates.items())
                if b != smallest and base)


def main(argv):
    args = get_parser().parse_args(argv)
    batches = bench.parse_batches(args.batch)
    if args.frames < 1 or args.warmup < 0 or args.threads < 0:
        raise NanocapError("--frames must be >= 1, --warmup and --threads >= 0")
    args.threads = args.threads or usable_cpus()
    bundle = load_bundle(args.bundle)
    combos = bench.plan(bench.parse_list(args.backends, bench.BACKENDS, "backends"),
                        bench.parse_list(args.precisions, ("fp32", "fp16", "int8"), "precisions"),
                        bench.parse_list(args.decode, bench.DECODES, "decode"))
    machine = bench_system.machine_info()
    for warning in (machine.get("jetson") or {}).get("warnings", []):
        sys.stderr.write("WARNING: %s\n" % warning)
    frames = load_frames(args.source, args.frames)
    before = (machine.get("loadavg") or [None])[0]
    print("load average before: %s (%d usable CPUs; %d thread%s for each engine)" % (
        "?" if before is None else "%.2f" % before, usable_cpus(), args.threads,
        "" if args.threads == 1 else "s"), flush=True)
    print("benchmark: %d combinations, %d captions each (%d distinct frames from %s, "
          "%dx%d), warm-up %d, batch %s" % (len(combos), args.frames, len(frames), args.source,
                                            frames[0].shape[1], frames[0].shape[0], args.warmup,
                                            ",".join(map(str, batches))), flush=True)
    peak = bench_system.matmul_peak_with_threads(args.threads, n=MATMUL_N)
    rows, skipped = [], []
    for batch in batches:
        got, missed = bench.run_plan(
            combos, make_opener(bundle, args.checkpoint, args.beam_size, args.threads), frames,
            args.frames, args.warmup, batch,
            progress=lambda text: print("  measuring %s batch %d" % (text, batch), flush=True))
        rows.extend(got)
        skipped.extend(m for m in missed if batch == batches[0])
    live_frames = args.frames if args.live_frames is None else args.live_frames
    live = live_row(bundle, args.source, live_frames) if live_frames > 0 else None
    cost = model_cost(bundle, args.beam_size)
    operators = operator_summary(bundle, args.beam_size)
    bench.add_agreement(rows)
    bench.add_gflops(rows, cost.get("flops_per_caption"))
    peak = max(peak or 0.0, bench_system.matmul_peak_with_threads(args.threads, n=MATMUL_N)
               or 0.0) or None
    machine["loadavg_end"] = load_average()
    report = {"machine": machine, "versions": bench_system.versions(), "model": cost,
              "bundle": os.path.abspath(args.bundle), "source": args.source,
              "settings": {"frames": args.frames, "warmup": args.warmup, "batch": batches,
                           "distinct_frames": len(frames), "beam_size": args.beam_size,
                           "threads": args.threads},
              "matmul_peak_gflops": peak,
              "matmul_n": MATMUL_N, "matmul_threads": args.threads,
              "results": rows, "skipped": skipped, "live": live, "operators": operators,
              "nano_estimate": roofline.nano_rows(cost, operators, batches=batches),
              "cpu_estimate": roofline.cpu_rows(cost, peak,
                                                matvec_ceiling(bundle, cost, args.threads),
                                                batches=batches)}
    report["load"] = load_verdict(before, (machine["loadavg_end"] or [None])[0],
                                  usable_cpus(), args.threads)
    report["summary"] = headline(report)
    print(bench_report.render_text(report))
    if args.json:
        bench_report.write_json(report, args.json)
    if args.markdown:
        bench_report.write_markdown(report, args.markdown)
    if args.plot:
        bench_report.write_plot(report, args.plot)
    print(json.dumps(report["summary"], sort_keys=True))
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(run_cli(main, prog="benchmark_fps.py"))
