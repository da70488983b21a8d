"""Rendering benchmark results: terminal table, markdown, JSON and a bar chart.

Input is the report dict of ``scripts/benchmark_fps.py``::

    {"machine", "versions", "model": {"params", "flops_per_caption",
     "weight_bytes_per_caption", ...}, "operators": {...}, "nano_estimate": [...],
     "results": [rows], "skipped": [...], "live": {...} or None,
     "matmul_peak_gflops": float}
"""
from edge import atomic
from edge.bench import roofline

COLUMNS = (("backend", "backend"), ("precision", "prec"), ("decode", "decode"), ("batch", "batch"),
           ("captions_per_s", "captions/s"), ("speedup", "x torch"),
           ("p50", "p50 ms"), ("p95", "p95 ms"), ("p99", "p99 ms"),
           ("resize", "resize"), ("inference", "infer"), ("decode_ms", "detok"),
           ("rss_mb", "RSS MB"), ("agreement", "agree"), ("gflops_per_s", "GFLOP/s"))


def _fmt(value, digits=1):
    if value is None:
        return "-"
    if isinstance(value, float):
        return "%.*f" % (digits, value)
    return str(value)


def speedups(rows):
    """captions/s of each row divided by the torch fp32 row with the same decode
    and batch size."""
    base = dict(((r["decode"], r.get("batch", 1)), r["captions_per_s"]) for r in rows
                if r["backend"] == "torch" and r["precision"] == "fp32")
    out = []
    for row in rows:
        ref = base.get((row["decode"], row.get("batch", 1)))
        out.append(row["captions_per_s"] / ref if ref and row["captions_per_s"] else None)
    return out


def table_cells(rows, busy=False):
    """Header and string cells, one list per row, in COLUMNS order; ``busy``: the
    machine was too busy for ratios (``edge.bench.load``), the x torch column is "-"."""
    cells = []
    for row, speed in zip(rows, [None] * len(rows) if busy else speedups(rows)):
        lat, stages = row.get("latency_ms") or {}, row.get("stages_ms") or {}
        values = {"speedup": speed, "p50": lat.get("p50"), "p95": lat.get("p95"),
                  "p99": lat.get("p99"), "resize": stages.get("resize"),
                  "inference": stages.get("inference"), "decode_ms": stages.get("decode")}
        line = []
        for key, _ in COLUMNS:
            value = values[key] if key in values else row.get(key)
            digits = 2 if key in ("agreement", "speedup", "resize", "decode_ms") else 1
            line.append(_fmt(value, digits))
        cells.append(line)
    return [title for _, title in COLUMNS], cells


def text_table(rows, busy=False):
    """A fixed-width table for the terminal."""
    header, cells = table_cells(rows, busy)
    widths = [max([len(header[i])] + [len(c[i]) for c in cells]) for i in range(len(header))]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    for line in cells:
        lines.append("  ".join(c.rjust(w) for c, w in zip(line, widths)))
    return "\n".join(lines)


def markdown_table(rows, busy=False):
    """The same table in GitHub markdown."""
    header, cells = table_cells(rows, busy)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for line in cells:
        lines.append("| " + " | ".join(line) + " |")
    return "\n".join(lines)


