#!/usr/bin/env bash
# Install nanocap's device runtime on a Jetson (JetPack 4.6.x, Python 3.6).
#
#   ORT_WHEEL=$PWD/onnxruntime_gpu-1.11.0-cp36-cp36m-linux_aarch64.whl \
#       bash scripts/jetson_setup.sh [--dry-run]
#
# Idempotent: every step checks first and skips what is already done, so it can
# be run again at any time. It never lets pip install opencv-python: JetPack's
# OpenCV (built with GStreamer, needed for csi:// cameras) must stay in use.
#
# Environment:
#   VENV       where to create the virtual environment (default ~/nanocap-venv)
#   ORT_WHEEL  a downloaded file: the onnxruntime-gpu wheel for Python 3.6 from the
#              Jetson Zoo (https://elinux.org/Jetson_Zoo#ONNX_Runtime). Its links are
#              not wheel URLs pip accepts (a Box download page): save it under its
#              wheel name first, e.g.
#                wget -O onnxruntime_gpu-1.11.0-cp36-cp36m-linux_aarch64.whl 'LINK'
#              Only needed if no GPU-enabled onnxruntime is installed yet.
#   PYCUDA=0   skip pycuda (only the native TensorRT backend needs it)
#   FORCE=1    run on a machine that does not look like a Jetson (for testing)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$HOME/nanocap-venv}"
ORT_WHEEL="${ORT_WHEEL:-}"
DRY_RUN=0
[ "${1:-}" = "--dry-run" ] && DRY_RUN=1
NUMPY_PIN="numpy==1.19.4"   # 1.19.5's OpenBLAS dies with "Illegal instruction" on the Nano
PYCUDA_PIN="pycuda<2022"    # the last releases that build on Python 3.6
PIP_PIN="pip<22"            # pip 21.3.1 is the newest pip for Python 3.6

if [ -n "$ORT_WHEEL" ] && { [ ! -f "$ORT_WHEEL" ] || [ "${ORT_WHEEL%.whl}" = "$ORT_WHEEL" ]; }; then
    echo "jetson_setup: ORT_WHEEL=$ORT_WHEEL is not a downloaded .whl file; Jetson Zoo links are not wheel URLs pip accepts: wget -O onnxruntime_gpu-1.11.0-cp36-cp36m-linux_aarch64.whl 'LINK', then ORT_WHEEL=\$PWD/onnxruntime_gpu-1.11.0-cp36-cp36m-linux_aarch64.whl" >&2
    exit 2
fi

step() { printf '\n== %s\n' "$*"; }
say() { printf '   %s\n' "$*"; }
run() {
    say "\$ $*"
    if [ "$DRY_RUN" = 0 ]; then "$@"; fi
}
vpy() { "$VENV/bin/python3" "$@"; }
has_module() { [ -x "$VENV/bin/python3" ] && vpy -c "import $1" >/dev/null 2>&1; }

step "1. Is this a Jetson with JetPack's Python 3.6?"
if [ -f /etc/nv_tegra_release ]; then
    say "L4T: $(head -n 1 /etc/nv_tegra_release)"
    say "board: $(tr -d '\0' </proc/device-tree/model 2>/dev/null || echo unknown)"
elif [ "${FORCE:-0}" = 1 ] || [ "$DRY_RUN" = 1 ]; then
    say "not a Jetson (no /etc/nv_tegra_release); continuing because of FORCE=1/--dry-run"
else
    say "no /etc/nv_tegra_release: this does not look like a Jetson. On a desktop use"
    say "  pip install -e \".[edge]\"   (or \".[gpu]\" with CUDA). FORCE=1 overrides."
    exit 1
fi
PYVER="$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
say "python3 is $PYVER (JetPack 4.6 ships 3.6; the edge runtime supports 3.6 and newer)"

step "2. System packages for building pycuda and creating a venv"
missing=()
for pkg in python3-pip python3-venv python3-dev build-essential; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    run sudo apt-get update
    run sudo apt-get install -y "${missing[@]}"
else
    say "already installed: python3-pip python3-venv python3-dev build-essential"
fi

step "3. JetPack's OpenCV (the one with GStreamer) and TensorRT, as the system sees them"
if python3 -c "import cv2" >/dev/null 2>&1; then
    say "cv2 $(python3 -c 'import cv2; print(cv2.__version__, cv2.__file__)')"
    if python3 -c "import cv2,re,sys; sys.exit(not re.search(r'GStreamer:\s*YES', cv2.getBuildInformation()))"; then
        say "built with GStreamer: csi:// and gst:// sources will work"
    else
        say "WARNING: this OpenCV has no GStreamer; csi:// will not open. If pip installed"
        say "opencv-python for the system python, remove it: pip3 uninstall opencv-python"
    fi
else
    say "WARNING: no system cv2. Install JetPack's: sudo apt-get install python3-opencv"
fi
if python3 -c "import tensorrt" >/dev/null 2>&1; then
    say "tensorrt $(python3 -c 'import tensorrt; print(tensorrt.__version__)') (JetPack's python3-libnvinfer)"
else
    say "no TensorRT Python bindings: --backend trt will not work (sudo apt-get install python3-libnvinfer)"
fi

step "4. A virtual environment that still sees JetPack's OpenCV and TensorRT: $VENV"
if [ -x "$VENV/bin/python3" ]; then
    say "exists; reused"
else
    run python3 -m venv --system-site-packages "$VENV"
