"""Captions out to other systems: mqtt:// against a real mosquitto broker (started
here, stopped and restarted for the outage), webhook+http:// against real local
HTTP receivers (prompt, slow, silent, failing), and the bounded outbox under both."""
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from edge.outbox import Outbox

paho = pytest.importorskip("paho.mqtt.client")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from field_tools import MOSQUITTO, MqttBroker as Broker  # noqa: E402

needs_broker = pytest.mark.skipif(MOSQUITTO is None, reason="no mosquitto (apt-get install "
                                                            "mosquitto; .ci/run installs it)")


def wait_for(predicate, timeout=15.0, step=0.05):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


@pytest.fixture
def broker(tmp_path):
    if MOSQUITTO is None:
        pytest.skip("no mosquitto (apt-get install mosquitto; .ci/run installs it)")
    server = Broker(str(tmp_path))
    server.start()
    yield server
    server.stop()


class Subscriber(object):
    """A paho client subscribed to ``#`` (again after every reconnection)."""

    def __init__(self, port):
        self.messages, self.lock = [], threading.Lock()
        if hasattr(paho, "CallbackAPIVersion"):
            self.client = paho.Client(paho.CallbackAPIVersion.VERSION2)
        else:
            self.client = paho.Client()
        self.client.on_connect = lambda client, *a: client.subscribe("#", qos=1)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg):
        with self.lock:
            self.messages.append((msg.topic, msg.payload.decode(), bool(msg.retain)))

    def on(self, topic):
        with self.lock:
            return [(p, r) for t, p, r in self.messages if t == topic]

    def captions(self, topic):
        return [json.loads(p) for p, _ in self.on(topic)]

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def record(frame, caption, shown=True, index=None):
    data = {"t": frame / 30.0, "frame": frame, "caption": caption, "tokens": [4, 5],
            "latency_ms": 1.5, "backend": "ort", "shown": shown}
    if index is not None:
        data["input"] = index
    return data


def test_outbox_never_blocks_and_counts_drops():
    gate = threading.Event()
    sent = []
    box = Outbox(lambda item: (gate.wait(), sent.append(item)), "test", size=4)
    started = time.perf_counter()
    for i in range(100):
        box.put(i)
    assert time.perf_counter() - started < 1.0       # 100 puts while send is stuck
    assert box.stats()["dropped"] >= 95              # 4 kept, one in the sender's hand
    gate.set()
    assert wait_for(lambda: box.pending() == 0, 5)
    box.close()
    assert sent[-1] == 99 and sent == sorted(sent)   # newest kept, in order


def test_outbox_retries_until_sent_and_drops_rejected():
    from edge.outbox import Rejected
    attempts, messages = [], []

    def send(item):
        attempts.append(item)
        if item == "reject":
            raise Rejected("HTTP 400")
        if attempts.count(item) < 3:
            raise IOError("receiver down")

    box = Outbox(send, "test", backoff_s=0.01, message=messages.append)
    box.put("reject")
    box.put("later")
    assert wait_for(lambda: box.stats()["sent"] == 1, 5)
    box.close()
    assert attempts.count("reject") == 1 and attempts.count("later") == 3
    stats = box.stats()
    assert stats["failed"] == 1 and stats["error"] is None
    assert any("dropped" in m for m in messages) and any("retrying" in m for m in messages)