def summary_lines(report):
    """Model cost, matmul peak, live loop, skipped combinations and warnings."""
    model, lines = report.get("model") or {}, []
    flops = (model.get("flops_per_caption") or {}).get("greedy")
    if model.get("params"):
        lines.append("model: %s, %.2f M parameters, %s GFLOP per greedy caption (T=%s)"
                     % (model.get("name", "?"), model["params"] / 1e6,
                        _fmt(flops / 1e9 if flops else None, 3), model.get("max_len")))
    elif model.get("note"):
        lines.append("model: %s" % model["note"])
    lines.extend(cost_lines(report))
    lines.extend(batch_lines(report))
    peak = report.get("matmul_peak_gflops")
    if peak:
        lines.append("CPU fp32 matmul peak (numpy, %dx%d, %s): %.1f GFLOP/s" % (
            report.get("matmul_n", 1024), report.get("matmul_n", 1024),
            "%s BLAS threads" % report["matmul_threads"] if report.get("matmul_threads")
            else "all BLAS threads", peak))
        for row in report.get("results", []):
            if row.get("gflops_per_s") and row["precision"] == "fp32" and row["backend"] != "torch":
                lines.append("  %s fp32 greedy (one graph, T steps) achieves %.1f GFLOP/s = %.0f%%"
                             " of that peak" % (row["backend"], row["gflops_per_s"],
                                                100.0 * row["gflops_per_s"] / peak))
    lines.extend(cpu_roofline_lines(report))
    settings = report.get("settings") or {}
    if settings:
        lines.append("%s captions per combination after %s warm-up calls, batch %s, %s distinct "
                     "frames from %s, threads %s" % (
                         settings.get("frames"), settings.get("warmup"),
                         ",".join(str(b) for b in settings["batch"])
                         if isinstance(settings.get("batch"), list) else settings.get("batch"),
                         settings.get("distinct_frames"), report.get("source"),
                         settings.get("threads") or "default"))
    if report.get("load"):
        lines.append(report["load"]["line"])
    live = report.get("live")
    if live:
        lines.append("live loop (%s, %s frames, headless): display %s FPS, captions %s/s, "
                     "caption latency p50 %s ms, dropped %s"
                     % (live.get("source"), live.get("frames"), _fmt(live.get("display_fps")),
                        _fmt(live.get("caption_fps")), _fmt(live.get("caption_latency_p50_ms")),
                        live.get("dropped_frames")))
    for (backend, reason), combos in grouped_skips(report.get("skipped", [])):
        lines.append("skipped %s %s: %s" % (backend, ", ".join(combos), reason))
    jetson = (report.get("machine") or {}).get("jetson") or {}
    for warning in jetson.get("warnings", []):
        lines.append("WARNING: %s" % warning)
    return lines


def cpu_roofline_lines(report):
    """This CPU's fp32 roofline bound per batch size and how close the ONNX
    Runtime rows of that batch size come."""
    lines = []
    for est in report.get("cpu_estimate") or []:
        batch = est.get("batch", 1)
        lines.append("%s roofline bound, greedy, batch %d: matmul %.1f GFLOP/s, ONNX Runtime "
                     "matrix-vector %.1f GB/s on a %.2f MB step -> compute %.2f ms, weights %.2f "
                     "ms -> >= %.2f ms, <= %.0f captions/s (%s-bound), at most %.1f GFLOP/s = "
                     "%.0f%% of the matmul peak" % (
                         est["device"], batch, est["peak_gflops"], est["bandwidth_gbs"],
                         (est.get("step_bytes") or 0) / 1e6, est["compute_ms"], est["memory_ms"],
                         est["roofline_ms"], est["captions_per_s"], est["bound"],
                         est["attainable_gflops"],
                         100.0 * est["attainable_gflops"] / est["peak_gflops"]))
        for row in report.get("results", []):
            inference = (row.get("stages_ms") or {}).get("inference")
            if (row["backend"] != "torch" and row["decode"] == "greedy" and inference
                    and row.get("batch", 1) == batch):
                lines.append("  %s %s greedy inference %.2f ms = %.0f%% of that bound's speed"
                             % (row["backend"], row["precision"], inference,
                                100.0 * est["roofline_ms"] / inference))
    return lines


def cost_lines(report):
    """Weights read and operators per caption, and the Nano roofline estimate."""
    model, ops, lines = report.get("model") or {}, report.get("operators") or {}, []
    weights = model.get("weight_bytes_per_caption") or {}
    if weights:
        lines.append("weights read per caption (greedy / beam): " + ", ".join(
            "%s %.1f / %.1f MB" % (p, weights[p]["greedy"] / 1e6, weights[p]["beam"] / 1e6)
            for p in ("fp32", "fp16", "int8") if p in weights))
    per_step, per_caption = ops.get("operators_per_step"), ops.get("operators_per_caption")
    if per_step and per_caption:
        lines.append("ONNX operators: %.1f per step in caption.onnx, %d per greedy caption "
                     "(1 call); decoder_step.onnx %d per step, %d per beam caption (%d calls)"
                     % (per_step["one_graph"], per_caption["greedy"], per_step["decoder_step"],
                        per_caption["beam"], ops["calls_per_caption"]["beam"]))
    elif ops.get("note"):
        lines.append(ops["note"])
    for row in report.get("nano_estimate") or []:
        lines.append("%s roofline ESTIMATE (upper bound, not measured), %s, batch %d: compute "
                     "%.2f ms, weights %.2f ms, %d kernels x %.0f us = %.2f ms -> >= %.2f ms, <= %.0f "
                     "captions/s (%s-bound)" % (
                         row["device"], row["decode"], row.get("batch", 1), row["compute_ms"],
                         row["memory_ms"],
                         row["kernels"], 1e3 * row["launch_ms"] / max(row["kernels"], 1),
                         row["launch_ms"], row["estimate_ms"], row["captions_per_s"], row["bound"]))
    return lines


