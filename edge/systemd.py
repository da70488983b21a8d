"""``nanocap-live ... --systemd-unit``: a systemd unit that runs that command at boot.

The unit runs the exact command line it was given (less ``--systemd-unit``, plus
``--headless``: a service has no display) with absolute paths, as a dedicated
system user, restarted whenever it ends (``Restart=always``). Its stderr and
stdout (the one-line summary) go to the journal: ``journalctl -u nanocap -f``.
"""
import os
import re
import sys

UNIT_NAME = "nanocap"
USER = "nanocap"
PLAIN = re.compile(r"^[A-Za-z0-9_@+=:,./-]+$")


def quote(arg):
    """One ExecStart word: double-quoted when needed; ``%`` and ``$`` escaped
    (systemd expands specifiers and variables in ExecStart)."""
    text = arg if PLAIN.match(arg) else '"%s"' % arg.replace("\\", "\\\\").replace('"', '\\"')
    return text.replace("%", "%%").replace("$", "$$")


def _path_values(argv):
    """The argument strings of ``argv`` that name local paths (the parser decides)."""
    from edge.live_cli import get_parser
    from edge.paths import local_input, output_files
    args = get_parser().parse_args(argv)
    paths = set([args.bundle] + [p for _, p in output_files(args)])
    paths.add(args.snapshot_dir)
    from edge.inputs import input_uris
    paths.update(uri for uri in input_uris(args) if local_input(uri) is not None)
    return paths


def service_argv(argv, cwd=None):
    """``argv`` of ``python -m edge`` for the service: paths absolute (``file://``
    kept), ``--systemd-unit`` dropped, ``--headless`` added when missing."""
    cwd = cwd or os.getcwd()
    paths = _path_values(argv)
    out = []
    for arg in argv:
        if arg == "--systemd-unit":
            continue
        flag, eq, value = arg.partition("=")
        if eq and flag.startswith("--") and value in paths:
            arg = flag + "=" + os.path.join(cwd, value)
        elif arg in paths:
            arg = ("file://" + os.path.join(cwd, arg[len("file://"):])
                   if arg.startswith("file://") else os.path.join(cwd, arg))
        out.append(arg)
    if "--headless" not in out:
        out.append("--headless")
    return out


def unit_text(argv, python=None, cwd=None, user=USER):
    """The unit file for ``python -m edge ARGV`` (``argv`` without the program)."""
    python = os.path.abspath(python or sys.executable)
    cwd = os.path.abspath(cwd or os.getcwd())
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    command = " ".join(quote(a) for a in [python, "-m", "edge"] + service_argv(argv, cwd))
    return "\n".join([
        "# %s.service: the nanocap live captioner at boot (nanocap-live --systemd-unit)" % UNIT_NAME,
        "# Install (docs/field.md, Run at boot):",
        "#   sudo useradd --system --no-create-home --groups video %s" % user,
        "#   give %s read access to the bundle and write access to the output folders" % user,
        "#   sudo cp THIS_FILE /etc/systemd/system/%s.service" % UNIT_NAME,
        "#   sudo systemctl daemon-reload && sudo systemctl enable --now %s" % UNIT_NAME,
        "#   journalctl -u %s -f" % UNIT_NAME,
        "[Unit]",
        "Description=nanocap live captioner",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        "User=%s" % user,
        "SupplementaryGroups=video",
        "WorkingDirectory=%s" % quote(cwd),
        "Environment=PYTHONUNBUFFERED=1",
        "Environment=%s" % quote("PYTHONPATH=" + package_root),
        "ExecStart=%s" % command,
        "KillSignal=SIGTERM",
        "TimeoutStopSec=30",
        "Restart=always",
        "RestartSec=5",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        ""])


def print_unit(argv):
    """Check the bundle loads, write the unit to stdout; returns 0 (the exit code)."""
    from edge.bundle import load_bundle
    from edge.live_cli import get_parser
    load_bundle(get_parser().parse_args(argv).bundle)
    sys.stdout.write(unit_text(argv))
    sys.stdout.flush()
    return 0
