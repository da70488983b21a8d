"""The FPS benchmark: measurement core, skips, agreement, report schema, CLI."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from edge.bench import report as bench_report, system as bench_system
from edge.bench import measure as bench, roofline
from edge.bundle import load_bundle
from edge.errors import NanocapError
from edge.image import list_images, read_image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "benchmark_fps.py")
ROW_KEYS = {"backend", "precision", "decode", "captions_per_s", "latency_ms", "stages_ms",
            "rss_mb", "agreement", "providers", "gflops_per_s"}


@pytest.fixture(scope="module")
def frames(real_data):
    """Four real Flickr8k photos (about 500x375), uint8 BGR."""
    paths = list_images(os.path.join(real_data, "flickr8k", "images"))[:4]
    return [read_image(p) for p in paths]


def test_percentiles_and_agreement():
    lat = bench.percentiles(list(range(1, 101)))
    assert lat["p50"] == pytest.approx(50.5) and lat["p99"] == pytest.approx(99.01)
    assert lat["mean"] == pytest.approx(50.5)
    assert bench.percentiles([])["p95"] is None
    assert bench.agreement({0: "a b", 1: "c", 2: "d"}, {0: "a b", 1: "x", 2: "d"}) == pytest.approx(2 / 3.0)
    assert bench.agreement({5: "a"}, {0: "a"}) is None


def test_parse_list_and_plan():
    assert bench.parse_list("ort-cpu, torch", bench.BACKENDS, "backends") == ["ort-cpu", "torch"]
    with pytest.raises(NanocapError, match="onnx"):
        bench.parse_list("torch,onnx", bench.BACKENDS, "backends")
    combos = bench.plan(["torch", "ort-cpu"], ["fp32", "int8"], ["greedy"])
    # edge rows first; torch runs fp32 only (it is the reference), last
    assert combos == [("ort-cpu", "fp32", "greedy"), ("ort-cpu", "int8", "greedy"),
                      ("torch", "fp32", "greedy")]


class CountingBackend(object):
    """A stand-in that sleeps nothing: counts calls, echoes frame ids as captions."""
    providers = ["fake"]

    def __init__(self):
        self.calls, self.last_stages_ms, self.closed = 0, {}, False

    def caption(self, frames):
        from edge.backends import CaptionResult
        self.calls += 1
        self.last_stages_ms = {"resize": 1.0, "inference": 2.0, "decode": 0.5}
        return [CaptionResult("frame %d" % int(f[0, 0, 0]), [4], 3.5) for f in frames]

    def close(self):
        self.closed = True


def test_time_backend_counts_warmup_apart_and_cycles_frames():
    frames = [np.full((4, 4, 3), i, np.uint8) for i in range(3)]
    backend = CountingBackend()
    row = bench.time_backend(backend, frames, captions=7, warmup=2, batch=2)
    assert backend.calls == 2 + 4                      # ceil(7 / 2) timed calls after warm-up
    assert row["captions"] == 8 and row["captions_per_s"] > 0
    assert row["stages_ms"] == {"resize": 1.0, "inference": 2.0, "decode": 0.5}
    assert row["texts"] == {0: "frame 0", 1: "frame 1", 2: "frame 2"}
    assert row["latency_ms"]["p50"] <= row["latency_ms"]["p99"]


class FakeClock(object):
    """Seconds that advance 1 ms at every reading and when a backend says so."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        value = self.now
        self.now += 0.001
        return value


class ClockedBackend(CountingBackend):
    """Each call takes the next of ``seconds`` on the fake clock (warm-up included)."""

    def __init__(self, clock, seconds):
        CountingBackend.__init__(self)
        self.clock, self.seconds = clock, list(seconds)

    def caption(self, frames):
        self.clock.now += self.seconds.pop(0)
        return CountingBackend.caption(self, frames)


def test_rates_and_percentiles_from_an_injected_clock():
    clock = FakeClock()
    frames = [np.full((4, 4, 3), i, np.uint8) for i in range(3)]
    # two warm-up calls of 100 ms (not counted), then 4 timed calls of 2 frames
    backend = ClockedBackend(clock, [0.1, 0.1, 0.010, 0.020, 0.030, 0.040])
    row = bench.time_backend(backend, frames, captions=8, warmup=2, batch=2, clock=clock)
    # latency = call + the 1 ms reading of t0; the loop spans 4 calls + 9 readings = 109 ms
    assert row["captions"] == 8
    assert row["captions_per_s"] == pytest.approx(8 / 0.109, rel=1e-9)
    lat = row["latency_ms"]                              # 11, 21, 31, 41 ms
    assert lat["mean"] == pytest.approx(26.0) and lat["p50"] == pytest.approx(26.0)
    assert lat["p95"] == pytest.approx(39.5) and lat["p99"] == pytest.approx(40.7)


