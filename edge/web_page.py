"""The page served at ``/`` by ``edge.web``: one self-contained HTML string.

It shows ``/stream.mjpg`` (started after the page has loaded), the shown caption
(``#caption``), the captions computed, newest first, with their time and latency
(``#captions``, fed by ``/events``), and ``/status.json`` every 2 s (``#status``).
The page's own query string (``?token=T``) is passed on to every request.
"""

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>nanocap live</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{margin:0;font-family:sans-serif;background:#111;color:#eee;display:flex;flex-wrap:wrap}
#view{flex:3;min-width:320px;padding:8px}
#view img{max-width:100%;max-height:80vh;display:block;background:#000}
#side{flex:1;min-width:240px;padding:8px}#caption{font-size:1.6em;margin:8px 0}
#captions{list-style:none;padding:0;font-size:.9em}#captions li{margin:4px 0;color:#aaa}
#captions li.shown{color:#fff}#status{font-size:.8em;color:#8a8}
</style></head><body>
<div id="view"><img id="stream" alt="live picture"><div id="caption"></div></div>
<div id="side"><div id="status">connecting...</div><ul id="captions"></ul></div>
<script>
var q = location.search, list = document.getElementById("captions");
function item(r) {
  var li = document.createElement("li");
  li.textContent = r.t.toFixed(1) + " s  " + r.caption + "  (" + r.latency_ms.toFixed(0) + " ms)";
  if (r.shown) li.className = "shown";
  list.insertBefore(li, list.firstChild);
  while (list.children.length > 30) list.removeChild(list.lastChild);
}
function show(r) {
  var c = document.getElementById("caption");
  c.textContent = r.caption;
  c.setAttribute("data-frame", r.frame);
}
function status() {
  fetch("/status.json" + q).then(function (r) { return r.json(); }).then(function (s) {
    var p = s.caption_latency_ms || {};
    document.getElementById("status").textContent = "display " + s.display_fps +
      " fps | captions " + s.caption_fps + "/s | latency p50 " + p.p50 + " ms p95 " + p.p95 +
      " ms | " + s.backend + " " + (s.providers || []).join(",") + " | up " + s.uptime_s +
      " s | clients " + s.clients;
    return s;
  });
}
window.addEventListener("load", function () {
  fetch("/status.json" + q).then(function (r) { return r.json(); }).then(function (s) {
    (s.captions_recent || []).slice().reverse().forEach(item);
    if (s.shown) show(s.shown);
    var events = new EventSource("/events" + q);
    events.onmessage = function (e) {
      var r = JSON.parse(e.data);
      item(r);
      if (r.shown) show(r);
    };
  });
  document.getElementById("stream").src = "/stream.mjpg" + q;
  status();
  setInterval(status, 2000);
});
</script></body></html>
"""


def page_html():
    """The page as UTF-8 text (static: all live data comes from the other routes)."""
    return PAGE
