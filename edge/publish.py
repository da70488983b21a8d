"""Captions out to other systems: ``mqtt://`` (``edge.mqtt``) and
``webhook+http(s)://`` (``edge.webhook``) outputs, opened by name."""
from edge.errors import NanocapError


def open_publisher(name, inputs=1, ha_discovery=False, headers=(), message=None):
    """The output for ``name``: an ``MqttSink`` or a ``WebhookSink``."""
    if name.startswith(("mqtt://", "mqtts://")):
        from edge.mqtt import MqttSink
        return MqttSink(name, inputs=inputs, ha_discovery=ha_discovery, message=message)
    if name.startswith("webhook+"):
        from edge.webhook import WebhookSink
        return WebhookSink(name, headers=headers, message=message)
    raise NanocapError("unknown output %r" % name)


def publisher_stats(sinks):
    """``{name: stats}`` of the sinks that publish captions (for the summary)."""
    return dict((s.name, s.stats()) for s in sinks if hasattr(s, "stats") and hasattr(s, "outbox"))
