"""scripts/jetson_setup.sh picks numpy 1.19.4 whenever the venv sees an older numpy
(JetPack's 1.13.3) or 1.19.5, with or without ORT_WHEEL, and takes ORT_WHEEL only
as a downloaded .whl file.

Run here as on a Jetson with the checks faked: FORCE=1 (no /etc/nv_tegra_release),
--dry-run (commands are printed, not run: no network), stand-in ``dpkg``/``sudo``
on PATH, and a venv whose visible numpy reports the version under test. A real
run (numpy 1.13.3 installed in a Python 3.6 venv, no ORT_WHEEL) ended on 1.19.4:
docs/tensorrt.md says how it was done."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "jetson_setup.sh")
PIN = "pip install numpy==1.19.4"


def _venv(tmp_path, numpy_version):
    """A venv (no pip) whose ``import numpy`` gives ``numpy_version`` (None: no numpy)."""
    venv = str(tmp_path / "venv")
    subprocess.check_call([sys.executable, "-m", "venv", "--without-pip", venv])
    if numpy_version:
        site = subprocess.check_output([os.path.join(venv, "bin", "python3"), "-c",
                                        "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
        package = os.path.join(site.decode().strip(), "numpy")
        os.makedirs(package)
        with open(os.path.join(package, "__init__.py"), "w") as handle:
            handle.write("__version__ = %r\n" % numpy_version)
    return venv


def _run(tmp_path, venv, ort_wheel=None):
    stubs = tmp_path / "stubs"
    stubs.mkdir(exist_ok=True)
    for name, body in (("dpkg", "exit 0"), ("sudo", 'echo "(sudo) $*"')):
        path = stubs / name
        path.write_text("#!/bin/sh\n%s\n" % body)
        path.chmod(0o755)
    env = dict(os.environ, PATH="%s:%s" % (stubs, os.environ["PATH"]), VENV=venv, FORCE="1",
               PYCUDA="0", ORT_WHEEL=ort_wheel or "")
    return subprocess.run(["bash", SCRIPT, "--dry-run"], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=120)


def _step5(out):
    return out.split("== 5.")[1].split("== 6.")[0]


@pytest.mark.parametrize("with_wheel", [False, True])
@pytest.mark.parametrize("visible,installs", [("1.13.3", True), ("1.19.5", True), (None, True),
                                              ("1.19.4", False), ("1.21.0", False)])
def test_numpy_pin(tmp_path, visible, installs, with_wheel):
    wheel = None
    if with_wheel:
        wheel = str(tmp_path / "onnxruntime_gpu-1.11.0-cp36-cp36m-linux_aarch64.whl")
        open(wheel, "wb").close()
    result = _run(tmp_path, _venv(tmp_path, visible), wheel)
    assert result.returncode == 0, result.stderr
    assert (PIN in _step5(result.stdout)) == installs, _step5(result.stdout)
    if with_wheel:
        assert "pip install %s numpy==1.19.4" % wheel in result.stdout


@pytest.mark.parametrize("value", ["https://nvidia.box.com/shared/static/abc.whl",
                                   "missing.whl"])
def test_ort_wheel_must_be_a_downloaded_file(tmp_path, value):
    result = _run(tmp_path, _venv(tmp_path, "1.19.4"), value)
    err = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(err) == 1
    assert "not a downloaded .whl file" in err[0] and "wget -O" in err[0]
    assert "== 1." not in result.stdout