def test_clocks_locked_reads_sysfs(tmp_path):
    for cpu, (low, high) in enumerate([("1479000", "1479000"), ("102000", "1479000")]):
        d = tmp_path / ("cpu%d" % cpu) / "cpufreq"
        d.mkdir(parents=True)
        (d / "scaling_min_freq").write_text(low)
        (d / "scaling_max_freq").write_text(high)
    assert bench_system.clocks_locked(str(tmp_path)) is False
    (tmp_path / "cpu1" / "cpufreq" / "scaling_min_freq").write_text("1479000")
    assert bench_system.clocks_locked(str(tmp_path)) is True
    assert bench_system.clocks_locked(str(tmp_path / "none")) is None


def test_machine_versions_and_matmul_peak():
    info = bench_system.machine_info()
    assert info["cpu_count"] >= 1 and info["memory_mb"] > 0
    assert bench_system.versions()["onnxruntime"]
    assert bench_system.matmul_peak_gflops(n=128, seconds=0.05) > 0  # a figure, whatever the load
    assert bench_system.matmul_peak_with_threads(1, n=128, seconds=0.05) > 0  # child process


def test_ort_matvec_ceiling_streams_the_step_weights():
    from export.probes import matvec_model, step_matrix_shape
    rows, cols = step_matrix_shape(64, 64 * 96 * 4)
    assert (rows, cols) == (64, 96)
    big, empty = matvec_model(512, 1024), matvec_model(8, 8)
    assert bench_system.ort_best_seconds(big, seconds=0.05) > bench_system.ort_best_seconds(
        empty, seconds=0.05)
    gbs = bench_system.ort_matvec_gbs(big, 4.0 * 512 * 1024, empty, seconds=0.05)
    assert 0.1 < gbs < 10000.0


def test_cpu_roofline_bound_arithmetic():
    cost = {"flops_per_caption": {"greedy": 100e6},
            "weight_bytes_per_caption": {"fp32": {"greedy": 50e6, "step": 2e6}}}
    (row,) = roofline.cpu_rows(cost, peak_gflops=200.0, matvec_gbs=25.0)
    assert row["compute_ms"] == pytest.approx(0.5) and row["memory_ms"] == pytest.approx(2.0)
    assert row["roofline_ms"] == pytest.approx(2.0) and row["launch_ms"] == 0.0
    assert row["bound"] == "memory" and row["captions_per_s"] == pytest.approx(500.0)
    assert row["attainable_gflops"] == pytest.approx(50.0)            # 100 MFLOP in 2 ms
    assert roofline.cpu_rows(cost, 200.0, None) == [] and roofline.cpu_rows({}, 200.0, 25.0) == []
    result = {"backend": "ort-cpu", "precision": "fp32", "decode": "greedy",
              "stages_ms": {"inference": 4.0}}
    text = "\n".join(bench_report.cpu_roofline_lines({"cpu_estimate": [row], "results": [result]}))
    assert "-> >= 2.00 ms, <= 500 captions/s (memory-bound), at most 50.0 GFLOP/s = 25% of" in text
    assert "ort-cpu fp32 greedy inference 4.00 ms = 50% of that bound's speed" in text


