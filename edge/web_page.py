"""The page served at ``/`` by ``edge.web``: one self-contained HTML string.

Layout: the live picture fills the window left of a caption column (below it on
a narrow screen), scaled to fit without cropping; under it the shown caption
(``#caption``) and a status line (``#status``: display and caption rates,
latency, backend, uptime, clients; refreshed every 2 s from ``/status.json``).
The column lists the captions computed, newest first, with the time of day
(the browser's clock) and their latency (``#captions``, fed by ``/events``);
shown ones are bright.

The picture appears as soon as a first frame exists: ``#still`` loads
``/snapshot.jpg`` at once (retried until the loop has a frame) and stays
under ``#stream`` (``/stream.mjpg``, requested once the still has loaded),
which covers it from its first painted frame on. A browser paints an MJPEG
part only when the next one begins, so without the still a slow camera's
first frame would stay blank until its second.
The page's own query string (``?token=T``) is passed on to every request.

Several inputs (``inputs`` in ``/status.json``): ``#pic`` becomes a grid of
one ``/stream/<i>.mjpg`` picture per input (``#cam<i>``); the caption line
shows each input's caption, and the list names the input of each caption.
"""

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>nanocap live</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
html,body{margin:0;height:100%;background:#111;color:#eee;font-family:sans-serif}
body{display:flex;overflow:hidden}
#view{flex:1;display:flex;flex-direction:column;min-width:0}
#pic{flex:1;position:relative;min-height:0;background:#000}
#pic img{position:absolute;top:0;left:0;width:100%;height:100%;object-fit:contain}
#pic.grid{display:grid;gap:4px}
#pic.grid img{position:static;width:100%;height:100%;min-height:0;object-fit:contain}
#caption{white-space:pre-line;font-size:1.9em;line-height:1.3;padding:8px 14px;min-height:1.3em;color:#fff}
#status{font-size:1.05em;padding:6px 14px;background:#1d2733;color:#e8f0f8}
#side{width:30%;max-width:420px;min-width:240px;overflow-y:auto;border-left:1px solid #333}
#side h2{font-size:1em;margin:10px 12px 4px;color:#bbb;font-weight:normal}
#captions{list-style:none;margin:0;padding:0 12px 12px;font-size:1em}
#captions li{margin:6px 0;color:#999}#captions li.shown{color:#fff}
#captions .when{font-family:monospace;color:#8cb4dc;margin-right:.6em}
@media (max-width:760px){body{flex-direction:column;overflow:auto}
#view{height:75vh;flex:none}#side{width:auto;max-width:none;border:0}}
</style></head><body>
<div id="view"><div id="pic"><img id="still" alt=""><img id="stream" alt="live picture"></div>
<div id="caption"></div><div id="status">connecting...</div></div>
<div id="side"><h2>Captions, newest first</h2><ul id="captions"></ul></div>
<script>
var q = location.search, list = document.getElementById("captions"), offset = null;
var shown = {}, inputs = 1;
function cam(r) { return r.input === undefined ? "" : "cam" + r.input + ": "; }
function tiles(n) {
  var pic = document.getElementById("pic"), cols = Math.ceil(Math.sqrt(n));
  pic.innerHTML = "";
  pic.className = "grid";
  pic.style.gridTemplateColumns = "repeat(" + cols + ", 1fr)";
  for (var i = 0; i < n; i++) {
    var img = document.createElement("img");
    img.id = "cam" + i;
    img.alt = "cam" + i;
    img.src = "/stream/" + i + ".mjpg" + q;
    pic.appendChild(img);
  }
}
function two(n) { return (n < 10 ? "0" : "") + n; }
function clock(ms) {
  var d = new Date(ms);
  return two(d.getHours()) + ":" + two(d.getMinutes()) + ":" + two(d.getSeconds());
}
function item(r, when) {
  var li = document.createElement("li"), t = document.createElement("span");
  t.className = "when";
  t.textContent = clock(when);
  li.appendChild(t);
  li.appendChild(document.createTextNode(cam(r) + r.caption + "  (" + r.latency_ms.toFixed(0) + " ms)"));
  if (r.shown) li.className = "shown";
  list.insertBefore(li, list.firstChild);
  while (list.children.length > 50) list.removeChild(list.lastChild);
}
function show(r) {
  var c = document.getElementById("caption");
  shown[r.input || 0] = cam(r) + r.caption;
  c.textContent = Object.keys(shown).sort().map(function (k) { return shown[k]; }).join("\\n");
  c.setAttribute("data-frame", r.frame);
}
function fmt(x, digits, unit) {
  return x === null || x === undefined ? "-" : Number(x).toFixed(digits) + unit;
}
function status() {
  return fetch("/status.json" + q).then(function (r) { return r.json(); }).then(function (s) {
    var p = s.caption_latency_ms || {}, up = Math.round(s.uptime_s || 0);
    var providers = (s.providers || []).map(function (n) {
      return n.replace("ExecutionProvider", ""); });
    document.getElementById("status").textContent = "display " + fmt(s.display_fps, 1, " fps") +
      "  |  captions " + fmt(s.caption_fps, 1, "/s") + "  |  latency p50 " +
      fmt(p.p50, 0, " ms") + ", p95 " + fmt(p.p95, 0, " ms") + "  |  " + (s.backend || "-") +
      " " + providers.join(",") + "  |  up " + Math.floor(up / 60) + ":" + two(up % 60) +
      "  |  " + s.clients + " viewer" + (s.clients === 1 ? "" : "s");
    return s;
  });
}
function still() {
  var img = document.getElementById("still");
  if (!img) return;   // several inputs: tiles instead
  img.onerror = function () { setTimeout(still, 300); };
  img.onload = function () {
    var stream = document.getElementById("stream");
    if (stream) stream.src = "/stream.mjpg" + q;
  };
  img.src = "/snapshot.jpg" + q + (q ? "&" : "?") + "n=" + Date.now();
}
still();
status().then(function (s) {
  offset = Date.now() - 1000 * (s.uptime_s || 0);   // the loop's start, on this clock
  inputs = (s.inputs || []).length;
  if (inputs > 1) tiles(inputs);
  (s.captions_recent || []).slice().reverse().forEach(function (r) {
    item(r, offset + 1000 * r.t);
  });
  if (s.shown) show(s.shown);
  var events = new EventSource("/events" + q);
  events.onmessage = function (e) {
    var r = JSON.parse(e.data);
    item(r, Date.now());
    if (r.shown) show(r);
  };
});
setInterval(status, 2000);
</script></body></html>
"""


def page_html():
    """The page as UTF-8 text (static: all live data comes from the other routes)."""
    return PAGE
