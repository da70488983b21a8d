"""Roofline estimates for a bundle (torch-free arithmetic): a Jetson Nano in
FP16 from its published peaks, and this CPU in fp32 from peaks measured in the
same benchmark run.

Upper-bound estimate, not a measurement: what one caption could cost on a
Nano's GPU if every kernel ran at the chip's published peaks. Per caption::

    compute_ms = FLOPs / 472 GFLOP/s        (FP16 peak: 128 CUDA cores x 2 x
                                              921.6 MHz x 2 for half2)
    memory_ms  = weight bytes / 25.6 GB/s   (64-bit LPDDR4 at 1600 MHz)
    launch_ms  = kernels x LAUNCH_US        (one kernel per ONNX operator that
                                              does work: ``export.floor.operator_counts``)
    estimate   = max(compute_ms, memory_ms) + launch_ms

``LAUNCH_US`` = 5 us per kernel. A batch-1 caption is a chain of small
dependent kernels, so the GPU idles between them for the launch latency:
about 5 us per kernel launch is the figure NVIDIA gives for desktop GPUs
(the reason for CUDA Graphs), and the Nano's 1.43 GHz Cortex-A57 host issues
launches more slowly, not faster; TensorRT's layer fusion lowers the kernel
count below the ONNX operator count, which goes the other way. With peak
FLOP/s and bandwidth for every kernel, and activations not counted, the
result is an optimistic bound: measured Nano rows belong beside it, and land
below it in captions/s.
"""

NANO_FP16 = {"name": "Jetson Nano FP16", "peak_gflops": 472.0, "bandwidth_gbs": 25.6,
             "launch_us": 5.0}
LAUNCH_US = NANO_FP16["launch_us"]


def estimate(flops, weight_bytes, kernels, device=None):
    """``{"compute_ms", "memory_ms", "launch_ms", "roofline_ms", "estimate_ms",
    "captions_per_s", "bound"}`` for one caption on ``device`` (default the
    Nano in FP16). ``bound`` names the largest term."""
    device = device or NANO_FP16
    compute_ms = float(flops) / (device["peak_gflops"] * 1e9) * 1e3
    memory_ms = float(weight_bytes) / (device["bandwidth_gbs"] * 1e9) * 1e3
    launch_ms = int(kernels) * device["launch_us"] / 1e3
    roofline_ms = max(compute_ms, memory_ms)
    total = roofline_ms + launch_ms
    terms = {"compute": compute_ms, "memory": memory_ms, "launch": launch_ms}
    return {"compute_ms": compute_ms, "memory_ms": memory_ms, "launch_ms": launch_ms,
            "kernels": int(kernels), "roofline_ms": roofline_ms, "estimate_ms": total,
            "captions_per_s": 1e3 / total if total > 0 else None,
            "bound": max(terms, key=terms.get)}


def batched(row, batch):
    """``estimate``'s figures for one call of ``batch`` frames, given ``row`` for
    one frame: compute scales with the batch, the weights are read once per
    step for the whole batch and the kernels are launched once per call. Adds
    ``batch`` and ``captions_per_s`` (all the call's captions)."""
    batch = int(batch)
    compute_ms = row["compute_ms"] * batch
    roofline_ms = max(compute_ms, row["memory_ms"])
    total = roofline_ms + row["launch_ms"]
    terms = {"compute": compute_ms, "memory": row["memory_ms"], "launch": row["launch_ms"]}
    return dict(row, batch=batch, compute_ms=compute_ms, roofline_ms=roofline_ms,
                estimate_ms=total, captions_per_s=1e3 * batch / total if total > 0 else None,
                bound=max(terms, key=terms.get))


def nano_rows(model_cost, operators, device=None, batches=(1,)):
    """Estimates for greedy (one graph) and beam (step-wise) captions from the
    benchmark's ``model`` cost and ``operators`` summaries, one row per batch
    size in ``batches`` (``batched``); ``[]`` when either lacks what is needed
    (no torch or onnx on this machine)."""
    flops = (model_cost or {}).get("flops_per_caption") or {}
    fp16 = ((model_cost or {}).get("weight_bytes_per_caption") or {}).get("fp16") or {}
    kernels = (operators or {}).get("kernels_per_caption") or {}
    rows = []
    for decode in ("greedy", "beam"):
        if flops.get(decode) and fp16.get(decode) and kernels.get(decode):
            row = estimate(flops[decode], fp16[decode], kernels[decode], device)
            row.update(decode=decode, device=(device or NANO_FP16)["name"])
            rows.extend(batched(row, batch) for batch in batches)
    return rows


def cpu_rows(model_cost, peak_gflops, matvec_gbs, name="this CPU fp32 (measured peaks)",
             batches=(1,)):
    """The same estimate for the machine the benchmark runs on, greedy only:
    ``peak_gflops`` its measured matrix-multiply peak, ``matvec_gbs`` the rate at
    which ONNX Runtime streams a decoder step's fp32 weights through one batch-1
    MatMul (``edge.bench.system.ort_matvec_gbs``), no launch term (operators are
    function calls on a CPU): a bound no fp32 graph of this model can beat here.
    One row per batch size in ``batches`` (``batched``: a call of B frames reads
    the weights once and computes B captions). Adds ``attainable_gflops``
    (FLOPs / bound) and the inputs. ``[]`` when a figure is missing."""
    flops = ((model_cost or {}).get("flops_per_caption") or {}).get("greedy")
    fp32 = ((model_cost or {}).get("weight_bytes_per_caption") or {}).get("fp32") or {}
    if not (flops and fp32.get("greedy") and peak_gflops and matvec_gbs):
        return []
    device = {"name": name, "peak_gflops": float(peak_gflops),
              "bandwidth_gbs": float(matvec_gbs), "launch_us": 0.0}
    row = estimate(flops, fp32["greedy"], 0, device)
    row.update(decode="greedy", device=name, peak_gflops=device["peak_gflops"],
               bandwidth_gbs=device["bandwidth_gbs"], step_bytes=fp32.get("step"))
    rows = [batched(row, batch) for batch in batches]
    for one in rows:
        one["attainable_gflops"] = float(flops) * one["batch"] / (one["roofline_ms"] * 1e6)
    return rows


def bound_gains(rows):
    """``{(device, decode): {batch: bound captions/s / that at the smallest batch}}``:
    the most a roofline lets batching gain (4.0 at batch 4 when the weights'
    reads dominate, 1.0 when compute does)."""
    rates = {}
    for row in rows:
        rates.setdefault((row["device"], row["decode"]), {})[row.get("batch", 1)] = \
            row["captions_per_s"]
    return dict((key, dict((b, rate / group[min(group)]) for b, rate in group.items()))
                for key, group in rates.items())