def batch_lines(report):
    """Per batch size (a call captions one frame of each of B inputs): captions/s
    in aggregate and per stream, call latency, and the gain over batch 1, for
    every backend/precision/decode measured at more than one batch size."""
    groups, lines = {}, []
    bounds = roofline.bound_gains([r for r in (report.get("cpu_estimate") or [])
                                   + (report.get("nano_estimate") or [])
                                   if r.get("decode") == "greedy"])
    for row in report.get("results", []):
        groups.setdefault((row["backend"], row["precision"], row["decode"]), []).append(row)
    for (backend, precision, decode), rows in groups.items():
        single = [r for r in rows if r.get("batch", 1) == 1]
        if len(rows) < 2:
            continue
        base = single[0]["captions_per_s"] if single else None
        for row in sorted(rows, key=lambda r: r.get("batch", 1)):
            batch, rate = row.get("batch", 1), row.get("captions_per_s")
            gain = " = %.2fx batch 1" % (rate / base) if base and rate else ""
            if gain and batch > 1 and decode == "greedy":
                gain += bound_gain_note(bounds, batch)
            lines.append("batch %d, %s %s %s: %s captions/s in all%s, %s per stream, call "
                         "latency p50 %s ms" % (batch, backend, precision, decode,
                                                 _fmt(rate), gain,
                                                 _fmt(rate / batch if rate else None),
                                                 _fmt((row.get("latency_ms") or {}).get("p50"))))
    return lines


def bound_gain_note(bounds, batch):
    """`` (rooflines allow 4.00x on Jetson Nano FP16, 1.56x on this CPU fp32 ...)``:
    the most each greedy roofline in ``bounds`` (``roofline.bound_gains``) lets
    batch ``batch`` gain over batch 1 ("" when there is none)."""
    parts = ["%.2fx on %s" % (group[batch], device) for (device, _), group in sorted(bounds.items())
             if batch in group and 1 in group]
    return " (rooflines allow %s)" % ", ".join(parts) if parts else ""


def grouped_skips(skipped):
    """Skipped combinations grouped by backend and reason, in first-seen order:
    ``[((backend, reason), ["fp32 greedy", ...]), ...]``."""
    groups, order = {}, []
    for skip in skipped:
        key = (skip["backend"], skip["reason"])
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append("%s %s" % (skip["precision"], skip["decode"]))
    return [(key, groups[key]) for key in order]


def render_text(report):
    """The terminal report: table then summary lines."""
    return "\n".join([text_table(report.get("results", []), _busy(report))]
                     + summary_lines(report))


def render_markdown(report):
    """A markdown section: machine line, table, summary bullets."""
    machine = report.get("machine") or {}
    head = "Machine: %s, %s usable CPUs, %s MiB; onnxruntime %s" % (
        machine.get("cpu"), machine.get("cpus_usable", machine.get("cpu_count")),
        machine.get("memory_mb"), (report.get("versions") or {}).get("onnxruntime"))
    bullets = ["- %s" % line.strip() for line in summary_lines(report)]
    warning = (["**Busy machine: these speeds are not a result.** %s." % report["load"]["line"],
                ""] if _busy(report) else [])
    return "\n".join([head, ""] + warning + [markdown_table(report.get("results", []),
                                                            _busy(report)), ""]
                     + bullets) + "\n"


def _busy(report):
    return bool((report.get("load") or {}).get("busy"))


def write_json(report, path):
    atomic.write_json(path, report)


def write_markdown(report, path):
    atomic.write_text(path, render_markdown(report))


def write_plot(report, path):
    """A bar chart of captions/s per combination (matplotlib: optional)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from edge.errors import NanocapError
        raise NanocapError("--plot needs matplotlib: pip install matplotlib")
    rows = report.get("results", [])
    labels = ["%s\n%s %s" % (r["backend"], r["precision"], r["decode"]) for r in rows]
    values = [r["captions_per_s"] or 0.0 for r in rows]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(rows)), 3.5))
    ax.bar(range(len(rows)), values, color="#4a7ab5")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylabel("captions / s")
    ax.set_title("nanocap: %s%s" % ((report.get("machine") or {}).get("cpu") or "",
                                    " (BUSY machine: not a result)" if _busy(report) else ""),
                 fontsize=9)
    for i, v in enumerate(values):
        ax.text(i, v, "%.0f" % v, ha="center", va="bottom", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
