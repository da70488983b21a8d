#!/usr/bin/env python3
"""Field check of the mqtt:// output against a real broker: captions handed over
at ``--rate`` per second for ``--seconds``, the broker (Debian's mosquitto,
started here on a loopback port) stopped at ``--outage-at`` for ``--outage``
seconds and started again. Prints one JSON line: the slowest hand-over (ms: what
the live loop would wait), captions sent during and after the outage, what a
subscriber received, drops and reconnections.

    python scripts/check_outputs.py --seconds 60 --outage-at 10 --outage 20
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from edge.mqtt import MqttSink  # noqa: E402
from field_tools import MqttBroker  # noqa: E402 (scripts/ is on sys.path as this file's folder)


def subscribe(port, topic, received):
    """A mosquitto_sub child printing every caption message (it retries while the
    broker is down)."""
    def run():
        while not received["stop"]:
            child = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port),
                                      "-t", topic, "-q", "1"], stdout=subprocess.PIPE,
                                     universal_newlines=True)
            received["child"] = child
            for line in child.stdout:
                received["frames"].add(json.loads(line)["frame"])
            time.sleep(0.5)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=2.0, help="shown captions per second")
    parser.add_argument("--outage-at", type=float, default=10.0)
    parser.add_argument("--outage", type=float, default=20.0)
    args = parser.parse_args()
    broker = MqttBroker(tempfile.mkdtemp())
    broker.start()
    port = broker.port
    received = {"frames": set(), "stop": False, "child": None}
    subscribe(port, "check/cam0/caption", received)
    sink = MqttSink("mqtt://127.0.0.1:%d/check" % port)
    start, frame, slowest, phases = time.time(), 0, 0.0, {"before": [], "during": [], "after": []}
    down_at, up_at, stopped = start + args.outage_at, start + args.outage_at + args.outage, False
    while time.time() - start < args.seconds:
        now = time.time()
        if not stopped and now >= down_at:
            broker.stop()
            stopped = True
        if stopped and broker.process is None and now >= up_at:
            broker.start()
        phase = "before" if now < down_at else ("during" if now < up_at else "after")
        t0 = time.perf_counter()
        sink.add_caption({"t": now - start, "frame": frame, "caption": "caption %d" % frame,
                          "tokens": [4], "latency_ms": 1.0, "backend": "ort", "shown": True})
        slowest = max(slowest, time.perf_counter() - t0)
        phases[phase].append(frame)
        frame += 1
        time.sleep(1.0 / args.rate)
    sink.close()
    time.sleep(1.0)
    received["stop"] = True
    if received["child"] is not None:
        received["child"].terminate()
    broker.stop()
    got = received["frames"]
    report = {"seconds": args.seconds, "outage_s": args.outage, "handed_over": frame,
              "slowest_hand_over_ms": round(slowest * 1e3, 3),
              "received": {k: "%d/%d" % (len([f for f in v if f in got]), len(v))
                           for k, v in phases.items()},
              "sink": sink.stats(), "load": list(os.getloadavg())}
    print(json.dumps(report))
    return 0 if all(f in got for f in phases["after"]) else 1


if __name__ == "__main__":
    sys.exit(main())
