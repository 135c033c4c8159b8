"""The status page at ``/`` on a daemon's admin port: one self-contained HTML document.

The page polls ``/status`` (the same snapshot ``status --json`` prints) and renders the columns of the
``status`` command (logship.admin.table.STATUS_COLUMNS) with a lag-over-time sparkline per row, and a line
per stream an HA agent reports on (the snapshot's ``ha``; none where no agent does). Nothing
is loaded from elsewhere (no CDN, no fonts, no images): standbys often sit on closed networks, and the
page must work wherever the admin port is reachable. The rendering is in the page's own script, so the
server does no work for it beyond serving these bytes and the JSON it serves anyway.
"""

from __future__ import annotations

from aiohttp import web

from logship.admin.table import STATUS_COLUMNS

_HEADERS = "".join(f"<th>{header}</th>" for _, header in STATUS_COLUMNS)

# The script mirrors logship.admin.table (human_bytes, human_age, reason, progress_text) so the page and the
# command print the same words and units; tests/integration/test_status_page.py compares them.
_SCRIPT = r"""
"use strict";
const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];
const HISTORY = 120;  // samples kept per row for the sparkline
const history = new Map();
const params = new URLSearchParams(location.search);
const interval = Math.max(200, Number(params.get("interval") || 2000));

function bytes(n) {
  if (n === null || n === undefined) return "-";
  let v = Number(n);
  for (const unit of UNITS) {
    if (Math.abs(v) < 1024 || unit === "TiB") return unit === "B" ? `${Math.trunc(v)} B` : `${v.toFixed(1)} ${unit}`;
    v /= 1024;
  }
}
function age(s) {
  if (s === null || s === undefined) return "-";
  if (s < 1) return `${(s * 1000).toFixed(0)}ms`;
  if (s < 60) return `${s.toFixed(1)}s`;
  const pad = (x) => String(Math.trunc(x)).padStart(2, "0");
  if (s < 3600) return `${Math.trunc(s / 60)}m${pad(s % 60)}s`;
  return `${Math.trunc(s / 3600)}h${pad((s % 3600) / 60)}m`;
}
function known(v) { return v !== null && v !== undefined; }
function queue(segments, n) { return known(segments) ? `${segments} seg, ${bytes(n)}` : "-"; }
function at(name, when, now) {
  if (!name) return "-";
  return when ? `${name} (${age(Math.max(0, now - when))} ago)` : name;
}
function reason(row) {
  if (row.failure) return String(row.failure);
  if (row.suspended) return `suspended: ${row.comment || "(no comment)"}`;
  if (row.retrying) return `retrying: ${row.retrying}`;
  return row.comment ? String(row.comment) : "";
}
function replayLag(row) {
  let text = known(row.replay_wait_seconds) ? age(row.replay_wait_seconds) : "-";
  if (row.replay_lag_seconds) text += ` (lag ${age(row.replay_lag_seconds)})`;
  return text;
}
function progress(row) {
  const q = row.copy_queue_bytes, rate = row.delivery_rate_bytes;
  return q && rate > 0 ? `${bytes(rate)}/s, ETA ${age(q / rate)}` : "-";
}
function sparkline(points) {
  const w = 120, h = 24, max = Math.max(1e-3, ...points);
  const step = points.length > 1 ? w / (HISTORY - 1) : 0;
  const xy = points.map((p, i) => `${(i * step).toFixed(1)},${(h - 1 - (p / max) * (h - 2)).toFixed(1)}`);
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("width", w); svg.setAttribute("height", h); svg.setAttribute("class", "spark");
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", xy.join(" "));
  svg.appendChild(line);
  const title = document.createElementNS("http://www.w3.org/2000/svg", "title");
  title.textContent = `copy lag, last ${points.length} samples, max ${age(max)}`;
  svg.appendChild(title);
  return svg;
}
function td(text, cls) {
  const cell = document.createElement("td");
  cell.textContent = text === "" || text === null || text === undefined ? "-" : text;
  if (cls) cell.className = cls;
  return cell;
}
function haLines(blocks) {
  // The words are the daemon's (each block's text, from logship/ha/view_file.py ha_text), not redone here.
  return Object.keys(blocks || {}).sort().map((stream) => {
    const li = document.createElement("li");
    li.dataset.stream = stream;
    li.textContent = `HA ${stream}: ${blocks[stream].text || "-"}`;
    if (!blocks[stream].reporting) li.className = "stale";
    return li;
  });
}
function render(snapshot) {
  const now = Date.now() / 1000;
  document.getElementById("who").textContent = `${snapshot.role} on ${snapshot.node} (pid ${snapshot.pid})`;
  document.getElementById("ha").replaceChildren(...haLines(snapshot.ha));
  const body = document.getElementById("rows");
  const rows = [];
  for (const row of snapshot.copies || []) {
    const key = `${row.stream}\u0000${row.target || ""}`;
    const lag = Number(row.copy_lag_seconds ?? row.replay_wait_seconds ?? 0) || 0;
    const points = (history.get(key) || []).concat([lag]).slice(-HISTORY);
    history.set(key, points);
    const tr = document.createElement("tr");
    tr.dataset.stream = row.stream;
    tr.dataset.target = row.target || "";
    tr.dataset.state = row.state;
    tr.className = `state-${row.state}`;
    tr.append(td(row.stream), td(row.target || "-"), td(row.state, "state"),
      td(queue(row.copy_queue_segments, row.copy_queue_bytes)),
      td(queue(row.replay_queue_segments, row.replay_queue_bytes)),
      td(at(row.last_copied, row.last_copied_at, now)), td(at(row.last_replayed, row.last_replayed_at, now)),
      td(age(row.copy_lag_seconds)), td(replayLag(row)), td(progress(row)), td(reason(row)));
    const spark = document.createElement("td");
    spark.appendChild(sparkline(points));
    tr.appendChild(spark);
    rows.push(tr);
  }
  body.replaceChildren(...rows);
  const status = document.getElementById("updated");
  status.textContent = `updated ${new Date().toLocaleTimeString()}`;
  status.className = "";
  document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
}
async function poll() {
  try {
    const response = await fetch("status", {cache: "no-store"});
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    render(await response.json());
  } catch (err) {
    const status = document.getElementById("updated");
    status.textContent = `cannot read /status: ${err.message}`;
    status.className = "stale";
  } finally {
    setTimeout(poll, interval);
  }
}
poll();
"""

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.2em; margin: 0 0 .3em; }
#updated { color: #666; font-size: .9em; } #updated.stale { color: #b00; font-weight: bold; }
table { border-collapse: collapse; margin-top: 1em; }
th, td { padding: .25em .7em; border-bottom: 1px solid #ddd; text-align: left; white-space: nowrap; }
th { background: #f3f3f3; font-weight: 600; font-size: .85em; }
td.state { font-weight: 600; }
tr.state-Healthy td.state, tr.state-Activated td.state { color: #176d2c; }
tr.state-Suspended td.state, tr.state-Initializing td.state { color: #8a6100; }
tr.state-Disconnected td.state, tr.state-Failed td.state, tr.state-Fenced td.state,
tr.state-Refused td.state { color: #b00; }
#ha { list-style: none; margin: .3em 0 0; padding: 0; } #ha li.stale { color: #b00; }
svg.spark polyline { fill: none; stroke: #3569b5; stroke-width: 1.5; }
"""

PAGE = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>logship status</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{_STYLE}</style></head>
<body><h1>logship status</h1><div id="who">-</div><ul id="ha"></ul><div id="updated">loading /status ...</div>
<table><thead><tr><th>STREAM</th><th>TARGET</th>{_HEADERS}<th>COPY LAG OVER TIME</th></tr></thead>
<tbody id="rows"></tbody></table>
<p><a href="status">status JSON</a> &middot; <a href="metrics">metrics</a></p>
<script>{_SCRIPT}</script></body></html>
"""
"""The whole page; the script polls ``status`` relative to where it was served from."""


async def serve_page(request: web.Request) -> web.Response:
    """Return the status page; the CSP forbids anything not in the document itself."""
    return web.Response(
        text=PAGE,
        content_type="text/html",
        headers={
            "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; "
            "style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:",
            "Cache-Control": "no-store",
        },
    )
