# ruff: noqa: E501 -- template lines stay whole, so the markup reads as the page it makes
"""The pages' HTML: Jinja2 templates with autoescaping on for every one of them.

Every value a host, a job or an agent's log can influence goes through `{{ … }}`, so it is
escaped; nothing is marked safe. The templates live here, not in files, so that the package
needs no data files.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import jinja2

from devcloud.web import timefmt

BASE = "/ui"

_BASE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }} · Bigeye (local cloud)</title>
<link rel="stylesheet" href="{{ base }}/static/app.css">
{% if refresh_ms and not forms_on_page %}<noscript><meta http-equiv="refresh" content="{{ [refresh_ms // 1000, 1] | max }}"></noscript>{% endif %}
<script src="{{ base }}/static/app.js" defer></script>
</head>
<body data-refresh-ms="{{ refresh_ms or 0 }}" data-refresh-url="{{ refresh_url }}">
<header class="top">
  <a class="brand" href="{{ base }}/">Bigeye <small>local cloud</small></a>
  {% if session %}
  <nav class="tabs">
    <a href="{{ base }}/settings/agents/hosts"{% if nav == "hosts" %} aria-current="page"{% endif %}>Settings → Agents → Hosts</a>
    <a href="{{ base }}/jobs"{% if nav == "jobs" %} aria-current="page"{% endif %}>Jobs</a>
  </nav>
  <form method="post" action="{{ base }}/logout" class="logout">
    <input type="hidden" name="csrf_token" value="{{ session.csrf_token }}">
    <button type="submit" id="logout">Log out</button>
  </form>
  {% endif %}
</header>
<main>
{% block main %}{% endblock %}
</main>
</body>
</html>
"""

_LOGIN = """{% extends "base.html" %}
{% block main %}
<section class="card narrow">
<h1>Log in</h1>
<p>Use an <strong>admin</strong> Personal API Key of this local cloud
(<code>bigeye-cloud-dev keys create --role admin</code>).</p>
{% if error %}<p class="error" role="alert" id="login-error">{{ error }}</p>{% endif %}
<form method="post" action="{{ base }}/login" id="login-form">
  <label for="key">Admin API key</label>
  <input type="password" id="key" name="key" autocomplete="off" required autofocus>
  <button type="submit" id="login">Log in</button>
</form>
</section>
{% endblock %}
"""

_HOSTS = """{% extends "base.html" %}
{% block main %}
<p class="crumbs">Settings &rsaquo; Agents &rsaquo; <strong>Hosts</strong></p>
<h1>Hosts</h1>
<section id="hosts" data-refresh>
<p class="muted">As of {{ now_text }} · refreshes every {{ refresh_ms // 1000 }} s</p>
{% if not hosts %}
<p class="empty">No host yet. On a host: <code>bigeye-agent register --host-id …</code></p>
{% else %}
<table class="grid">
<thead><tr><th>Host</th><th>Health</th><th>Last heartbeat</th><th>Orchestrator</th>
<th>Agents</th><th>Slots used / max</th><th>Running runs</th></tr></thead>
<tbody>
{% for h in hosts %}{% set st = h.last_status or {} %}
<tr data-host-id="{{ h.host_id }}">
<td class="mono">{{ h.host_id }}</td>
<td><span class="badge health-{{ h.health }}" data-health="{{ h.health }}">{{ health_labels[h.health] }}</span></td>
<td>{% if h.last_heartbeat_at %}{{ ago(h.last_heartbeat_at) }}<br><small>{{ when(h.last_heartbeat_at) }}</small>{% else %}never{% endif %}</td>
<td data-field="version">{{ h.orchestrator_version or "—" }}<br><small data-field="build-id">build {{ st.get("build_id") or "—" }}</small>
{% set docker = st.get("docker") or {} %}{% if docker %}<br><small>Docker {{ docker.get("version") or "?" }}{% if not docker.get("reachable") %} (unreachable){% endif %}</small>{% endif %}</td>
<td><div>managed:
{% for a in h.managed_agents %}<span class="chip" data-managed-agent="{{ a }}">{{ a }}</span>{% else %}<span class="muted">none</span>{% endfor %}</div>
<div>installed, not managed:
{% for a in h.installed_agents %}<span class="chip quiet" data-installed-agent="{{ a }}">{{ a }}</span>{% else %}<span class="muted">none</span>{% endfor %}</div></td>
<td data-field="slots">{% set worker = st.get("worker") or {} %}{% if worker %}{{ worker.get("slots_used") }} / {{ worker.get("slots_max") }}{% else %}—{% endif %}</td>
<td data-field="running-runs">{% for r in st.get("running_runs") or [] %}<a class="mono" href="{{ base }}/runs/{{ r | urlencode }}">{{ r }}</a><br>{% else %}<span class="muted">none</span>{% endfor %}</td>
</tr>
{% endfor %}
</tbody>
</table>
{% endif %}
</section>
{% endblock %}
"""

