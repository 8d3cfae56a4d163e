"""The web UI without Temporal (aiohttp's test server): login, sessions, CSRF, escaping, JSON.

Runs here are final rows of cloud.db, so no page needs Temporal; the real thing (a browser, a
devcloud, an orchestrator) is tests/integration/test_devcloud_ui.py.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from aiohttp.test_utils import TestClient, TestServer

from devcloud import db, hosts, jobs, keys, pki
from devcloud.api import ApiContext, build_app
from devcloud.web import page_models, params_form, timefmt
from devcloud.web.app import mount_ui
from devcloud.web.pages import LOGIN_REFUSED
from devcloud.web.sessions import SESSION_COOKIE, SessionStore
from devcloud.web.throttle import LoginThrottle

CA = pki.new_ca("account CA")
ORCH = "/api/v1/agent-orchestrator"
HOSTILE = "<script>window.pwned=1</script>"
ESCAPED = "&lt;script&gt;window.pwned=1&lt;/script&gt;"
JSON = {"Accept": "application/json"}


def register(conn, host_id="h1", agents=("datahealth", "lineage_plus"), installed=("sds",)):
    hosts.register_host(
        conn,
        hosts.RegisterHost.model_validate(
            {
                "host_id": host_id,
                "instance_id": "i1",
                "managed_agents": list(agents),
                "installed_agents": list(installed),
                "client_cert_pem": pki.issue_leaf(CA, host_id, server=False).cert_pem,
                "client_ca_pem": CA.cert_pem,
            }
        ),
    )


def heartbeat(host_id="h1", **overrides):
    return {
        "host_id": host_id,
        "sent_at": "2025-01-01T00:00:00Z",
        "orchestrator_version": "0.1.0",
        "build_id": "build-7",
        "managed_agents": ["datahealth"],
        "running_runs": ["r-running-1"],
        "docker": {"reachable": True, "version": "24.0.7"},
        "worker": {"polling": True, "slots_used": 1, "slots_max": 8},
        **overrides,
    }


def finished_run(conn, run_id="r1", job_id="h1-datahealth", log_tail=("line 1",), reason=None):
    jobs.save_job(conn, job_id, "h1", "datahealth", {"file_name": "a.yml"})
    jobs.insert_run(conn, jobs.Run(run_id, job_id, "h1", "datahealth", f"agent-job-{job_id}",
                                   "t1", "default", "2025-01-01T00:00:00Z"))  # fmt: skip
    result = {
        "job_id": job_id, "run_id": run_id, "host_id": "h1", "agent": "datahealth",
        "status": "failed", "exit_code": 3, "reason": reason, "image": "demo:dev",
        "image_id": "sha256:abc", "image_digest": None, "container_name": f"c-{run_id}",
        "started_at": "2025-01-01T00:00:01Z", "finished_at": "2025-01-01T00:01:06Z",
        "log_tail": list(log_tail), "orchestrator_version": "0.1.0",
    }  # fmt: skip
    jobs.finish_run(conn, run_id, "failed", result, None)


@pytest.fixture
async def ui(tmp_path):
    conn = db.connect(tmp_path)
    ctx = ApiContext(
        conn=conn,
        client=None,  # type: ignore[arg-type]  # these paths never reach Temporal
        temporal_address="host.docker.internal:7443",
        namespace="default",
        server_name="host.docker.internal",
        server_ca_pem="SERVER CA",
        on_trusted_ca=lambda pem: None,
    )
    app = build_app(ctx)
    mount_ui(app, ctx)
    client = TestClient(TestServer(app))
    await client.start_server()
    client.conn = conn
    client.keys = {role: keys.create_key(conn, role) for role in ("admin", "member")}
    yield client
    await client.close()
    conn.close()


async def login(ui, key=None):
    """Logs in; returns the CSRF token of the new session (read from the page, as a browser)."""
    response = await ui.post("/ui/login", data={"key": key or ui.keys["admin"]})
    assert response.status == 200 and response.url.path == "/ui/settings/agents/hosts"
    return re.search(r'name="csrf_token" value="([^"]+)"', await response.text()).group(1)


async def test_without_a_session_no_page_gives_data(ui):
    register(ui.conn)
    register(ui.conn, "secret-host-01")
    hosts.record_heartbeat(ui.conn, "h1", heartbeat(), datetime.now(UTC))
    finished_run(ui.conn)
    for path in ("/ui/settings/agents/hosts", "/ui/jobs", "/ui/runs/r1", "/ui/"):
        response = await ui.get(path, allow_redirects=False)
        assert response.status == 303 and response.headers["Location"] == "/ui/login", path
        assert "secret-host-01" not in await response.text()
        response = await ui.get(path, headers=JSON, allow_redirects=False)
        assert response.status == 401, path
        assert await response.json() == {"message": "log in first (/ui/login)"}
    before = jobs.list_jobs(ui.conn)
    for path in ("/ui/jobs/run", "/ui/runs/r1/cancel", "/ui/logout"):
        response = await ui.post(path, data={"host_id": "h1", "agent": "datahealth"},
                                 headers=JSON, allow_redirects=False)  # fmt: skip
        assert response.status == 401, path
    assert jobs.list_jobs(ui.conn) == before
    # a browser that follows the redirect lands on the login form, with nothing else
    response = await ui.get("/ui/settings/agents/hosts")
    text = await response.text()
    assert response.url.path == "/ui/login" and 'name="key"' in text
    assert "secret-host-01" not in text


async def test_unknown_and_member_keys_are_refused_alike(ui):
    answers = []
    for key in ("bigeye_pak_wrong", ui.keys["member"], ui.keys["admin"] + "x", ""):
        response = await ui.post("/ui/login", data={"key": key}, allow_redirects=False)
        assert response.status == 401
        assert "Set-Cookie" not in response.headers
        text = await response.text()
        assert LOGIN_REFUSED in text
        answers.append(text)
    assert len(set(answers)) == 1, "the answer tells nothing about the key"
    response = await ui.post("/ui/login", data={"key": ui.keys["member"]}, headers=JSON)
    assert response.status == 401 and await response.json() == {"message": LOGIN_REFUSED}


async def test_login_sets_a_strict_httponly_cookie_holding_a_session_token(ui):
    key = ui.keys["admin"]
    response = await ui.post("/ui/login", data={"key": key}, allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/ui/settings/agents/hosts"
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui" in cookie
    token = response.cookies[SESSION_COOKIE].value
    assert key not in cookie and keys.hash_key(key) not in cookie and len(token) >= 40
    assert (await ui.get("/ui/settings/agents/hosts")).status == 200
    # the API itself still wants its header: a UI session is not an API key
    assert (await ui.get(f"{ORCH}/hosts")).status == 401
    # logging in again gives a new token and ends the old session
    again = await ui.post("/ui/login", data={"key": key}, allow_redirects=False)
    assert again.cookies[SESSION_COOKIE].value != token
    ui.session.cookie_jar.clear()
    response = await ui.get("/ui/jobs", headers={**JSON, "Cookie": f"{SESSION_COOKIE}={token}"})
    assert response.status == 401


async def test_pages_answer_json_with_the_api_listings(ui):
    register(ui.conn)
    hosts.record_heartbeat(ui.conn, "h1", heartbeat(), datetime.now(UTC))
    finished_run(ui.conn)
    admin = {"Authorization": f"apikey {ui.keys['admin']}"}
    await login(ui)

    async def both(ui_path, api_path):
        from_ui = await (await ui.get(ui_path, headers=JSON)).json()
        from_api = await (await ui.get(api_path, headers=admin)).json()
        return from_ui, from_api

    from_ui, from_api = await both("/ui/settings/agents/hosts", f"{ORCH}/hosts")
    assert from_ui == from_api and from_ui[0]["health"] == "healthy"
    assert from_ui[0]["last_status"]["build_id"] == "build-7"
    data = await (await ui.get("/ui/jobs", headers=JSON)).json()
    assert data == {
        "jobs": await (await ui.get(f"{ORCH}/jobs", headers=admin)).json(),
        "runs": await (await ui.get(f"{ORCH}/runs", headers=admin)).json(),
    }
    from_ui, from_api = await both("/ui/runs/r1", f"{ORCH}/runs/r1")
    assert from_ui == from_api and from_ui["result"]["exit_code"] == 3
    response = await ui.get("/ui/runs/nope", headers=JSON)
    assert response.status == 404 and await response.json() == {"message": "unknown run nope"}
    response = await ui.get("/ui/runs/nope")
    assert response.status == 404 and "unknown run nope" in await response.text()


async def test_hosts_page_shows_health_versions_agents_slots_and_runs(ui):
    register(ui.conn)
    register(ui.conn, "h2", agents=("external_monitors",), installed=())
    hosts.record_heartbeat(ui.conn, "h1", heartbeat(), datetime.now(UTC))
    await login(ui)
    text = await (await ui.get("/ui/settings/agents/hosts")).text()
    h1 = text[text.index('data-host-id="h1"') : text.index('data-host-id="h2"')]
    assert 'data-health="healthy"' in h1 and "0.1.0" in h1 and "build build-7" in h1
    assert 'data-managed-agent="datahealth"' in h1 and 'data-installed-agent="sds"' in h1
    assert "1 / 8" in h1 and 'href="/ui/runs/r-running-1"' in h1 and "Docker 24.0.7" in h1
    h2 = text[text.index('data-host-id="h2"') :]
    assert 'data-health="no_data"' in h2 and "never" in h2
    assert "data-refresh" in text and "/ui/static/app.js" in text


async def test_posts_need_this_origin_and_the_session_csrf_token(ui):
    register(ui.conn)
    finished_run(ui.conn)
    csrf = await login(ui)
    origin = str(ui.make_url("")).rstrip("/")
    forged = [
        ({}, {}),  # no token
        ({"csrf_token": "wrong"}, {}),
        ({"csrf_token": csrf}, {"Origin": "http://evil.example"}),
        ({"csrf_token": csrf}, {"Origin": "null"}),
        ({"csrf_token": csrf}, {"Sec-Fetch-Site": "cross-site"}),
        ({}, {"X-CSRF-Token": csrf[:-1] + "x"}),
    ]
    for path in ("/ui/logout", "/ui/runs/r1/cancel", "/ui/jobs/run"):
        for data, headers in forged:
            response = await ui.post(path, data=data, headers=headers, allow_redirects=False)
            assert response.status == 403, (path, data, headers)
    assert (await ui.get("/ui/jobs", headers=JSON)).status == 200, "still logged in"
    # a login form posted from elsewhere is refused too (login CSRF)
    response = await ui.post("/ui/login", data={"key": ui.keys["admin"]},
                             headers={"Origin": "http://evil.example"})  # fmt: skip
    assert response.status == 403
    response = await ui.post("/ui/logout", data={"csrf_token": csrf},
                             headers={"Origin": origin}, allow_redirects=False)  # fmt: skip
    assert response.status == 303 and response.headers["Location"] == "/ui/login"
    assert (await ui.get("/ui/jobs", headers=JSON)).status == 401, "the session is gone"


async def test_failed_logins_are_throttled(ui):
    for _ in range(5):
        assert (await ui.post("/ui/login", data={"key": "bigeye_pak_guess"})).status == 401
    response = await ui.post("/ui/login", data={"key": ui.keys["admin"]})
    assert response.status == 429 and int(response.headers["Retry-After"]) > 0
    assert "Set-Cookie" not in response.headers


def test_throttle_counts_failures_in_a_window_per_client_and_overall():
    now = [0.0]
    throttle = LoginThrottle(per_client=2, overall=3, window_seconds=10, clock=lambda: now[0])
    throttle.failed("a")
    assert throttle.retry_after("a") == 0
    throttle.failed("a")
    assert throttle.retry_after("a") == 10 and throttle.retry_after("b") == 0
    throttle.failed("b")
    assert throttle.retry_after("c") == 10, "three failures overall"
    now[0] = 10.5
    assert throttle.retry_after("a") == 0 and throttle.retry_after("c") == 0
    throttle.failed("a")
    throttle.succeeded("a")
    assert throttle.retry_after("a") == 0


def test_sessions_expire_and_the_oldest_make_room():
    now = [0.0]
    store = SessionStore(lifetime_seconds=60, max_sessions=2, clock=lambda: now[0])
    first, session = store.create("admin")
    assert store.get(first) is session and store.get("forged") is None and store.get(None) is None
    assert first not in store._sessions, "the store keeps digests, not cookies"
    second, _ = store.create("admin")
    third, _ = store.create("admin")
    assert store.get(first) is None and store.get(second) and len(store) == 2
    now[0] = 61
    assert store.get(second) is None and store.get(third) is None
    fourth, other = store.create("admin")
    assert other.csrf_token != session.csrf_token
    store.delete(fourth)
    assert store.get(fourth) is None


async def test_hostile_text_from_hosts_jobs_and_logs_is_shown_as_text(ui):
    register(ui.conn)
    hosts.record_heartbeat(ui.conn, "h1", heartbeat(build_id=HOSTILE, running_runs=[HOSTILE]),
                           datetime.now(UTC))  # fmt: skip
    finished_run(ui.conn, log_tail=[HOSTILE, '<img src=x onerror="window.pwned=2">'],
                 reason=HOSTILE)  # fmt: skip
    jobs.save_job(ui.conn, "h1-datahealth", "h1", "datahealth", {"file_name": HOSTILE})
    await login(ui)
    for path in ("/ui/settings/agents/hosts", "/ui/jobs", "/ui/runs/r1"):
        text = await (await ui.get(path)).text()
        assert HOSTILE not in text and "<img" not in text, path
        assert ESCAPED in text or "\\u003cscript\\u003e" in text, path
    text = await (await ui.get("/ui/runs/r1")).text()
    assert '<span class="line">&lt;img src=x onerror=&#34;window.pwned=2&#34;&gt;</span>' in text


async def test_run_now_validates_as_the_contract_does_and_keeps_the_form(ui):
    register(ui.conn)
    csrf = await login(ui)
    form = {"csrf_token": csrf, "host_id": "h1", "agent": "datahealth", "new": "1",
            "job_id": "h1-datahealth", "param.file_name": HOSTILE}  # fmt: skip
    response = await ui.post("/ui/jobs/run", data=form)
    text = await response.text()
    assert response.status == 400
    assert "parameters.file_name: String should match pattern" in text
    assert HOSTILE not in text and f'value="{ESCAPED}"' in text, "shown again, as text"
    assert 'data-refresh-url="/ui/jobs"' in text, "refreshes from the page, not the form's action"
    for bad, message in [
        ({"param.file_name": "../etc/passwd"}, "parameters.file_name"),
        ({"param.file_name": "a.yml", "job_id": "bad id!"}, "job_id: String should match"),
        ({"param.file_name": "a.yml", "agent": "lineage"}, "agent: must be one of"),
        ({"param.file_name": "a.yml", "agent": "external_monitors", "param.connector": "x"},
         "does not manage agent external_monitors"),
        ({"param.file_name": "a.yml", "host_id": "nope"}, "unknown host nope"),
    ]:  # fmt: skip
        response = await ui.post("/ui/jobs/run", data={**form, **bad}, headers=JSON)
        assert response.status == 400, bad
        assert message in (await response.json())["message"], bad
    assert jobs.list_jobs(ui.conn) == [], "nothing was saved or started"


async def test_every_page_carries_the_security_headers(ui):
    await login(ui)
    for path in ("/ui/login", "/ui/settings/agents/hosts", "/ui/jobs", "/ui/static/app.js"):
        response = await ui.get(path, allow_redirects=False)
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
        assert response.headers["X-Frame-Options"] == "DENY", path
        assert response.headers["X-Content-Type-Options"] == "nosniff", path
    assert "<script>" not in await (await ui.get("/ui/jobs")).text(), "no inline script"


async def test_only_loopback_host_names_are_served(ui):
    await login(ui)
    for host in ("evil.example", "evil.example:80", "127.0.0.1.nip.io"):
        response = await ui.get("/ui/settings/agents/hosts", headers={"Host": host})
        assert response.status == 421, host
    response = await ui.get("/ui/login", headers={"Host": f"localhost:{ui.port}"})
    assert response.status in (200, 303)


async def test_the_root_leads_to_the_ui_and_the_api_keeps_its_json_errors(ui):
    response = await ui.get("/", allow_redirects=False)
    assert response.status == 303 and response.headers["Location"] == "/ui/"
    response = await ui.get(f"{ORCH}/hosts")
    assert response.status == 401 and "API key" in (await response.json())["message"]


def test_run_now_fields_follow_the_contract_models():
    fields = {f.name: f for f in params_form.form_fields("lineage_plus")}
    assert [(f.kind, f.required) for f in fields.values()] == [
        ("list", False), ("text", False), ("bool", False), ("bool", False),
    ]  # fmt: skip
    assert params_form.form_fields("datahealth")[0].required
    form = {"param.connectors": "snowflake, dbt  looker", "param.no_sync": "true",
            "param.connection_name": ""}  # fmt: skip
    assert params_form.parameters_from_form("lineage_plus", form) == {
        "connectors": ["snowflake", "dbt", "looker"], "no_sync": True,
        "skip_notifications": False,
    }  # fmt: skip
    parameters = params_form.parameters_from_form("lineage_plus", form)
    params_form.validate("j1", "lineage_plus", parameters)  # passes the contract
    shown = params_form.form_fields("lineage_plus", {"connectors": ["a", "b"], "no_sync": True})
    assert shown[0].value == "a, b" and shown[2].value is True
    with pytest.raises(params_form.FormRejected, match=r"parameters\.connector"):
        params_form.validate("j1", "external_monitors", {"connector": "Bad!"})


def test_jobs_page_groups_jobs_by_host_and_agent_newest_run_first():
    listed_hosts = [{"host_id": "h1", "health": "healthy", "managed_agents": ["datahealth"]}]
    listed_jobs = [
        {"job_id": "j1", "host_id": "h1", "agent": "datahealth", "parameters": {"file_name": "a"}},
        {"job_id": "j2", "host_id": "h1", "agent": "lineage_plus", "parameters": {}},
        {"job_id": "j3", "host_id": "gone", "agent": "datahealth", "parameters": {}},
    ]
    listed_runs = [
        {"run_id": "r1", "job_id": "j1", "status": "succeeded", "result": None},
        {"run_id": "r2", "job_id": "j1", "status": "running", "result": None},
    ]
    page = page_models.jobs_page(listed_hosts, listed_jobs, listed_runs)
    assert [g.host_id for g in page] == ["h1", "gone"]
    lineage, datahealth = page[0].agents  # in the contract's order of agents
    assert [r.run_id for r in datahealth.jobs[0].runs] == ["r2", "r1"]
    assert datahealth.jobs[0].form.fields[0].value == "a" and datahealth.new_job.new
    assert not lineage.managed and lineage.jobs[0].form is None and lineage.new_job is None
    refused = page_models.FormState("h1/datahealth/", "mine", {"file_name": "x"}, "bad")
    page = page_models.jobs_page(listed_hosts, listed_jobs, listed_runs, refused)
    new_job = page[0].agents[1].new_job
    assert (new_job.job_id, new_job.error, new_job.fields[0].value) == ("mine", "bad", "x")
    assert page[0].agents[1].jobs[0].form.error is None


def test_times_and_durations():
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert timefmt.when("2025-01-01T11:59:30.5Z") == "2025-01-01 11:59:30 UTC"
    assert timefmt.ago("2025-01-01T11:59:30Z", now) == "30 s ago"
    assert timefmt.ago(None, now) == "never" and timefmt.when(None) == "—"
    assert timefmt.duration("2025-01-01T11:00:00Z", "2025-01-01T12:01:05Z") == "1 h 01 min"
    assert timefmt.duration("2025-01-01T11:59:00Z", "2025-01-01T11:59:42Z") == "42 s"
    assert timefmt.duration("2025-01-01T11:59:00Z", None) == "—"


async def test_a_script_logs_in_with_json_and_posts_with_the_csrf_header(ui):
    response = await ui.post("/ui/login", data={"key": ui.keys["admin"]}, headers=JSON)
    answer = await response.json()
    assert response.status == 200 and answer["role"] == "admin" and answer["csrf_token"]
    assert (await ui.get("/ui/settings/agents/hosts", headers=JSON)).status == 200
    response = await ui.post("/ui/logout", headers={**JSON, "X-CSRF-Token": "nope"})
    assert response.status == 403
    response = await ui.post("/ui/logout", headers={**JSON, "X-CSRF-Token": answer["csrf_token"]})
    assert response.status == 200 and await response.json() == {"message": "logged out"}
    assert (await ui.get("/ui/settings/agents/hosts", headers=JSON)).status == 401
