"""``python -m train recipe coco|flickr8k|flickr30k --root DATA --out runs/NAME``:
from nothing to a verified bundle, phase by phase.

Phases (``PHASES``): download (resumable, checked) -> layout -> ImageNet weights ->
cross-entropy on the frozen encoder's cached features -> joint fine-tuning ->
SCST -> test-split scores -> export (bundle scored per precision) -> verify.
Each finished phase is recorded in ``OUT/recipe.json``; re-running the same
command skips finished phases and resumes the one it stopped in (the training
phases through ``train fit``'s own resume from ``OUT/train/last.pt``). Before
every phase it prints what it does and what it is expected to cost
(``train.recipe.plan``). Every phase runs the project's own commands in-process
(``python -m train fit|eval``, ``python -m export onnx|verify``); ``--dry-run``
prints them.
"""
import contextlib
import io
import json
import os
import sys
import time

from edge.errors import NanocapError
from train.recipe import sources as recipe_data
from train.recipe import plan as recipe_plan
from train.recipe.plan import PHASES

STATE = "recipe.json"


def add_arguments(parser):
    a = parser.add_argument
    a("dataset", choices=list(recipe_data.DATASETS), help="which dataset to train on")
    a("--root", required=True, help="data folder: archives are downloaded (or placed) here "
                                    "and unpacked beside them")
    a("--out", required=True, help="run folder: recipe.json, train/, bundle/, test scores")
    a("--tiny", action="store_true",
      help="the whole recipe at a tiny size (64 px, --weights none, 1 epoch per phase): a test")
    a("--base-url", help="download from this server instead of the original addresses "
                         "(a mirror; also $%s)" % recipe_data.BASE_URL_ENV)
    a("--checksums", metavar="FILE",
      help="md5sum/sha256sum-style file replacing the published checksums of the files it names")
    a("--until", choices=PHASES, help="stop after this phase (e.g. --until layout: data only)")
    a("--dry-run", action="store_true", help="print the phases, their commands and costs; do nothing")
    a("--no-progress", action="store_true", help="no progress bars")


def run(args):
    root, out = os.path.abspath(args.root), os.path.abspath(args.out)
    plan = recipe_plan.Plan(args.dataset, root, out, args.tiny, progress=not args.no_progress)
    state = load_state(out, plan)
    if args.dry_run:
        return dry_run(plan, state)
    checksums = recipe_data.read_checksums(args.checksums) if args.checksums else None
    os.makedirs(out, exist_ok=True)
    save_state(out, state)
    started, phase = time.time(), None
    try:
        for index, phase in enumerate(PHASES):
            if not run_one(index, phase, plan, state, args, checksums):
                return 0
    except KeyboardInterrupt:
        if phase:
            sys.stderr.write("recipe: interrupted in phase %s; re-run the same command to "
                             "resume\n" % phase)
        raise
    print("recipe done in %s: bundle %s, test scores %s"
          % (recipe_plan.duration(time.time() - started), plan.bundle, plan.scores_path))
    print("try it: python -m edge 0 --bundle %s" % plan.bundle)
    return 0