fi
run "$VENV/bin/python3" -m pip install -q --upgrade "$PIP_PIN"

step "5. numpy ($NUMPY_PIN)"
# JetPack's numpy is 1.13.3: beam search needs >= 1.15 (take_along_axis, stable argsort).
numpy_usable() {
    vpy -c "import numpy,re,sys; v=numpy.__version__; m=re.match(r'(\d+)\.(\d+)', v); sys.exit(not (m and (int(m.group(1)), int(m.group(2))) >= (1, 19) and v != '1.19.5'))"
}
if has_module numpy && numpy_usable; then
    say "numpy $(vpy -c 'import numpy; print(numpy.__version__)') is usable; kept"
else
    found="$( (has_module numpy && vpy -c 'import numpy; print(numpy.__version__)') || echo none)"
    say "numpy $found: older than 1.19 (JetPack ships 1.13.3) or 1.19.5 (Illegal instruction on the Nano)"
    run "$VENV/bin/pip" install "$NUMPY_PIN"
fi

step "6. ONNX Runtime with CUDA (the Jetson onnxruntime-gpu wheel, never the CPU one from PyPI)"
if has_module onnxruntime && vpy -c "import onnxruntime as o,sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())"; then
    say "onnxruntime $(vpy -c 'import onnxruntime as o; print(o.__version__, o.get_available_providers())')"
elif [ -n "$ORT_WHEEL" ]; then
    if has_module onnxruntime; then
        say "a CPU-only onnxruntime is installed: it would shadow the GPU one, removing it"
        run "$VENV/bin/pip" uninstall -y onnxruntime
    fi
    run "$VENV/bin/pip" install "$ORT_WHEEL" "$NUMPY_PIN"
else
    say "SKIPPED: set ORT_WHEEL to the onnxruntime-gpu wheel for Python 3.6 (cp36, aarch64)"
    say "from https://elinux.org/Jetson_Zoo#ONNX_Runtime (1.10 for JetPack 4.6, 1.11 for 4.6.1)"
    say "and run this script again. Native TensorRT (--backend trt) works without it."
fi

step "7. pycuda (host/device copies for the native TensorRT backend), built against CUDA"
if [ "${PYCUDA:-1}" = 0 ]; then
    say "SKIPPED (PYCUDA=0): --backend trt will not work; ONNX Runtime does"
elif has_module pycuda; then
    say "pycuda $(vpy -c 'import pycuda; print(pycuda.VERSION_TEXT)') already installed"
elif [ -x /usr/local/cuda/bin/nvcc ] || [ "$DRY_RUN" = 1 ]; then
    say "compiling pycuda takes a few minutes on a Nano"
    if ! run env PATH="/usr/local/cuda/bin:$PATH" CPATH="/usr/local/cuda/include" \
            LIBRARY_PATH="/usr/local/cuda/lib64" "$VENV/bin/pip" install "$PYCUDA_PIN"; then
        say "WARNING: pycuda did not build (see above); --backend trt needs it, ONNX Runtime"
        say "does not. Is /usr/local/cuda JetPack's CUDA 10.2? Continuing."
    fi
else
    say "SKIPPED: no /usr/local/cuda/bin/nvcc (install JetPack's CUDA: sudo apt-get install nvidia-jetpack)"
fi

step "8. nanocap itself, without dependencies (so pip never pulls opencv-python)"
installed_at=""
if [ -x "$VENV/bin/pip" ]; then
    installed_at="$("$VENV/bin/pip" show nanocap 2>/dev/null | sed -n 's/^Location: //p' || true)"
fi
if [ "$installed_at" = "$REPO" ]; then
    say "nanocap from $REPO already installed"
else
    run "$VENV/bin/pip" install --no-deps -e "$REPO"
fi

step "9. Guard: no pip OpenCV in the venv"
pip_cv=""
if [ -x "$VENV/bin/pip" ]; then
    pip_cv="$("$VENV/bin/pip" list 2>/dev/null | grep -iE '^opencv-(contrib-)?python' || true)"
fi
if [ -n "$pip_cv" ]; then
    say "pip's OpenCV found in the venv: it hides JetPack's (no GStreamer). Removing it."
    run "$VENV/bin/pip" uninstall -y opencv-python opencv-python-headless opencv-contrib-python
else
    say "none: cv2 comes from JetPack"
fi

step "10. Check"
if [ -x "$VENV/bin/python3" ]; then
    vpy - <<'EOF' || true
import importlib
for name in ("numpy", "cv2", "onnxruntime", "tensorrt", "pycuda", "edge"):
    try:
        m = importlib.import_module(name)
        extra = ""
        if name == "onnxruntime":
            extra = " providers=%s" % m.get_available_providers()
        print("   %-12s %-10s %s%s" % (name, getattr(m, "__version__", ""), m.__file__, extra))
    except Exception as exc:
        print("   %-12s MISSING (%s)" % (name, exc))
EOF
fi
if command -v nvpmodel >/dev/null 2>&1; then
    say "power mode: $(nvpmodel -q 2>/dev/null | head -n 1) (sudo nvpmodel -m 0 for MAXN)"
fi
cat <<EOF

Done. Next:
   . $VENV/bin/activate
   sudo nvpmodel -m 0 && sudo jetson_clocks
   python3 -m edge /dev/video0 --bundle bundle --backend trt --precision fp16
     (first run builds the TensorRT engines: minutes; they are cached beside the ONNX)
EOF