@needs_broker
def test_mqtt_one_message_per_shown_caption_with_retained_state(broker):
    from edge.mqtt import MqttSink
    watcher = Subscriber(broker.port)
    sink = MqttSink("mqtt://127.0.0.1:%d/house/nanocap" % broker.port, inputs=2,
                    ha_discovery=True)
    assert wait_for(lambda: watcher.on("house/nanocap/status") == [("online", False)])
    sink.add_caption(record(3, "a red circle"))
    sink.add_caption(record(4, "not shown", shown=False, index=1))
    sink.add_caption(record(5, "a blue square", index=1))
    sink.add_caption(record(9, "a green square", index=1))
    assert wait_for(lambda: len(watcher.captions("house/nanocap/cam1/caption")) == 2)
    assert [c["caption"] for c in watcher.captions("house/nanocap/cam0/caption")] == ["a red circle"]
    first = watcher.captions("house/nanocap/cam1/caption")[0]
    assert first["input"] == 1 and first["camera"] == "cam1" and first["frame"] == 5
    assert set(first) >= {"t", "frame", "caption", "tokens", "latency_ms", "backend", "shown"}
    late = Subscriber(broker.port)   # a newcomer gets the retained state of each input
    assert wait_for(lambda: late.captions("house/nanocap/cam1/state"))
    assert late.captions("house/nanocap/cam1/state")[-1]["caption"] == "a green square"
    assert late.on("house/nanocap/cam1/state")[-1][1] is True
    configs = [t for t, _, _ in late.messages if t.startswith("homeassistant/sensor/")]
    assert len(configs) == 2
    for index in (0, 1):
        topic = [t for t in configs if t.endswith("_cam%d/config" % index)][0]
        config = json.loads(late.on(topic)[-1][0])
        assert config["state_topic"] == "house/nanocap/cam%d/state" % index
        assert config["availability_topic"] == "house/nanocap/status"
        assert config["value_template"] == "{{ value_json.caption }}"
        assert config["unique_id"] and config["device"]["identifiers"]
    assert sink.stats()["sent"] == 6 and sink.stats()["dropped"] == 0
    sink.close()
    assert wait_for(lambda: late.on("house/nanocap/status")[-1] == ("offline", False))
    watcher.close()
    late.close()


@needs_broker
def test_mqtt_last_will_when_the_device_vanishes(broker):
    """A device that dies without closing (power cut): the broker says offline."""
    script = ("import time, sys; from edge.mqtt import MqttSink\n"
              "s = MqttSink('mqtt://127.0.0.1:%d/dev'); time.sleep(30)\n" % broker.port)
    watcher = Subscriber(broker.port)
    device = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    try:
        assert wait_for(lambda: ("online", False) in watcher.on("dev/status"))
    finally:
        device.kill()
        device.wait()
    assert wait_for(lambda: watcher.on("dev/status")[-1] == ("offline", False), 60)
    watcher.close()


@needs_broker
def test_mqtt_survives_broker_outage_without_blocking(broker):
    from edge.mqtt import MqttSink
    messages = []
    sink = MqttSink("mqtt://127.0.0.1:%d/cams" % broker.port, queue_size=8,
                    message=messages.append)
    assert wait_for(lambda: sink.stats()["connected"])
    broker.stop()
    assert wait_for(lambda: not sink.stats()["connected"])
    started = time.perf_counter()
    for frame in range(50):                       # the loop goes on while the broker is away
        sink.add_caption(record(frame, "during %d" % frame))
    assert time.perf_counter() - started < 0.5
    stats = sink.stats()
    assert stats["dropped"] >= 90 and stats["queued"] <= 8   # bounded, drops counted
    time.sleep(3)
    broker.start()
    watcher = Subscriber(broker.port)
    assert wait_for(lambda: sink.stats()["connected"] and sink.stats()["queued"] == 0, 40)
    assert wait_for(lambda: watcher.on("cams/status"))
    after = ["after %d" % i for i in range(20)]
    dropped = sink.stats()["dropped"]
    for i, text in enumerate(after):              # shown captions come a few a second
        sink.add_caption(record(100 + i, text))
        time.sleep(0.05)
    assert wait_for(lambda: len(watcher.captions("cams/cam0/caption")) >= 20)
    received = [c["caption"] for c in watcher.captions("cams/cam0/caption")]
    assert [c for c in received if c.startswith("after")] == after   # none lost, in order
    assert sink.stats()["connects"] == 2 and sink.stats()["error"] is None
    assert sink.stats()["dropped"] == dropped
    assert any("not connected" in m for m in messages)
    sink.close()
    watcher.close()


