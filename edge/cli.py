"""A small lazy sub-command dispatcher shared by ``python -m train`` and
``python -m export``.

Each command lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``. Modules are imported only when their command runs, so
``--help`` answers even where torch or a command is not installed.
"""
import argparse
import importlib
import sys

from edge.errors import NanocapError, run_cli

INSTALL_HINTS = {"torch": "train", "torchvision": "train", "pycocoevalcap": "train",
                 "tqdm": "train", "onnx": "export", "onnxruntime": "edge", "cv2": "edge"}


def import_command(module_name):
    """Import a command module; a missing dependency is one clear line."""
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        missing = (getattr(exc, "name", None) or "").split(".")[0]
        if missing in INSTALL_HINTS:
            raise NanocapError("this command needs the %r package: pip install -e \".[%s]\""
                               % (missing, INSTALL_HINTS[missing]))
        if getattr(exc, "name", None) == module_name:
            raise NanocapError("command module %s is not part of this build" % module_name)
        raise


def dispatch(prog, description, commands, argv=None):
    """Parse ``COMMAND [ARGS...]`` for ``commands = [(name, module, help), ...]``."""
    epilog = "commands:\n" + "\n".join("  %-9s %s" % (n, h) for n, _, h in commands)
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=[n for n, _, _ in commands], metavar="COMMAND")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="command arguments (see COMMAND --help)")

    def main(args_list):
        top = parser.parse_args(args_list)
        name, module_name, help_text = [c for c in commands if c[0] == top.command][0]
        module = import_command(module_name)
        sub = argparse.ArgumentParser(prog="%s %s" % (prog, name), description=help_text)
        module.add_arguments(sub)
        sub.add_argument("--debug", action="store_true", help="show tracebacks")
        return module.run(sub.parse_args(top.args))

    return run_cli(main, argv, prog=prog)


def exit_with(code):
    """``sys.exit`` helper for ``__main__`` modules and console scripts."""
    sys.exit(code)