def test_cpu_roofline_per_batch_size_and_the_gain_it_allows():
    """A call of B frames reads the weights once and computes B captions: memory-bound
    at batch 1 (2 ms of reads, 0.5 ms of compute), compute-bound at batch 8, so the
    bound lets batch 4 gain 4x and batch 8 no more than that."""
    cost = {"flops_per_caption": {"greedy": 100e6},
            "weight_bytes_per_caption": {"fp32": {"greedy": 50e6, "step": 2e6}}}
    one, two, four, eight = roofline.cpu_rows(cost, 200.0, 25.0, batches=(1, 2, 4, 8))
    assert (two["roofline_ms"], two["bound"]) == (pytest.approx(2.0), "memory")
    assert four["roofline_ms"] == pytest.approx(2.0)                # 2 ms of reads = 2 ms of compute
    assert (eight["roofline_ms"], eight["bound"]) == (pytest.approx(4.0), "compute")
    assert eight["attainable_gflops"] == pytest.approx(200.0)       # 800 MFLOP in 4 ms: the peak
    gains = roofline.bound_gains([one, two, four, eight])[(one["device"], "greedy")]
    assert gains == {1: 1.0, 2: pytest.approx(2.0), 4: pytest.approx(4.0), 8: pytest.approx(4.0)}
    rows = [{"backend": "ort-cpu", "precision": "fp32", "decode": "greedy", "batch": b,
             "captions_per_s": rate, "stages_ms": {"inference": ms}}
            for b, rate, ms in ((1, 100.0, 4.0), (8, 300.0, 8.0))]
    report = {"cpu_estimate": [one, eight], "results": rows}
    text = "\n".join(bench_report.cpu_roofline_lines(report) + bench_report.batch_lines(report))
    assert "greedy, batch 8: matmul 200.0 GFLOP/s" in text
    assert "inference 8.00 ms = 50% of that bound's speed" in text     # batch 8's 4 ms bound
    assert text.count("greedy inference") == 2                       # each row beside its bound
    assert "= 3.00x batch 1 (rooflines allow 4.00x on this CPU fp32" in text


def test_run_plan_measures_skips_and_agrees(tiny_bundle, tiny_checkpoint, frames):
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import benchmark_fps
    bundle = load_bundle(tiny_bundle)
    combos = bench.plan(["torch", "ort-cpu", "ort-cuda", "trt"], ["fp32", "int8"],
                        ["greedy", "beam"])
    opener = benchmark_fps.make_opener(bundle, tiny_checkpoint, 2)
    rows, skipped = bench.run_plan(combos, opener, frames, captions=4, warmup=1)
    bench.add_agreement(rows)
    bench.add_gflops(rows, {"greedy": 1e6, "beam": 3e6})
    measured = set((r["backend"], r["precision"], r["decode"]) for r in rows)
    assert measured == {("ort-cpu", "fp32", "greedy"), ("ort-cpu", "fp32", "beam"),
                        ("torch", "fp32", "greedy"), ("torch", "fp32", "beam")}
    reasons = dict(((s["backend"], s["precision"], s["decode"]), s["reason"]) for s in skipped)
    assert "int8" in reasons[("ort-cpu", "int8", "greedy")]          # tiny bundle is fp32 only
    assert "CUDAExecutionProvider" in reasons[("ort-cuda", "fp32", "greedy")]
    assert "TensorRT" in reasons[("trt", "fp32", "beam")] or "tensorrt" in reasons[("trt", "fp32", "beam")]
    for row in rows:
        assert ROW_KEYS <= set(row) and "texts" not in row
        assert row["captions"] == 4 and row["rss_mb"] > 10
        assert row["reference"] == "torch fp32"
        assert set(row["stages_ms"]) == {"resize", "inference", "decode"}
    ort = [r for r in rows if r["backend"] == "ort-cpu"]
    assert ort[0]["providers"] == ["CPUExecutionProvider"]
    assert all(r["agreement"] == 1.0 for r in ort)        # exported graphs match torch
    for row in rows:          # FLOPs are exact for greedy (T steps); beam stops early
        assert (row["gflops_per_s"] or 0) > 0 if row["decode"] == "greedy" else row["gflops_per_s"] is None


