"""One input of the live loop (``edge.live``): its capture thread, scene gate,
shown caption, frame meter, counters and own sinks.

``python -m edge`` runs one lane per input (``cam0`` is the positional input,
``cam1``... the ``--input`` ones); the loop's one captioner thread captions the
newest wanted frame of every lane in one backend call (``edge.captioner``).
"""
from edge.captioner import FpsMeter
from edge.gate import SceneGate, ShownCaption
from edge.grabber import FrameGrabber
from edge.recorder import Recorder
from edge.sinks import VideoSink


def input_name(index):
    """The name of input ``index`` in file names, logs, events and the web view."""
    return "cam%d" % int(index)


class Lane(object):
    """Input ``index`` of the loop: ``source`` read by a ``FrameGrabber``, written
    to ``sinks`` (video files get a ``Recorder`` thread), captioned through the
    loop's captioner when ``gate`` (a ``SceneGate``) wants it; ``log`` (a
    ``CaptionLog`` or None) gets this input's records. ``ready``: an Event set
    whenever a frame is waiting (the loop waits on it for several inputs)."""

    def __init__(self, index, source, sinks, log, gate, realtime=False, ready=None,
                 on_event=None, **grab_options):
        self.index, self.name, self.source, self.log = index, input_name(index), source, log
        drop = bool(source.live or realtime)
        pace = source.fps if (realtime and not source.live) else None
        self.grabber = FrameGrabber(source, drop=drop, pace_fps=pace, ready=ready,
                                    on_event=lambda event: on_event(self, event),
                                    **grab_options)
        self.sinks = [Recorder(s, drop=drop, measure=source.live) if isinstance(s, VideoSink)
                      else s for s in sinks]
        self.gate = gate
        self.hold = ShownCaption(hold=gate.enabled)
        self.meter, self.shown, self.frames, self.done = FpsMeter(), None, 0, False
        self.first_at = self.last_at = self.last_offer = self.candidate = None
        self.last_frame, self.lost_drawn_at, self.recaption = None, 0.0, False
        self.caption_each = getattr(source, "caption_each", False)  # images: one caption each

    def offer_later(self, index, frame, now, keep):
        """``frame`` is this input's newest: the next batch considers it. ``keep``:
        store a copy (the frame is drawn on before the captioner is free)."""
        self.candidate = (index, frame.copy() if keep else frame, now, keep)

    def wanted(self, every):
        """``(index, frame, tag)`` for the captioner when the newest frame should be
        captioned (``tag``: ``(lane, scene_changed)``), else None; the gate takes
        it as captioned."""
        if self.candidate is None:
            return None
        index, frame, now, owned = self.candidate
        self.candidate = None
        if self.last_offer is not None and index - self.last_offer < every:
            return None
        if self.recaption:
            self.recaption, self.gate.last_thumb = False, None
        wanted, changed = self.gate.check(frame, now) if not self.caption_each else (True, True)
        if not wanted:
            return None
        self.gate.captioned(frame, now)
        self.last_offer = index
        return index, frame if owned else frame.copy(), (self, changed)

    def seen(self, frame, now):
        """Count ``frame`` as shown at ``now`` (``time.perf_counter`` seconds)."""
        self.meter.tick(now)
        self.first_at = now if self.first_at is None else self.first_at
        self.last_at = now
        self.last_frame = frame
        self.frames += 1

    def recorders(self):
        return [s for s in self.sinks if isinstance(s, Recorder)]

    def counts(self):
        """This input's figures in ``status()``/``summary()``."""
        return {"input": self.index, "name": self.name, "source": self.source.name,
                "frames": self.frames, "captions_shown": self.hold.shown,
                "gated_frames": self.gate.gated, "dropped_frames": self.grabber.dropped,
                "outages": self.grabber.outages, "last_outage": self.grabber.last_outage}

    def display_fps(self, final):
        """Display rate: over the whole run (``final``) or the last frames (live)."""
        if not final:
            fps = self.meter.fps
            return round(fps, 2) if fps else None
        span = (self.last_at - self.first_at) if self.frames > 1 else 0.0
        return round((self.frames - 1) / span, 3) if span > 0 else None

    def source_state(self):
        """``{"state": "live"|"lost", ...}`` for ``/status.json``."""
        grabber = self.grabber
        lost_s = grabber.lost_seconds()
        return {"state": "live" if lost_s is None else "lost", "lost_at": grabber.lost_at,
                "lost_s": None if lost_s is None else round(lost_s, 1),
                "reason": grabber.lost_reason if lost_s is not None else None,
                "outages": grabber.outages, "last_outage": grabber.last_outage}


def clone_gate(gate):
    """A fresh ``SceneGate`` with ``gate``'s settings (one per input)."""
    return SceneGate(gate.threshold, gate.refresh_s, gate.enabled)

