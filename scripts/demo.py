#!/usr/bin/env python3
"""From nothing to a captioned video, on a laptop CPU: ``python scripts/demo.py``.

    python scripts/demo.py [--out DIR] [--minutes M] [--tiny]

Runs the real command-line tools one after another (their own progress bars
show), reading the JSON object each prints as its last line:

 1. ``python -m train synth``     a synthetic shapes dataset (Karpathy format)
 2. ``python -m train fit``       train MobileNetV3-small + GRU from scratch
 3. ``python -m train eval``      BLEU / METEOR / ROUGE-L / CIDEr on the test split
 4. ``python -m export onnx``     the bundle, fp32 + int8
 5. ``python -m export verify``   PyTorch vs ONNX Runtime captions, per precision
 6. a video of moving scenes, then ``python -m edge VIDEO live.mp4 --realtime``
 7. ``scripts/benchmark_fps.py``  captions/s per backend and precision, PyTorch and
    ONNX Runtime on the same ``--threads``, with the load average before and after
    (a busy machine's ratios are flagged, not reported as the result)
 8. ``DIR/report.md``            scores, parity, FPS, frames of the annotated video

``DIR`` (default ``demo-out/``) ends up holding ``bundle/``, ``live.mp4``,
``captions.jsonl``, ``frames/*.png`` and ``report.md``. ``--tiny`` shrinks
everything (tiny model and data, seconds per stage) for a smoke test.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import cv2
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from edge.errors import NanocapError, run_cli  # noqa: E402

# synthetic images and their side, model input side, fit arguments (H1's 10-minute
# recipe: GRU-256, batch 32, lr 2e-3; --minutes ends it), images scored and verified,
# scenes in the video and their length, benchmark captions and decodings, training minutes
FULL = {"images": 3000, "size": 128, "image_size": 96, "limit": 300, "scenes": 8, "scene_s": 2.0,
        "fit": ["--hidden", "256", "--embed", "128", "--batch-size", "32", "--lr", "2e-3",
                "--epochs", "100"],
        "bench_frames": 50, "decode": "greedy,beam", "minutes": 10.0}
TINY = {"images": 60, "size": 48, "image_size": 48, "limit": 6, "scenes": 2, "scene_s": 0.3,
        "fit": ["--hidden", "32", "--embed", "16", "--epochs", "1", "--batch-size", "16"],
        "bench_frames": 5, "decode": "greedy", "minutes": 0.2}
METRICS = ("Bleu_1", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")


class Progress(object):
    """Stage banners with elapsed time; remembers each stage's duration."""

    def __init__(self, total):
        self.start, self.total, self.index, self.times = time.time(), total, 0, []

    def stage(self, title):
        self.index += 1
        self.times.append([title, time.time()])
        print("\n==> [%d/%d] %s   (elapsed %s)" % (self.index, self.total, title,
                                                   self.elapsed()), flush=True)

    def elapsed(self):
        seconds = int(time.time() - self.start)
        return "%d:%02d" % (seconds // 60, seconds % 60)

    def durations(self):
        ends = [t for _, t in self.times[1:]] + [time.time()]
        return [(title, end - begin) for (title, begin), end in zip(self.times, ends)]


def run_tool(args, log_path):
    """Run ``[python] + args`` from the repository root, echoing its stdout live
    (stderr, with the progress bars, goes straight to the terminal). Returns the
    last stdout line parsed as JSON, or None when it is not JSON."""
    cmd = [sys.executable] + list(args)
    print("    $ %s" % " ".join(a if " " not in a else repr(a) for a in cmd[1:]), flush=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, universal_newlines=True,
                            env=env)
    last = None
    with open(log_path, "a") as log:
        log.write("$ %s\n" % " ".join(cmd))
        for line in proc.stdout:
            sys.stdout.write("    " + line)
            sys.stdout.flush()
            log.write(line)
            if line.strip():
                last = line.strip()
    if proc.wait() != 0:
        raise NanocapError("stage failed (exit %d): %s (output in %s)"
                           % (proc.returncode, " ".join(args[:3]), log_path))
    try:
        return json.loads(last) if last else None
    except ValueError:
        return None


# -- the input video: training-style scenes whose objects drift ----------------

def scene_video(path, scenes, seconds, size=480, fps=30.0, seed=7):
    """Write ``scenes`` synthetic scenes (``train.data.synth`` shapes on its
    backgrounds), each ``seconds`` long, objects drifting together so their
    relation (and so the true caption) holds. Returns the true captions."""
    from train.data.synth import background, describe, draw, place_pair, public, random_object
    rng = np.random.RandomState(seed)
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (size, size))
    if not writer.isOpened():
        raise NanocapError("cannot write %s (OpenCV without an mp4 encoder?)" % path)
    truth, frames_per_scene = [], max(1, int(round(seconds * fps)))
    for scene in range(scenes):
        base = background(rng, size)
        if scene % 2 == 0:
            objects = [random_object(rng, size)]
            r = objects[0]["radius"]
            centres = [rng.uniform(r * 1.3, size - r * 1.3, 2)]
            relation = None
        else:
            relation = ("horizontal", "vertical")[(scene // 2) % 2]
            objects = [random_object(rng, size), random_object(rng, size)]
            centres = [np.array(c) for c in place_pair(rng, size, objects[0]["radius"],
                                                       objects[1]["radius"], relation)]
        drift = rng.uniform(-0.04, 0.04, 2) * size / frames_per_scene
        truth.append({"from_frame": scene * frames_per_scene,
                      "caption": describe([public(o) for o in objects], relation)[0]})
        for i in range(frames_per_scene):
            frame = base.copy()
            for obj, centre in zip(objects, centres):
                draw(frame, obj, np.asarray(centre) + drift * i)
            writer.write(frame)
    writer.release()
    return truth


def save_frames(video, out_dir, indices):
    """PNG frames of ``video`` at ``indices``; returns their paths relative to
    the report's folder."""
    os.makedirs(out_dir, exist_ok=True)
    capture, saved, index = cv2.VideoCapture(video), [], 0
    wanted = set(indices)
    while wanted:
        ok, frame = capture.read()
        if not ok:
            break
        if index in wanted:
            name = "frame_%05d.png" % index
            cv2.imwrite(os.path.join(out_dir, name), frame)
            saved.append((index, os.path.join(os.path.basename(out_dir), name)))
            wanted.discard(index)
        index += 1
    capture.release()
    return saved


def read_log(path):
    """Caption log lines (JSON objects) of ``python -m edge --log``."""
    if not os.path.isfile(path):
        return []
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def caption_at(log, frame):
    """The caption shown at ``frame``: the newest logged caption of a frame <= it
    that was shown (log lines carry ``shown``: the scene gate holds some back)."""
    shown = [c for c in log if c.get("frame", 0) <= frame and c.get("shown", True)]
    return shown[-1]["caption"] if shown else None


# -- the report ----------------------------------------------------------------

def _f(value, digits=3):
    return "-" if value is None else ("%.*f" % (digits, value) if isinstance(value, float)
                                      else str(value))


def scores_section(scores, limit):
    lines = ["## Scores (test split, greedy, up to %d images)" % limit, ""]
    if not scores:
        return lines + ["Not measured (see demo.log).", ""]
    lines += ["| " + " | ".join(METRICS) + " |", "|" + "---|" * len(METRICS),
              "| " + " | ".join(_f(scores.get(m)) for m in METRICS) + " |", ""]
    extra = [k for k in sorted(scores) if k not in METRICS and not isinstance(scores[k], dict)]
    if extra:
        lines += ["Also: " + ", ".join("%s %s" % (k, _f(scores[k])) for k in extra), ""]
    return lines


def parity_section(parity):
    lines = ["## Parity: PyTorch vs the exported graphs (ONNX Runtime)", ""]
    if not parity:
        return lines + ["Not measured.", ""]
    lines += ["| precision | caption_match | token_match | max_abs_logit_diff |",
              "|---|---|---|---|"]
    for precision in ("fp32", "fp16", "int8"):
        if isinstance(parity.get(precision), dict):
            p = parity[precision]
            lines.append("| %s | %s | %s | %s |" % (precision, _f(p.get("caption_match")),
                                                    _f(p.get("token_match")),
                                                    _f(p.get("max_abs_logit_diff"), 5)))
    return lines + [""]


def live_section(live, truth, frames, log):
    lines = ["## Live captioner on a generated video (`--realtime`, as a camera delivers it)",
             "", "Annotated video: [live.mp4](live.mp4); caption log: "
             "[captions.jsonl](captions.jsonl) (%d captions)." % len(log), ""]
    if live:
        lat = live.get("caption_latency_ms") or {}
        lines += ["display %s FPS, captions %s/s, caption latency p50 %s ms / p95 %s ms, "
                  "%s frames shown, %s stale frames dropped; backend %s (%s)."
                  % (_f(live.get("display_fps"), 1), _f(live.get("caption_fps"), 1),
                     _f(lat.get("p50"), 1), _f(lat.get("p95"), 1), live.get("frames"),
                     live.get("dropped_frames"), live.get("backend"),
                     ", ".join(live.get("providers") or [])), ""]
    for index, rel in frames:
        scene = [t for t in truth if t["from_frame"] <= index][-1]
        lines += ["![frame %d](%s)" % (index, rel), "",
                  "frame %d: true scene \"%s\"; caption shown \"%s\"" % (
                      index, scene["caption"], caption_at(log, index) or "(none yet)"), ""]
    return lines


def write_report(out, facts):
    """``DIR/report.md`` from the facts gathered by the stages."""
    bench_md = os.path.join(out, "benchmark.md")
    lines = ["# nanocap demo report", "",
             "Generated by `python scripts/demo.py` on %s in %s (training budget %s min)."
             % (time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), facts["elapsed"],
                facts["minutes"]), "",
             "Bundle: [bundle/](bundle/) (fp32 + int8). Data: synthetic shapes, %d images; "
             "model input %d px, trained from scratch (`--weights none`)."
             % (facts["images"], facts["size"]),
             ""]
    lines += scores_section(facts.get("scores"), facts["limit"])
    lines += parity_section(facts.get("parity"))
    lines += live_section(facts.get("live"), facts["truth"], facts["frames"], facts["log"])
    lines += ["## Speed (`scripts/benchmark_fps.py`)", ""]
    if os.path.isfile(bench_md):
        with open(bench_md) as handle:
            lines += [handle.read(), ""]
    if os.path.isfile(os.path.join(out, "benchmark.png")):
        lines += ["![captions per second](benchmark.png)", ""]
    lines += ["## Stages", "", "| stage | seconds |", "|---|---|"]
    lines += ["| %s | %.0f |" % (title, seconds) for title, seconds in facts["durations"]]
    path = os.path.join(out, "report.md")
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


# -- main ------------------------------------------------------------------------

def get_parser():
    p = argparse.ArgumentParser(prog="demo.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="demo-out", help="output folder (default demo-out/)")
    p.add_argument("--minutes", type=float, default=None,
                   help="training budget in minutes (default 10; --tiny 0.2)")
    p.add_argument("--tiny", action="store_true", help="tiny everything: a smoke test")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for PyTorch and ONNX Runtime alike in the benchmark "
                        "(default 1; 0: all usable cores)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def main(argv):
    args = get_parser().parse_args(argv)
    cfg = TINY if args.tiny else FULL
    minutes = args.minutes if args.minutes is not None else cfg["minutes"]
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    data, run_dir, bundle = (os.path.join(out, n) for n in ("data", "run", "bundle"))
    log_path, ckpt = os.path.join(out, "demo.log"), os.path.join(out, "run", "best.pt")
    dataset = os.path.join(data, "dataset.json")
    progress, facts = Progress(8), {"minutes": minutes, "limit": cfg["limit"]}
    facts.update(images=cfg["images"], size=cfg["image_size"])

    progress.stage("synthetic dataset: %d images at %d px" % (cfg["images"], cfg["size"]))
    run_tool(["-m", "train", "synth", data, "--images", str(cfg["images"]),
              "--size", str(cfg["size"])], log_path)
    progress.stage("training from scratch for up to %.1f min" % minutes)
    run_tool(["-m", "train", "fit", "--data", dataset, "--out", run_dir, "--weights", "none",
              "--image-size", str(cfg["image_size"]), "--minutes", str(minutes)] + cfg["fit"],
             log_path)
    progress.stage("evaluation on the test split (pycocoevalcap)")
    facts["scores"] = run_tool(["-m", "train", "eval", "--checkpoint", ckpt, "--data", dataset,
                                "--split", "test", "--limit", str(cfg["limit"]),
                                "--results", os.path.join(out, "results.json")], log_path)
    progress.stage("export the bundle (fp32 + int8)")
    run_tool(["-m", "export", "onnx", "--checkpoint", ckpt, "--out", bundle,
              "--precision", "fp32,int8", "--calib-images", os.path.join(data, "images")],
             log_path)
    progress.stage("parity: PyTorch vs ONNX Runtime")
    facts["parity"] = run_tool(["-m", "export", "verify", "--checkpoint", ckpt, "--bundle",
                                bundle, "--data", dataset, "--split", "test",
                                "--limit", str(cfg["limit"])], log_path)
    progress.stage("live captioner on a generated video of moving scenes")
    video, live_mp4 = os.path.join(out, "scenes.mp4"), os.path.join(out, "live.mp4")
    captions = os.path.join(out, "captions.jsonl")
    facts["truth"] = scene_video(video, cfg["scenes"], cfg["scene_s"])
    print("    wrote %s (%d scenes, %.1f s each)" % (video, cfg["scenes"], cfg["scene_s"]))
    facts["live"] = run_tool(["-m", "edge", video, live_mp4, "--bundle", bundle, "--headless",
                              "--realtime", "--log", captions], log_path)
    facts["log"] = read_log(captions)
    per_scene = max(1, int(round(cfg["scene_s"] * 30)))
    picks = [s * per_scene + per_scene * 3 // 4 for s in range(0, cfg["scenes"], 2)][:4]
    facts["frames"] = save_frames(live_mp4, os.path.join(out, "frames"), picks)
    progress.stage("benchmark: backends and precisions side by side")
    run_tool(["scripts/benchmark_fps.py", "--bundle", bundle, "--checkpoint", ckpt,
              "--backends", "torch,ort-cpu,ort-cuda,ort-trt,trt", "--precisions", "fp32,int8",
              "--decode", cfg["decode"], "--frames", str(cfg["bench_frames"]), "--source", video,
              "--threads", str(args.threads),
              "--json", os.path.join(out, "benchmark.json"),
              "--markdown", os.path.join(out, "benchmark.md"),
              "--plot", os.path.join(out, "benchmark.png")], log_path)
    progress.stage("report")
    facts["durations"], facts["elapsed"] = progress.durations(), progress.elapsed()
    report = write_report(out, facts)
    print("\ndone in %s: %s" % (progress.elapsed(), report))
    print(json.dumps({"report": report, "bundle": bundle, "video": live_mp4, "log": captions,
                      "elapsed": progress.elapsed(),
                      "CIDEr": (facts.get("scores") or {}).get("CIDEr"),
                      "display_fps": (facts.get("live") or {}).get("display_fps")}))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, prog="demo.py"))
