#!/usr/bin/env bash
# GPU check of the training side, a few minutes on a CUDA machine:
#   scripts/gpu_check.sh [--device cuda|cuda:N|cpu] [--work DIR] [--keep]
# On a synthetic set it trains fc and att with AMP (train fit enables autocast
# and a GradScaler on CUDA) reading `train prepare`'s file, runs one SCST epoch,
# trains a frozen-encoder att run from the feature cache, evaluates, exports
# from the CUDA checkpoint, verifies the fp32 bundle at 1.00 caption agreement
# with `python -m export verify`, and runs scripts/benchmark_train.py.
# Without CUDA it stops at once, non-zero. `--device cpu` is a dry run of the
# same steps, smaller, for machines without a GPU (it proves nothing about CUDA).
set -euo pipefail

DEVICE=cuda
WORK=""
KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --work) WORK="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
say() { echo "== gpu_check: $*"; }
fail() { echo "gpu_check.sh: FAILED: $*" >&2; exit 1; }

if [ "$DEVICE" = cpu ]; then
  say "DRY RUN on the CPU (--device cpu): nothing here is checked on CUDA"
  IMAGES=120; SIZE=64; EPOCHS=1; BENCH="--batches 2 --workers 0,1 --max-images 64 --image-size 64 --hidden 64"
else
  "$PY" - "$DEVICE" <<'EOF' || fail "no usable CUDA device ($DEVICE): this check needs a GPU and CUDA PyTorch"
import sys
try:
    import torch
except ImportError:
    sys.exit("%s has no torch: pip install -e \".[train]\" with CUDA PyTorch (or set PYTHON)"
             % sys.executable)
if not torch.cuda.is_available():
    sys.exit("torch %s sees no CUDA device" % torch.__version__)
index = torch.device(sys.argv[1]).index or 0
if index >= torch.cuda.device_count():
    sys.exit("%s: only %d CUDA devices" % (sys.argv[1], torch.cuda.device_count()))
print("== gpu_check: %s, torch %s, CUDA %s" % (torch.cuda.get_device_name(index), torch.__version__,
                                              torch.version.cuda))
EOF
  IMAGES=2000; SIZE=224; EPOCHS=2; BENCH="--batches 20 --workers 0,4,8 --max-images 2000 --image-size 224"
fi

if [ -z "$WORK" ]; then WORK=$(mktemp -d); fi
if [ "$KEEP" = 0 ]; then trap 'rm -rf "$WORK"' EXIT; fi
say "work folder $WORK; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
DEVFLAG=()
if "$PY" -m train fit --help | grep -q -- "--device"; then DEVFLAG=(--device "$DEVICE"); fi

say "synthetic set: $IMAGES images"
"$PY" -m train synth "$WORK/syn" --images "$IMAGES" --size 256 --scenes binding --format jpg
DATA="$WORK/syn/dataset.json"
"$PY" -m train prepare "$DATA" --image-size "$SIZE" --out "$WORK/prepared" --no-progress

COMMON=(--data "$DATA" --weights none --image-size "$SIZE" --min-count 1 --no-progress
        --val-images 50 --batch-size 32 "${DEVFLAG[@]}")
for DEC in fc att; do
  say "train $DEC: $EPOCHS joint epochs (AMP on CUDA) from the prepared file, then 1 SCST epoch"
  "$PY" -m train fit "${COMMON[@]}" --out "$WORK/run-$DEC" --decoder "$DEC" --epochs "$EPOCHS" \
    --prepared "$WORK/prepared" --scst-epochs 1
  "$PY" - "$WORK/run-$DEC/log.jsonl" <<'EOF' || fail "$DEC: the log lacks an SCST epoch"
import json, sys
phases = [json.loads(line)["phase"] for line in open(sys.argv[1])]
assert phases[-1] == "scst", phases
EOF
  say "evaluate $DEC (test split)"
  "$PY" -m train eval --checkpoint "$WORK/run-$DEC/best.pt" --data "$DATA" --split test --limit 100
  say "export $DEC from the $DEVICE checkpoint, verify fp32 at 1.00"
  "$PY" -m export onnx --checkpoint "$WORK/run-$DEC/best.pt" --out "$WORK/bundle-$DEC" --no-check
  "$PY" -m export verify --checkpoint "$WORK/run-$DEC/best.pt" --bundle "$WORK/bundle-$DEC" \
    --data "$DATA" --split test --limit 100 --precision fp32 --min-match fp32=1.0 \
    || fail "$DEC: fp32 bundle does not match PyTorch at 1.00"
done

say "frozen encoder, att, from the float16 feature cache (built by workers), twice: reused"
"$PY" -m train fit "${COMMON[@]}" --out "$WORK/run-frozen" --decoder att --freeze-encoder --epochs 1
"$PY" -m train fit "${COMMON[@]}" --out "$WORK/run-frozen" --decoder att --freeze-encoder --epochs 2
"$PY" -c "import numpy, sys; a = numpy.load(sys.argv[1], mmap_mode='r'); assert a.dtype == numpy.float16 and a.ndim == 3, a.dtype" \
  "$WORK/run-frozen/features-train.npy" || fail "the att feature cache is not float16 [N,R,F]"

say "training benchmark"
# shellcheck disable=SC2086
"$PY" scripts/benchmark_train.py --data "$DATA" --device "$DEVICE" $BENCH --json "$WORK/bench.json"
say "ALL PASSED on $DEVICE (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