def run_one(index, phase, plan, state, args, checksums):
    """Run ``phase`` unless done earlier, record it in the state file; False to stop here."""
    label = "[%d/%d] %s" % (index + 1, len(PHASES), phase)
    if state["phases"].get(phase, {}).get("done"):
        print("%s: done earlier, skipped" % label)
        return phase != args.until
    plan.paths.update(state.get("paths", {}))
    print("%s: %s; expected %s" % (label, plan.describe(phase), plan.cost(phase)))
    sys.stdout.flush()
    phase_start = time.time()
    result = run_phase(phase, plan, args, checksums)
    state["phases"][phase] = {"done": True, "seconds": round(time.time() - phase_start, 1),
                              "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if isinstance(result, dict):
        state.setdefault("paths", {}).update(result)
    save_state(plan.out, state)
    following = PHASES[index + 1] if index + 1 < len(PHASES) else None
    stop = phase == args.until
    print("%s done in %s%s" % (label, recipe_plan.duration(time.time() - phase_start),
                               "; next: %s" % following if following and not stop else ""))
    if stop:
        print("stopped after %s (--until); re-run without --until to continue" % phase)
    return not stop


def run_phase(phase, plan, args, checksums):
    """Run one phase; returns what it found (``{"data", "images_dir"}`` for layout)."""
    progress = not args.no_progress
    if phase == "download":
        return recipe_data.download_phase(plan.dataset, plan.root, args.base_url, checksums,
                                          progress=progress)
    if phase == "layout":
        return recipe_data.layout_phase(plan.dataset, plan.root, progress=progress)
    if phase == "weights":
        if plan.config["weights"] != "imagenet":
            print("skipped: --weights %s" % plan.config["weights"])
            return None
        from train.model.captioner import build_backbone
        build_backbone(plan.config["backbone"], "imagenet")  # downloads once into ~/.cache/torch
        return None
    debug = ["--debug"] if getattr(args, "debug", False) else []
    for prog, argv in plan.commands(phase):
        output = run_command(prog, argv + debug, phase)
        if phase == "test":
            write_scores(plan.scores_path, output)
    return None


def run_command(prog, argv, phase):
    """Run ``python -m train|export COMMAND ARGS`` in this process (its own entry:
    argument checks, one-line errors); returns its stdout. A non-zero exit stops the
    recipe with one line saying how to resume."""
    from export.__main__ import main as export_main
    from train.__main__ import main as train_main
    main = train_main if prog == "train" else export_main
    print("$ %s" % recipe_plan.shell(prog, argv))
    sys.stdout.flush()
    tee = Tee(sys.stdout)
    with contextlib.redirect_stdout(tee):
        code = main(list(argv))
    if code == 130:
        raise KeyboardInterrupt
    if code:
        raise NanocapError("phase %s failed (python -m %s %s exited %d, said above); fix the cause "
                           "and re-run the same command to resume" % (phase, prog, argv[0], code))
    return tee.getvalue()


class Tee(io.StringIO):
    """A stdout that also keeps what was written (``getvalue()``)."""

    def __init__(self, stream):
        super().__init__()
        self.stream = stream

    def write(self, text):
        self.stream.write(text)
        return super().write(text)

    def flush(self):
        self.stream.flush()

    def isatty(self):
        return getattr(self.stream, "isatty", lambda: False)()


def write_scores(path, output):
    """Store the scores ``train eval`` printed as its last line (one JSON object)."""
    lines = [line for line in output.strip().splitlines() if line.startswith("{")]
    if not lines:
        raise NanocapError("train eval printed no scores")
    scores = json.loads(lines[-1])
    with open(path + ".tmp", "w") as handle:
        json.dump(scores, handle, indent=1, sort_keys=True)
    os.replace(path + ".tmp", path)
    print("test scores written to %s" % path)


def load_state(out, plan):
    """``OUT/recipe.json`` (a new state when absent); refuses an ``--out`` holding
    another dataset's or size's recipe."""
    path = os.path.join(out, STATE)
    fresh = {"dataset": plan.dataset, "tiny": plan.tiny, "root": plan.root, "phases": {}}
    if not os.path.isfile(path):
        return fresh
    try:
        with open(path, "r") as handle:
            state = json.load(handle)
    except ValueError as exc:
        raise NanocapError("%s is not valid JSON (%s): move it away to start again" % (path, exc))
    for key in ("dataset", "tiny", "root"):
        if state.get(key) != fresh[key]:
            raise NanocapError("%s holds a recipe with %s %s, not %s: use another --out"
                               % (path, key, state.get(key), fresh[key]))
    state.setdefault("phases", {})
    return state


def save_state(out, state):
    path = os.path.join(out, STATE)
    with open(path + ".tmp", "w") as handle:
        json.dump(state, handle, indent=1, sort_keys=True)
    os.replace(path + ".tmp", path)


def dry_run(plan, state):
    """Print every phase: done or not, what it runs and its expected cost."""
    plan.paths.update(state.get("paths", {}))
    print("recipe %s%s: data in %s, run in %s" % (plan.dataset, " (tiny)" if plan.tiny else "",
                                                 plan.root, plan.out))
    for index, phase in enumerate(PHASES):
        done = state["phases"].get(phase, {}).get("done")
        print("[%d/%d] %s%s: %s; expected %s" % (index + 1, len(PHASES), phase,
                                                 " (done)" if done else "", plan.describe(phase),
                                                 plan.cost(phase)))
        for prog, argv in plan.commands(phase):
            print("    $ %s" % recipe_plan.shell(prog, argv))
    return 0