_JOBS = """{% extends "base.html" %}
{% macro run_form(f, csrf) %}
<form method="post" action="{{ base }}/jobs/run" class="run-now" data-form="{{ f.key }}">
  <input type="hidden" name="csrf_token" value="{{ csrf }}">
  <input type="hidden" name="host_id" value="{{ f.host_id }}">
  <input type="hidden" name="agent" value="{{ f.agent }}">
  {% if f.new %}
  <input type="hidden" name="new" value="1">
  <label>job id <input name="job_id" value="{{ f.job_id }}" size="40" required></label>
  {% else %}
  <input type="hidden" name="job_id" value="{{ f.job_id }}">
  {% endif %}
  {% for field in f.fields %}
  {% if field.kind == "bool" %}
  <label class="check"><input type="checkbox" name="{{ field.input_name }}" value="true"{% if field.value %} checked{% endif %}> {{ field.name }}</label>
  {% else %}
  <label>{{ field.name }} <input name="{{ field.input_name }}" value="{{ field.value }}" placeholder="{{ field.hint }}"{% if field.required %} required{% endif %}></label>
  {% endif %}
  {% endfor %}
  <button type="submit">Run now</button>
  {% if f.error %}<p class="error" role="alert">{{ f.error }}</p>{% endif %}
</form>
{% endmacro %}
{% macro runs_table(job) %}
<div id="runs-{{ job.job_id }}" data-refresh>
{% if job.runs %}
<table class="grid runs">
<thead><tr><th>Run</th><th>Status</th><th>Started</th><th>Duration</th><th>Exit code</th><th>Reason</th></tr></thead>
<tbody>
{% for r in job.runs %}
<tr data-run-id="{{ r.run_id }}">
<td><a class="mono" href="{{ base }}/runs/{{ r.run_id | urlencode }}">{{ r.run_id }}</a></td>
<td><span class="badge status-{{ r.status }}" data-status="{{ r.status }}">{{ r.status }}</span></td>
<td>{{ r.started }}</td><td>{{ r.duration }}</td><td>{{ r.exit_code }}</td><td>{{ r.reason }}</td>
</tr>
{% endfor %}
</tbody>
</table>
{% else %}<p class="muted">No run yet.</p>{% endif %}
</div>
{% endmacro %}
{% block main %}
<h1>Jobs</h1>
{% if page_error %}<p class="error" role="alert">{{ page_error }}</p>{% endif %}
{% if not groups %}<p class="empty">No host yet: jobs run on registered hosts.</p>{% endif %}
{% for g in groups %}
<section class="card host-jobs" data-host-id="{{ g.host_id }}">
<h2><span class="mono">{{ g.host_id }}</span>
<span class="badge health-{{ g.health }}">{{ health_labels.get(g.health, g.health) }}</span></h2>
{% if not g.agents %}<p class="muted">This host manages no agent.</p>{% endif %}
{% for a in g.agents %}
<div class="agent-jobs" data-agent="{{ a.agent }}">
<h3>{{ a.agent }}{% if not a.managed %} <small class="muted">(no longer managed by this host)</small>{% endif %}</h3>
{% for job in a.jobs %}
<article class="job" data-job-id="{{ job.job_id }}">
<h4>job <span class="mono">{{ job.job_id }}</span></h4>
<p class="muted">last parameters <code>{{ job.parameters | tojson }}</code></p>
{% if job.form %}{{ run_form(job.form, csrf) }}{% endif %}
{{ runs_table(job) }}
</article>
{% endfor %}
{% if a.new_job %}
{% if a.jobs %}
<details{% if a.new_job.error %} open{% endif %}><summary>New {{ a.agent }} job</summary>{{ run_form(a.new_job, csrf) }}</details>
{% else %}
<div class="new-job">{{ run_form(a.new_job, csrf) }}</div>
{% endif %}
{% endif %}
</div>
{% endfor %}
</section>
{% endfor %}
{% endblock %}
"""