def test_reports_render(tmp_path):
    row = {"backend": "ort-cpu", "precision": "fp32", "decode": "greedy", "captions_per_s": 200.0,
           "latency_ms": {"p50": 5.0, "p95": 6.0, "p99": 7.0}, "rss_mb": 80.0, "agreement": 1.0,
           "stages_ms": {"resize": 0.1, "inference": 4.8, "decode": 0.1}, "gflops_per_s": 50.0}
    ref = dict(row, backend="torch", captions_per_s=25.0, gflops_per_s=6.25)
    report = {"machine": {"cpu": "test cpu", "jetson": {"warnings": ["clocks are not locked"]}},
              "versions": {"onnxruntime": "1"}, "matmul_peak_gflops": 100.0,
              "model": {"name": "m", "params": 2e6, "flops_per_caption": {"greedy": 2.5e8},
                        "max_len": 20},
              "results": [row, ref], "live": {"display_fps": 30.0, "caption_fps": 20.0},
              "skipped": [{"backend": "trt", "precision": "fp32", "decode": "greedy",
                           "reason": "no TensorRT"}]}
    text = bench_report.render_text(report)
    assert "8.00" in text                                        # 200 / 25 captions/s vs torch
    assert "50% of that peak" in text and "skipped trt fp32 greedy: no TensorRT" in text
    assert "WARNING: clocks are not locked" in text
    md = bench_report.render_markdown(report)
    assert md.count("\n| ") == 3 and "| captions/s |" in md
    pytest.importorskip("matplotlib")
    bench_report.write_plot(report, str(tmp_path / "p.png"))
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_nano_roofline_estimate_arithmetic():
    est = roofline.estimate(flops=944e6, weight_bytes=25.6e6, kernels=100)
    assert est["compute_ms"] == pytest.approx(2.0) and est["memory_ms"] == pytest.approx(1.0)
    assert est["launch_ms"] == pytest.approx(100 * roofline.LAUNCH_US / 1e3)
    assert est["estimate_ms"] == pytest.approx(2.0 + 0.5) and est["bound"] == "compute"
    assert est["captions_per_s"] == pytest.approx(400.0)
    cost = {"flops_per_caption": {"greedy": 4.72e6, "beam": 9.44e6},
            "weight_bytes_per_caption": {"fp16": {"greedy": 25.6e6, "beam": 25.6e6}}}
    ops = {"kernels_per_caption": {"greedy": 400, "beam": 100}}
    greedy, beam = roofline.nano_rows(cost, ops)
    assert greedy["decode"] == "greedy" and greedy["bound"] == "launch"
    assert greedy["estimate_ms"] == pytest.approx(1.0 + 2.0)       # weights 1 ms + 400 x 5 us
    assert beam["bound"] == "memory" and roofline.nano_rows(cost, {}) == []
    text = "\n".join(bench_report.cost_lines({"model": cost, "nano_estimate": [greedy]}))
    assert "Jetson Nano FP16 roofline ESTIMATE (upper bound, not measured), greedy" in text
    assert "400 kernels x 5 us = 2.00 ms -> >= 3.00 ms, <= 333 captions/s" in text


def _script(*args):
    proc = subprocess.Popen([sys.executable, SCRIPT] + list(args), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True)
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


def test_cli_writes_json_schema_and_reports_skips(tiny_bundle, tiny_checkpoint, tmp_path):
    out_json, out_md = str(tmp_path / "b.json"), str(tmp_path / "b.md")
    code, out, err = _script("--bundle", tiny_bundle, "--checkpoint", tiny_checkpoint,
                             "--backends", "torch,ort-cpu,ort-cuda,trt", "--precisions",
                             "fp32,int8", "--decode", "greedy", "--frames", "6", "--warmup", "1",
                             "--source", "synthetic://?width=160&height=120",
                             "--live-frames", "10", "--json", out_json, "--markdown", out_md)
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["rows"] == 2 and summary["ort_fp32_vs_torch"] > 0
    report = json.load(open(out_json))
    assert {"machine", "versions", "model", "results"} <= set(report)
    assert report["model"]["params"] > 0
    assert report["model"]["flops_per_caption"]["greedy"] > report["model"]["encoder_flops"]
    weights = report["model"]["weight_bytes_per_caption"]
    assert 2 * weights["fp16"]["greedy"] == weights["fp32"]["greedy"]
    ops = report["operators"]
    # 16 per step (was 33, issue 12) + about 21 around the loop (start token, end mask)
    assert ops["operators_per_step"]["one_graph"] <= 16 + 24.0 / ops["max_len"]
    assert ops["operators_per_step"]["decoder_step"] <= 14
    assert ops["operators_per_caption"]["greedy"] == ops["graphs"]["caption fp32"]["operators"]
    assert [r["decode"] for r in report["nano_estimate"]] == ["greedy", "beam"]
    assert "roofline ESTIMATE (upper bound, not measured)" in out
    (cpu,) = report["cpu_estimate"]
    assert cpu["bandwidth_gbs"] > 0 and cpu["step_bytes"] == weights["fp32"]["step"]
    assert "this CPU fp32 (measured peaks) roofline bound, greedy" in out
    assert 0 < summary["fraction_of_cpu_roofline"]
    assert [r["backend"] for r in report["results"]] == ["ort-cpu", "torch"]
    for row in report["results"]:
        assert ROW_KEYS <= set(row)
        assert set(row["latency_ms"]) >= {"p50", "p95", "p99"}
        assert row["agreement"] == 1.0
    skipped = set((s["backend"], s["precision"]) for s in report["skipped"])
    assert {("ort-cuda", "fp32"), ("trt", "fp32"), ("ort-cpu", "int8")} <= skipped
    assert report["live"]["frames"] == 10 and report["live"]["display_fps"] > 0
    assert "skipped ort-cuda" in out and "| ort-cpu | fp32 | greedy | 1 |" in open(out_md).read()


