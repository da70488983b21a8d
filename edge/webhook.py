"""``webhook+http://HOST[:PORT]/PATH`` (or ``webhook+https://``): a POST of each
shown caption's JSON (the ``--log`` fields plus ``input``, ``camera`` and
``time``, as the MQTT output sends) to a URL, from an ``Outbox`` on its own thread.

Each POST has a timeout (``timeout_s``, default 5 s). A receiver that is down,
slow or answers 5xx/408/429 is retried with a capped backoff, the captions
waiting in the bounded outbox (oldest dropped and counted); a 4xx answer is a
rejection: that caption is dropped and counted as failed. The live loop never
waits for the receiver.
"""
import json

from edge.errors import NanocapError
from edge.outbox import Outbox, Rejected, caption_message

from urllib.error import HTTPError
from urllib.request import Request, urlopen

RETRIED_STATUS = (408, 425, 429)


def parse_webhook(uri):
    """``webhook+http(s)://...`` -> the http(s) URL; one clear line otherwise."""
    if not uri.startswith(("webhook+http://", "webhook+https://")):
        raise NanocapError("bad webhook output %r: expected webhook+http://HOST[:PORT]/PATH" % uri)
    url = uri[len("webhook+"):]
    if len(url.split("://", 1)[1].split("/", 1)[0]) == 0:
        raise NanocapError("bad webhook output %r: no host" % uri)
    return url


def parse_header(text):
    """``"Name: value"`` -> (name, value); one clear line otherwise."""
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise NanocapError("bad --webhook-header %r: expected 'Name: value'" % text)
    return name.strip(), value.strip()


class WebhookSink(object):
    """An output of the live loop: ``add_caption`` queues shown captions, a thread
    POSTs them as ``application/json``. ``headers``: extra ``(name, value)`` pairs."""

    def __init__(self, uri, headers=(), timeout_s=5.0, queue_size=256, message=None):
        self.url = parse_webhook(uri)
        self.name = uri
        self.headers = dict(headers)
        self.headers.setdefault("Content-Type", "application/json")
        self.headers.setdefault("User-Agent", "nanocap")
        self.timeout_s = float(timeout_s)
        self.outbox = Outbox(self._send, "webhook %s" % self.url, size=queue_size,
                             max_backoff_s=30.0, message=message)

    def write(self, frame):
        return -1

    def add_caption(self, record):
        """Queue a shown caption record (``caption_record`` dict, optional ``input``)."""
        payload = caption_message(record)
        if payload is not None:
            self.outbox.put(payload)

    def _send(self, payload):
        request = Request(self.url, data=json.dumps(payload).encode("utf-8"),
                          headers=self.headers)
        try:
            response = urlopen(request, timeout=self.timeout_s)
        except HTTPError as exc:
            if 400 <= exc.code < 500 and exc.code not in RETRIED_STATUS:
                raise Rejected("HTTP %d from %s" % (exc.code, self.url))
            raise
        try:
            response.read(65536)
        finally:
            response.close()

    def stats(self):
        return self.outbox.stats()

    def close(self):
        self.outbox.close(flush_s=min(2.0, self.timeout_s))