def test_bad_publish_outputs_are_one_line():
    from edge.errors import NanocapError
    from edge.mqtt import parse_mqtt_uri
    from edge.webhook import parse_header, parse_webhook
    assert parse_mqtt_uri("mqtt://u:p@broker.local/a/b") == {
        "host": "broker.local", "port": 1883, "topic": "a/b", "username": "u", "password": "p",
        "tls": False}
    assert parse_mqtt_uri("mqtts://[::1]")["port"] == 8883
    for bad in ("mqtt://", "mqtt://host:99999/t", "mqtt://host/a/#"):
        with pytest.raises(NanocapError):
            parse_mqtt_uri(bad)
    with pytest.raises(NanocapError):
        parse_webhook("webhook+ftp://host/x")
    with pytest.raises(NanocapError):
        parse_header("no colon")


class Receiver(object):
    """A real HTTP server on loopback taking webhook POSTs: answers at once, after
    ``delay_s``, or 503 for the first ``fail`` requests."""

    def __init__(self, delay_s=0.0, fail=0, status=200):
        from http.server import BaseHTTPRequestHandler, HTTPServer
        from socketserver import ThreadingMixIn
        receiver = self
        self.posts, self.requests, self.lock = [], 0, threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.requests += 1
                    failing = receiver.requests <= fail
                time.sleep(delay_s)
                code = 503 if failing else status
                if code == 200:
                    with receiver.lock:
                        receiver.posts.append((json.loads(body.decode()), dict(self.headers)))
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        class Server(ThreadingMixIn, HTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = "webhook+http://127.0.0.1:%d/hook" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def captions(self):
        with self.lock:
            return [p["caption"] for p, _ in self.posts]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_webhook_posts_retries_and_rejects():
    from edge.webhook import WebhookSink
    receiver = Receiver(fail=2)
    sink = WebhookSink(receiver.url, headers=[("Authorization", "Bearer s3")])
    sink.outbox.backoff_s = 0.05
    sink.add_caption(record(1, "first"))
    sink.add_caption(record(2, "hidden", shown=False))
    sink.add_caption(record(3, "second", index=2))
    assert wait_for(lambda: receiver.captions() == ["first", "second"], 10)
    payload, headers = receiver.posts[1]
    assert payload["input"] == 2 and payload["camera"] == "cam2" and payload["frame"] == 3
    assert headers["Authorization"] == "Bearer s3"
    assert headers["Content-Type"] == "application/json"
    assert receiver.requests == 4 and sink.stats()["sent"] == 2   # two 503s retried
    sink.close()
    receiver.close()
    rejecting = Receiver(status=404)
    sink = WebhookSink(rejecting.url)
    sink.add_caption(record(1, "refused"))
    assert wait_for(lambda: sink.stats()["failed"] == 1, 10)
    time.sleep(0.5)
    assert rejecting.requests == 1                                   # a 4xx is not retried
    sink.close()
    rejecting.close()


def _paced_run(bundle, output):
    """A 20 FPS paced synthetic camera, 3 s, gate off, to ``output``; while it runs,
    40 more shown captions are handed to the output as the loop hands them (one
    every 50 ms). Returns (summary, sink, slowest add_caption s, close s)."""
    from edge.backends import open_backend
    from edge.bundle import load_bundle
    from edge.gate import SceneGate
    from edge.live import run_live
    from edge.sinks import open_outputs
    from edge.sources import open_source
    source = open_source("synthetic://?width=160&height=120&fps=20&frames=60")
    backend = open_backend(load_bundle(bundle), "ort", None, "greedy", 3, None, None)
    sinks = open_outputs([output], source.fps, headless=True)
    slowest = []

    def feed():
        for frame in range(40):
            started = time.perf_counter()
            sinks[0].add_caption(record(frame, "caption %d" % frame))
            slowest.append(time.perf_counter() - started)
            time.sleep(0.05)

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        summary = run_live(source, backend, sinks, None, gate=SceneGate(enabled=False))
    finally:
        feeder.join()
        started = time.perf_counter()
        for sink in sinks:
            sink.close()
        closing_s = time.perf_counter() - started
    return summary, sinks[0], max(slowest), closing_s


@pytest.mark.parametrize("mode", ["slow", "silent"])
def test_webhook_that_is_slow_or_silent_never_slows_the_display(tiny_bundle, mode):
    if mode == "slow":
        receiver, url = Receiver(delay_s=2.0), None
    else:   # accepts connections (the kernel's backlog) and never answers
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        receiver, url = None, "webhook+http://127.0.0.1:%d/hook" % silent.getsockname()[1]
    summary, sink, slowest_s, closing_s = _paced_run(tiny_bundle, url or receiver.url)
    assert summary["frames"] >= 55 and summary["display_fps"] >= 18.0, summary
    assert slowest_s < 0.1                 # handing a caption over never waits for the far side
    stats = summary["outputs"][sink.name]
    assert stats["sent"] <= 2              # it really was slow (or silent): 2 s a POST at best
    assert stats["queued"] + stats["dropped"] + stats["sent"] >= 30
    assert closing_s < 7.0                 # close gives up after a bounded flush
    if receiver is not None:
        receiver.close()
    else:
        silent.close()


@needs_broker
def test_cli_mqtt_and_webhook_get_every_shown_caption(tiny_bundle, broker, tmp_path):
    watcher = Subscriber(broker.port)
    receiver = Receiver()
    env = dict(os.environ, PYTHONPATH=ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "edge", "synthetic://?width=96&height=72&frames=40&pace=0",
         "mqtt://127.0.0.1:%d/t" % broker.port, receiver.url, "--bundle", tiny_bundle,
         "--headless", "--gate", "off", "--log", "caps.jsonl", "--mqtt-ha-discovery",
         "--webhook-header", "X-Camera: porch"],
        cwd=str(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        universal_newlines=True, timeout=120)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    with open(str(tmp_path / "caps.jsonl")) as handle:
        shown = [json.loads(line)["frame"] for line in handle if json.loads(line)["shown"]]
    assert len(shown) == summary["captions_shown"] >= 1
    assert wait_for(lambda: len(watcher.captions("t/cam0/caption")) == len(shown))
    assert [c["frame"] for c in watcher.captions("t/cam0/caption")] == shown
    assert [p["frame"] for p, _ in receiver.posts] == shown
    assert receiver.posts[0][1]["X-Camera"] == "porch"
    assert any(t.startswith("homeassistant/sensor/") for t, _, _ in watcher.messages)
    for name, stats in summary["outputs"].items():
        assert stats["sent"] >= len(shown) and stats["dropped"] == 0, name
    watcher.close()
    receiver.close()


@needs_broker
def test_py36_publishes_with_the_jetsons_paho(broker):
    """The Jetson's runtime (Python 3.6, paho-mqtt 1.6.1): MQTT and webhook outputs."""
    from conftest import PY36, PY36_MISSING
    if PY36 is None:
        pytest.skip(PY36_MISSING)
    watcher = Subscriber(broker.port)
    receiver = Receiver()
    script = (
        "import sys, time\n"
        "from edge.mqtt import MqttSink\nfrom edge.webhook import WebhookSink\n"
        "import paho.mqtt\nprint(sys.version_info[:2], paho.mqtt.__version__)\n"
        "sinks = [MqttSink('mqtt://127.0.0.1:%d/py36', ha_discovery=True), WebhookSink(%r)]\n"
        "for s in sinks:\n"
        "    s.add_caption({'t': 0.5, 'frame': 7, 'caption': 'a red circle', 'tokens': [4],\n"
        "                   'latency_ms': 1.0, 'backend': 'ort', 'shown': True})\n"
        "for s in sinks:\n    s.close()\n    print(s.stats())\n" % (broker.port, receiver.url))
    result = subprocess.run([PY36, "-c", script], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "(3, 6) 1.6" in result.stdout
    assert wait_for(lambda: watcher.captions("py36/cam0/caption"))
    assert watcher.captions("py36/cam0/caption")[0]["frame"] == 7
    assert [p["caption"] for p, _ in receiver.posts] == ["a red circle"]
    watcher.close()
    receiver.close()