def test_cli_batches_side_by_side(varied_bundle, real_data, tmp_path):
    """--batch 1,2,4: a row per size, the batched captions equal one frame at a time
    (agreement with the batch-1 row, on a model whose captions differ between the
    photos), aggregate and per-stream rates, the Nano estimate per size (weights
    read once per call)."""
    out_json = str(tmp_path / "b.json")
    photos = os.path.join(real_data, "flickr8k", "images")
    code, out, err = _script("--bundle", varied_bundle, "--backends", "ort-cpu", "--precisions",
                             "fp32", "--decode", "greedy,beam", "--frames", "8", "--warmup", "1",
                             "--batch", "4,1,2", "--source", photos,
                             "--live-frames", "0", "--json", out_json)
    assert code == 0, err
    report = json.load(open(out_json))
    rows = [(r["decode"], r["batch"]) for r in report["results"]]
    assert rows == [("greedy", 1), ("beam", 1), ("greedy", 2), ("beam", 2), ("greedy", 4),
                    ("beam", 4)]
    assert all(r["agreement"] == 1.0 and r["captions"] == 8 for r in report["results"])
    summary = json.loads(out.strip().splitlines()[-1])
    assert set(summary["batch_gain"]) == {"2", "4"} and summary["batch_gain"]["4"] > 0
    assert "batch 4, ort-cpu fp32 greedy:" in out and "per stream" in out
    nano = [(r["decode"], r["batch"]) for r in report["nano_estimate"]]
    assert ("greedy", 4) in nano and ("beam", 1) in nano
    by_batch = dict((r["batch"], r) for r in report["nano_estimate"] if r["decode"] == "greedy")
    assert by_batch[4]["memory_ms"] == by_batch[1]["memory_ms"]          # weights read once
    assert by_batch[4]["captions_per_s"] > by_batch[1]["captions_per_s"]
    assert sorted(r["batch"] for r in report["cpu_estimate"]) == [1, 2, 4]
    assert "batch 4: matmul" in out and "rooflines allow" in out
    code, _, err = _script("--bundle", varied_bundle, "--batch", "1,0")
    assert code == 2 and "--batch" in err and len(err.strip().splitlines()) == 1


def test_cli_bad_arguments_are_one_line(tiny_bundle, tmp_path):
    code, _, err = _script("--bundle", tiny_bundle, "--backends", "ort-cpu,tpu")
    assert code == 2 and "tpu" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = _script("--bundle", str(tmp_path / "missing"))
    assert code == 2 and "bundle directory not found" in err and "Traceback" not in err


def test_load_line_and_busy_machine_wording():
    from edge.bench.load import load_verdict
    quiet = load_verdict(0.4, 1.3, cpus=2, threads=1)     # 1.3 after: 0.3 of it others'
    assert not quiet["busy"] and quiet["limit"] == 1.5
    assert quiet["line"].startswith("load average 0.40 before, 1.30 after, on 2 CPUs, "
                                    "1 thread per engine; quiet enough")
    for before, after in ((3.7, 1.0), (0.5, 5.4)):         # busy before, or after
        busy = load_verdict(before, after, cpus=2, threads=1)
        assert busy["busy"], (before, after)
        assert "BUSY MACHINE" in busy["line"] and "measure the machine, not the code" in busy["line"]
    assert load_verdict(0.6, 2.0, cpus=2, threads=2)["busy"]    # all cores asked: 0.5 is the limit
    assert not load_verdict(None, None, cpus=2, threads=1)["busy"]
    row = {"backend": "ort-cpu", "precision": "fp32", "decode": "greedy", "captions_per_s": 155.0}
    report = {"results": [row, dict(row, backend="torch", captions_per_s=1.0)],
              "load": load_verdict(3.7, 5.4, cpus=2, threads=1)}
    text, md = bench_report.render_text(report), bench_report.render_markdown(report)
    assert "155.00" not in text and "155.00" not in md           # no ratio from a busy run
    assert "BUSY MACHINE" in text and "load average 3.70 before, 5.40 after" in text
    assert md.split("\n")[2].startswith("**Busy machine: these speeds are not a result.**")
    report["load"] = load_verdict(0.2, 0.9, cpus=2, threads=1)
    assert "155.00" in bench_report.render_text(report)           # quiet: the ratio is shown
    assert "Busy" not in bench_report.render_markdown(report)
