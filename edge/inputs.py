"""Several inputs in one ``python -m edge`` run: which output is whose.

``python -m edge INPUT [OUTPUT...] --input URI [--input URI...]``: input 0 is
the positional one, input ``i`` the i-th ``--input``; each is named ``cam<i>``
(``edge.lane.input_name``). A recording or ``--log`` name holding ``{input}``
is one file per input (``rec-{input}.mp4`` -> ``rec-cam0.mp4``,
``rec-cam1.mp4``...); a ``--log`` without it is one file for all inputs, each
record naming its ``input`` (index). With several inputs a recording needs
``{input}``. The window, web views and publishers are shared by all inputs.
"""
from edge.errors import NanocapError
from edge.lane import input_name

PLACEHOLDER = "{input}"
SHARED = ("display://", "http://", "mqtt://", "mqtts://", "webhook+")


def input_uris(args):
    """The inputs of a run, in order: the positional one, then each ``--input``."""
    return [args.input] + list(args.more_inputs or [])


def per_input(name, count):
    """``name`` for each of ``count`` inputs (``{input}`` -> ``cam<i>``)."""
    return [name.replace(PLACEHOLDER, input_name(i)) for i in range(count)]


def split_outputs(outputs, count):
    """``(shared, own)``: names shared by every input, and per input the list of
    its own (recordings). One line naming the fix for a recording without
    ``{input}`` when there are several inputs, or ``{input}`` in a shared output."""
    shared, own = [], [[] for _ in range(count)]
    for name in outputs:
        if name.startswith(SHARED):
            if PLACEHOLDER in name:
                raise NanocapError("output %s: {input} names files (recordings, --log); "
                                   "this output already serves every input" % name)
            shared.append(name)
        elif PLACEHOLDER in name:
            for names, path in zip(own, per_input(name, count)):
                names.append(path)
        elif count > 1:
            raise NanocapError("recording %s: with %d inputs give {input} in its name "
                               "(e.g. %s)" % (name, count, _example(name)))
        else:
            own[0].append(name)
    return shared, own


def log_paths(log, count):
    """``--log`` per input: ``[path, ...]`` (one each with ``{input}``, else the
    same file for every input), or None without ``--log``."""
    if not log:
        return None
    return per_input(log, count) if PLACEHOLDER in log else [log] * count


def _example(name):
    dot = name.rfind(".")
    return (name[:dot] + "-" + PLACEHOLDER + name[dot:]) if dot > 0 else name + PLACEHOLDER
