"""``mqtt://[USER:PASS@]HOST[:PORT]/TOPIC`` (``mqtts://`` for TLS): shown captions
out to an MQTT broker, for Home Assistant, Node-RED and the rest of the house.

Topics under ``TOPIC`` (default ``nanocap``), one ``cam<i>`` per input::

    TOPIC/status            "online" / "offline" (retained; "offline" is the last will)
    TOPIC/cam<i>/caption    one JSON message per shown caption (QoS 1, not retained)
    TOPIC/cam<i>/state      the latest shown caption, same JSON (QoS 1, retained)

Each message is the ``--log`` line (``t``, ``frame``, ``caption``, ``tokens``,
``latency_ms``, ``backend``, ``shown``) plus ``input`` (the input's index),
``camera`` (``cam<i>``) and ``time`` (Unix seconds). With Home Assistant discovery
(``--mqtt-ha-discovery``) every (re)connection also publishes, retained, one
sensor per input at ``homeassistant/sensor/nanocap_<node>_cam<i>/config``.

The live loop never waits for the broker: captions go through an ``Outbox``
(bounded, oldest dropped and counted); while the broker is away they wait there
and go out, in order, once paho has reconnected (capped backoff, 1 to 30 s).
Needs paho-mqtt (1.6 on the Jetson's Python 3.6, 2.x elsewhere).
"""
import json
import re
import socket
import time

from edge.errors import NanocapError
from edge.outbox import Outbox, camera_name, caption_message

DEFAULT_TOPIC = "nanocap"
HA_PREFIX = "homeassistant"
PUBLISH_TIMEOUT_S = 10.0


def parse_mqtt_uri(uri):
    """``mqtt[s]://[user[:pass]@]host[:port][/topic]`` -> dict(host, port, topic,
    username, password, tls); one clear line for anything else."""
    match = re.match(r"^(mqtts?)://(?:([^:@/]*)(?::([^@/]*))?@)?(\[[^\]]+\]|[^:/]+)"
                     r"(?::(\d+))?(?:/(.*))?$", uri)
    if not match:
        raise NanocapError("bad MQTT output %r: expected mqtt://HOST[:PORT]/TOPIC" % uri)
    scheme, user, password, host, port, topic = match.groups()
    topic = (topic or DEFAULT_TOPIC).strip("/") or DEFAULT_TOPIC
    if "+" in topic or "#" in topic:
        raise NanocapError("bad MQTT topic %r in %s: no wildcards (+, #)" % (topic, uri))
    port = int(port) if port else (8883 if scheme == "mqtts" else 1883)
    if not 0 < port < 65536:
        raise NanocapError("bad MQTT port %d in %s" % (port, uri))
    return {"host": host.strip("[]"), "port": port, "topic": topic, "username": user or None,
            "password": password, "tls": scheme == "mqtts"}


def node_id():
    """This device's name for topics and discovery ids: the hostname, [a-z0-9_]."""
    return re.sub(r"[^a-z0-9_]+", "_", socket.gethostname().lower()).strip("_") or "nanocap"


def discovery_config(topic, index, node, version="0"):
    """Home Assistant MQTT discovery payload (a dict) of input ``index``'s caption sensor."""
    camera = camera_name(index)
    return {
        "name": "Caption %s" % camera,
        "unique_id": "nanocap_%s_%s_caption" % (node, camera),
        "object_id": "nanocap_%s_%s_caption" % (node, camera),
        "state_topic": "%s/%s/state" % (topic, camera),
        "value_template": "{{ value_json.caption }}",
        "json_attributes_topic": "%s/%s/state" % (topic, camera),
        "availability_topic": "%s/status" % topic,
        "payload_available": "online",
        "payload_not_available": "offline",
        "icon": "mdi:cctv",
        "device": {"identifiers": ["nanocap_%s" % node], "name": "nanocap %s" % node,
                   "manufacturer": "nanocap", "model": "MobileNet + GRU captioner",
                   "sw_version": version},
    }


def _import_paho():
    try:
        import paho.mqtt.client as paho
    except ImportError:
        raise NanocapError("mqtt:// outputs need paho-mqtt: pip install paho-mqtt "
                           "(on a Jetson's Python 3.6: pip install paho-mqtt==1.6.1)")
    return paho