_RUN = """{% extends "base.html" %}
{% block main %}
<p class="crumbs"><a href="{{ base }}/jobs">Jobs</a> &rsaquo; <span class="mono">{{ run.job_id }}</span> &rsaquo; run</p>
<h1>Run <span class="mono">{{ run.run_id }}</span></h1>
{% if notice %}<p class="notice" role="status">{{ notice }}</p>{% endif %}
<section id="run" class="card"{% if active %} data-refresh{% endif %}>
<dl class="facts">
<dt>Status</dt><dd><span class="badge status-{{ run.status }}" id="run-status" data-status="{{ run.status }}">{{ run.status }}</span></dd>
<dt>Job</dt><dd class="mono">{{ run.job_id }}</dd>
<dt>Host</dt><dd class="mono">{{ run.host_id }}</dd>
<dt>Agent</dt><dd>{{ run.agent }}</dd>
{% for label, text in result_rows %}<dt>{{ label }}</dt><dd>{{ text }}</dd>
{% endfor %}
{% set error = run.get("error") or {} %}{% if error %}<dt>Error</dt><dd class="error">{{ error.get("type") }}: {{ error.get("message") }}</dd>{% endif %}
</dl>
{% if active %}
<form method="post" action="{{ base }}/runs/{{ run.run_id | urlencode }}/cancel" class="cancel">
  <input type="hidden" name="csrf_token" value="{{ csrf }}">
  <button type="submit" class="danger" id="cancel">Cancel</button>
</form>
{% endif %}
<h2>Log tail</h2>
{% if log_tail %}
<pre class="log" id="log-tail">{% for line in log_tail %}<span class="line">{{ line }}</span>
{% endfor %}</pre>
{% else %}<p class="muted" id="log-tail-empty">{% if active %}The log tail arrives with the result.{% else %}No log lines.{% endif %}</p>{% endif %}
</section>
{% endblock %}
"""

_ERROR = """{% extends "base.html" %}
{% block main %}
<section class="card narrow">
<h1>{{ status }}</h1>
<p class="error" role="alert">{{ message }}</p>
<p><a href="{{ base }}/settings/agents/hosts">Back to the hosts</a></p>
</section>
{% endblock %}
"""

TEMPLATES = {
    "base.html": _BASE,
    "login.html": _LOGIN,
    "hosts.html": _HOSTS,
    "jobs.html": _JOBS,
    "run.html": _RUN,
    "error.html": _ERROR,
}

_ENV = jinja2.Environment(
    loader=jinja2.DictLoader(TEMPLATES),
    autoescape=True,  # every template, whatever its name
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render(name: str, **context: Any) -> str:
    now = datetime.now(UTC)
    return _ENV.get_template(name).render(
        base=BASE,
        now_text=timefmt.when(now.isoformat()),
        when=timefmt.when,
        ago=lambda text: timefmt.ago(text, now),
        **{
            "session": None,
            "nav": None,
            "refresh_ms": 0,
            "refresh_url": "",
            "forms_on_page": False,
            **context,
        },
    )
