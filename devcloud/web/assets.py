"""The pages' one stylesheet and one script, served from memory (no build step, no inline code:
the Content-Security-Policy allows scripts and styles from these URLs only)."""

from __future__ import annotations

from typing import Final

STYLESHEET: Final = """
:root { --ink: #1d2433; --muted: #667085; --line: #e4e7ec; --bg: #f6f7f9; --brand: #3b5bdb;
        --ok: #067647; --ok-bg: #dcfae6; --warn: #b54708; --warn-bg: #fef0c7;
        --bad: #b42318; --bad-bg: #fee4e2; --idle: #475467; --idle-bg: #eaecf0;
        --run: #175cd3; --run-bg: #d1e9ff; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--ink); background: var(--bg); }
header.top { display: flex; align-items: center; gap: 24px; padding: 10px 24px;
             background: #fff; border-bottom: 1px solid var(--line); }
.brand { font-weight: 700; color: var(--brand); text-decoration: none; font-size: 16px; }
.brand small { color: var(--muted); font-weight: 400; }
nav.tabs { display: flex; gap: 4px; flex: 1; }
nav.tabs a { padding: 6px 12px; border-radius: 6px; color: var(--ink); text-decoration: none; }
nav.tabs a[aria-current="page"] { background: var(--run-bg); color: var(--run); font-weight: 600; }
main { padding: 16px 24px 40px; max-width: 1280px; }
h1 { font-size: 22px; margin: 4px 0 12px; }
h2 { font-size: 17px; margin: 0 0 10px; display: flex; gap: 10px; align-items: center; }
h3 { font-size: 15px; margin: 16px 0 6px; }
h4 { font-size: 14px; margin: 0 0 4px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 16px;
        margin-bottom: 16px; }
.narrow { max-width: 520px; }
.crumbs { color: var(--muted); margin: 0; }
.muted, small { color: var(--muted); }
.mono, code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
code { font-size: 12px; background: var(--bg); padding: 1px 4px; border-radius: 4px; }
table.grid { width: 100%; border-collapse: collapse; background: #fff; }
table.grid th, table.grid td { text-align: left; padding: 8px 10px; vertical-align: top;
                               border-bottom: 1px solid var(--line); }
table.grid th { font-size: 12px; text-transform: uppercase; letter-spacing: .03em;
                color: var(--muted); }
.badge { display: inline-block; padding: 2px 8px; border-radius: 999px; font-size: 12px;
         font-weight: 600; background: var(--idle-bg); color: var(--idle); }
.health-healthy, .status-succeeded { background: var(--ok-bg); color: var(--ok); }
.health-degraded, .status-timed_out, .status-canceled { background: var(--warn-bg);
                                                         color: var(--warn); }
.health-down, .status-failed { background: var(--bad-bg); color: var(--bad); }
.status-running, .status-queued { background: var(--run-bg); color: var(--run); }
.chip { display: inline-block; margin: 2px 4px 2px 0; padding: 0 6px; border-radius: 4px;
        background: var(--run-bg); color: var(--run); font-size: 12px; }
.chip.quiet { background: var(--idle-bg); color: var(--idle); }
.agent-jobs { border-top: 1px solid var(--line); margin-top: 12px; }
article.job { margin: 8px 0 16px; }
form.run-now { display: flex; flex-wrap: wrap; align-items: flex-end; gap: 8px 12px;
               margin: 6px 0 10px; }
form.run-now label { display: flex; flex-direction: column; font-size: 12px; color: var(--muted); }
form.run-now label.check { flex-direction: row; align-items: center; gap: 4px; }
form.run-now .error { flex-basis: 100%; }
input { font: inherit; padding: 5px 8px; border: 1px solid #d0d5dd; border-radius: 6px; }
button { font: inherit; padding: 6px 14px; border-radius: 6px; border: 1px solid var(--brand);
         background: var(--brand); color: #fff; cursor: pointer; }
button.danger { background: var(--bad); border-color: var(--bad); }
form.logout button { background: #fff; color: var(--ink); border-color: #d0d5dd; }
#login-form { display: flex; flex-direction: column; gap: 8px; }
.error { color: var(--bad); background: var(--bad-bg); padding: 6px 10px; border-radius: 6px; }
.notice { color: var(--run); background: var(--run-bg); padding: 6px 10px; border-radius: 6px; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; margin: 0 0 12px; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; word-break: break-all; }
pre.log { background: #101828; color: #e4e7ec; padding: 12px; border-radius: 6px;
          overflow-x: auto; font-size: 12px; line-height: 1.5; white-space: pre-wrap; }
"""

# Replaces each `[data-refresh]` region with the same region of a fresh copy of the page, so
# that forms being filled elsewhere on the page are left alone. A region the fresh page no
# longer marks (a run that ended) stops refreshing. The fresh HTML is parsed by DOMParser,
# which runs no script, and is the server's escaped output.
SCRIPT: Final = """
(function () {
  "use strict";
  var every = parseInt(document.body.getAttribute("data-refresh-ms") || "0", 10);
  // the page's own address: after a refused POST the location is the form's action
  var url = document.body.getAttribute("data-refresh-url") || window.location.href;
  if (!every) { return; }
  function regions() { return document.querySelectorAll("[data-refresh][id]"); }
  function schedule() { if (regions().length) { setTimeout(refresh, every); } }
  function refresh() {
    fetch(url, {
      headers: { "Accept": "text/html" }, credentials: "same-origin", cache: "no-store"
    }).then(function (response) {
      if (response.redirected || response.status === 401) {
        window.location.reload();  // the session ended: show the login page
        return null;
      }
      return response.ok ? response.text() : null;
    }).then(function (text) {
      if (text !== null) {
        var fresh = new DOMParser().parseFromString(text, "text/html");
        regions().forEach(function (region) {
          var next = fresh.getElementById(region.id);
          if (next) { region.replaceWith(document.importNode(next, true)); }
        });
      }
      schedule();
    }).catch(schedule);
  }
  schedule();
})();
"""
