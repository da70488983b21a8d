"""The field hardening under the Jetson floor (Python 3.6, ``edge/`` alone): the
web view's bounds and checks, refused outputs, the pixel bound, the unit."""
import os
import shutil

from tests.conftest import PY36, needs_py36
from tests.test_bundle_whole import _png_bomb
from tests.test_py36_edge import edge_only, run36  # noqa: F401 (a fixture)
from tests.test_web import LiveRun
from tests.test_web_network import concurrent_gets

pytestmark = needs_py36


def test_web_view_on_the_network_on_py36(tiny_bundle, edge_only):  # noqa: F811
    run = LiveRun(tiny_bundle, edge_only, [], python=PY36, path=edge_only,
                  source="synthetic://?width=160&height=120&fps=5")
    try:
        status, headers, _ = run.get("/status.json", headers={"Host": "evil.example"})
        assert status == 403 and headers["X-Frame-Options"] == "DENY"
        assert run.get("/status.json", headers={"Host": "localhost"})[0] == 200
        assert [r for r in concurrent_gets(run.port, 200, 5.0) if r[0] != "ok"] == []
    finally:
        run.stop()


def test_refusals_and_the_unit_on_py36(tiny_bundle, edge_only):  # noqa: F811
    bundle = os.path.join(edge_only, "bundle")
    shutil.copytree(tiny_bundle, bundle)
    _png_bomb(os.path.join(edge_only, "bomb.png"), 8000, 8000)
    result = run36(["-m", "edge", "bomb.png", "--bundle", "bundle", "--headless"], edge_only)
    assert result.returncode == 2 and "bomb.png is 8000x8000 pixels" in result.stderr
    result = run36(["-m", "edge", "bomb.png", "--log", "bomb.png", "--bundle", "bundle"],
                   edge_only)
    assert result.returncode == 2 and "refusing" in result.stderr, result.stderr
    result = run36(["-m", "edge", "0", "--bundle", "bundle", "--systemd-unit"], edge_only)
    assert result.returncode == 0 and "Restart=always" in result.stdout, result.stderr
    assert "Traceback" not in result.stderr
