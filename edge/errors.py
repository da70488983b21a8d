"""Expected failures and the one-line error convention shared by every CLI.

An expected failure (missing file, absent camera, bad bundle, missing backend,
corrupt image, wrong argument) raises ``NanocapError``; ``run_cli`` turns it
into one line on stderr and a non-zero exit. ``--debug`` shows the traceback.
"""
import sys


class NanocapError(Exception):
    """An expected failure whose message is shown to the user as one line."""

    exit_code = 2


def say(text, prefix="nanocap"):
    """One ``PREFIX: text`` line on stderr; never raises (a hung-up terminal is no failure)."""
    try:
        sys.stderr.write("%s: %s\n" % (prefix, text))
        sys.stderr.flush()
    except (IOError, OSError, ValueError):
        pass


def run_cli(main, argv=None, prog="nanocap"):
    """Run ``main(argv) -> int`` and map expected failures to one stderr line.

    Returns the process exit code (0 success, 2 expected failure, 130 Ctrl-C).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        return int(main(argv) or 0)
    except NanocapError as exc:
        if debug:
            raise
        sys.stderr.write("%s: error: %s\n" % (prog, exc))
        return exc.exit_code
    except KeyboardInterrupt:
        if debug:
            raise
        sys.stderr.write("%s: interrupted\n" % prog)
        return 130