def _make_client(paho, client_id):
    """A paho client on either API: 2.x wants the callback API version named."""
    if hasattr(paho, "CallbackAPIVersion"):
        return paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id)
    return paho.Client(client_id=client_id)


class MqttSink(object):
    """An output of the live loop (``write`` ignores frames; ``add_caption`` takes
    caption records, publishes the shown ones). ``inputs``: how many inputs
    the run has (discovery publishes one sensor each)."""

    def __init__(self, uri, inputs=1, ha_discovery=False, ha_prefix=HA_PREFIX,
                 queue_size=256, message=None):
        self.name = uri.split("@")[-1] if "@" in uri else uri   # no password in messages
        self.config = parse_mqtt_uri(uri)
        self.inputs, self.ha_discovery, self.ha_prefix = int(inputs), ha_discovery, ha_prefix
        self.node = node_id()
        self.message = message or (lambda text: None)
        paho = _import_paho()
        self.paho = paho
        self.client = _make_client(paho, "nanocap-%s-%d" % (self.node, int(time.time() * 1000)
                                                            % 100000000))
        topic = self.config["topic"]
        self.client.will_set("%s/status" % topic, "offline", qos=1, retain=True)
        if self.config["username"]:
            self.client.username_pw_set(self.config["username"], self.config["password"])
        if self.config["tls"]:
            self.client.tls_set()
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.on_connect = self._on_connect
        self.connects = 0
        self.outbox = Outbox(self._send, "mqtt %s:%d" % (self.config["host"], self.config["port"]),
                             size=queue_size, message=self.message)
        self.client.connect_async(self.config["host"], self.config["port"], keepalive=30)
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, reason, *rest):
        """From paho's thread on every (re)connection: online, discovery."""
        if getattr(reason, "value", reason) != 0:
            return
        self.connects += 1
        topic = self.config["topic"]
        client.publish("%s/status" % topic, "online", qos=1, retain=True)
        if self.ha_discovery:
            for index in range(self.inputs):
                config = discovery_config(topic, index, self.node)
                object_id = "nanocap_%s_%s" % (self.node, camera_name(index))
                client.publish("%s/sensor/%s/config" % (self.ha_prefix, object_id),
                               json.dumps(config), qos=1, retain=True)

    def write(self, frame):
        return -1

    def add_caption(self, record):
        """Queue a shown caption (``record``: a ``caption_record`` dict, optional ``input``)."""
        payload = caption_message(record)
        if payload is None:
            return
        text = json.dumps(payload)
        base = "%s/%s" % (self.config["topic"], payload["camera"])
        self.outbox.put(("%s/caption" % base, text, False))
        self.outbox.put(("%s/state" % base, text, True))

    def _send(self, item):
        """From the outbox thread: publish one message with QoS 1 and wait for the
        broker's acknowledgement; raises while the broker is away (retried)."""
        topic, payload, retain = item
        if not self.client.is_connected():
            raise ConnectionError("broker %s:%d not connected"
                                  % (self.config["host"], self.config["port"]))
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != self.paho.MQTT_ERR_SUCCESS:
            raise ConnectionError("publish failed: %s" % self.paho.error_string(info.rc))
        end = time.time() + PUBLISH_TIMEOUT_S
        while not info.is_published():
            if time.time() > end or not self.client.is_connected():
                raise ConnectionError("broker did not acknowledge %s" % topic)
            time.sleep(0.005)

    def stats(self):
        """Outbox counters plus ``connected`` and ``connects``."""
        data = self.outbox.stats()
        data.update({"connected": bool(self.client.is_connected()), "connects": self.connects})
        return data

    def close(self):
        """Send what is queued (5 s at most), say offline, disconnect."""
        self.outbox.close(flush_s=5.0)
        if self.client.is_connected():
            info = self.client.publish("%s/status" % self.config["topic"], "offline",
                                       qos=1, retain=True)
            end = time.time() + 2.0
            while not info.is_published() and time.time() < end:
                time.sleep(0.01)
        self.client.disconnect()
        self.client.loop_stop()
