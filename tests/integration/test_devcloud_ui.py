"""The web UI in a real browser: Debian's chromium, driven by selenium through Debian's
chromedriver, against a real `bigeye-cloud-dev server` and a real `bigeye-orchestrator run`
(against devcloud's Temporal) that runs the demo agent's containers on the Docker engine.

One cloud, one host and one browser serve the module; the tests run in file order and build
on each other (no session → refused keys → login and the host turning healthy → Run now →
a hostile parameter → Cancel → logout). Screenshots go to the module's output directory
and, when BIGEYE_UI_SCREENSHOTS_DIR is set (`make ui-screenshots`), are copied there too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import (
    NoAlertPresentException,
    NoSuchElementException,
    StaleElementReferenceException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from devcloud import pki
from devcloud.web.pages import LOGIN_REFUSED
from devcloud.web.sessions import SESSION_COOKIE
from tests.e2e.conftest import Cloud, start_cloud, stop_cloud
from tests.integration.conftest import Host, agent, containers_of_host
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS_ENV = "BIGEYE_UI_SCREENSHOTS_DIR"
WINDOW = (1366, 900)
# Files the demo agent lists from its config directory, one log line each: markup that must
# reach the page as text. The `/` of `</script>` is a directory separator.
HOSTILE_IMG = '<img src=x onerror="window.pwned=1">'
HOSTILE_SCRIPT_DIR = "<script>window.pwned=2<"
HOSTILE_SCRIPT = f"{HOSTILE_SCRIPT_DIR}/script>"
HOSTILE_PARAMETER = "<script>window.pwned=3</script>"


# ---- the world: a cloud, a registered host, its orchestrator, a browser --------------------


@pytest.fixture(scope="module")
def cloud(docker_engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    cloud = start_cloud(tmp_path_factory.mktemp("ui-cloud"))
    yield cloud
    stop_cloud(cloud)


@pytest.fixture(scope="module")
def admin_key(cloud: Cloud) -> str:
    return cloud.key("admin")


@pytest.fixture(scope="module")
def ui_url(cloud: Cloud) -> str:
    url = str(cloud.endpoints["ui_url"])
    assert url.startswith("http://127.0.0.1:") and url.endswith("/ui/")
    return url


def http(
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    data: dict[str, str] | None = None,
    body: Any = None,
) -> tuple[int, dict[str, str], str]:
    """One request, redirects not followed: (status, headers, text)."""
    encoded = None
    if data is not None:
        encoded = urllib.parse.urlencode(data).encode()
    elif body is not None:
        encoded = json.dumps(body).encode()
    request = urllib.request.Request(url, data=encoded, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
    elif body is not None:
        request.add_header("Content-Type", "application/json")

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


@pytest.fixture(scope="module")
def host(cloud: Cloud, admin_key: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    """Registered with the cloud (datahealth, external_monitors; sds installed, not managed)."""
    host_id = f"ui-{uuid.uuid4().hex[:8]}"
    ca = pki.new_ca("account CA")
    registration = {
        "host_id": host_id,
        "instance_id": "ui-instance",
        "managed_agents": ["datahealth", "external_monitors"],
        "installed_agents": ["sds"],
        "client_cert_pem": pki.issue_leaf(ca, host_id, server=False).cert_pem,
        "client_ca_pem": ca.cert_pem,
    }
    status, _, text = http(
        "POST",
        f"{cloud.endpoints['api_url']}/api/v1/agent-orchestrator/hosts",
        headers={"Authorization": f"apikey {admin_key}"},
        body=registration,
    )
    assert status == 200, text
    directory = tmp_path_factory.mktemp("ui-host")
    host = Host(host_id, directory, cloud.endpoints["temporal_plain_address"])
    host.write_config(
        {
            # long enough to be seen running, short enough to wait for
            "datahealth": agent(env={"DEMO_SLEEP_SECONDS": "8", "DEMO_LOG_LINES": "3"}),
            "external_monitors": agent(env={"DEMO_SLEEP_SECONDS": "300"}),
        }
    )
    config = directory / "agent_config" / "datahealth"
    (config / f"{HOSTILE_IMG}.yml").write_text("x: 1\n")
    (config / HOSTILE_SCRIPT_DIR).mkdir()
    (config / f"{HOSTILE_SCRIPT}.yml").write_text("x: 1\n")
    yield host  # started by the test that watches it turn healthy
    if host.proc is not None and host.proc.poll() is None:
        host.terminate()
    leftovers = containers_of_host(host_id)
    if leftovers:
        subprocess.run(["docker", "rm", "-f", *leftovers], capture_output=True)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    assert not missing, (
        f"{' and '.join(missing)} missing: the web UI's browser tests need Debian's chromium "
        "and chromium-driver (scripts/setup.sh installs them: run `make setup`)"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tmp_path_factory.mktemp("chromium-profile")
    for argument in (
        "--headless=new",
        "--no-sandbox",  # tests run as root, where chromium's sandbox cannot start
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(argument)
    # An explicit driver path: selenium then never runs Selenium Manager (no download).
    service = Service(executable_path=str(CHROMEDRIVER))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        assert driver.service.path == str(CHROMEDRIVER), "Debian's chromedriver, not a download"
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Any:
    directory = tmp_path_factory.mktemp("ui-screenshots")
    copies = os.environ.get(SCREENSHOTS_ENV)

    def shoot(driver: WebDriver, name: str) -> Path:
        """The whole page (the viewport stretched to its height), saved as `ui-<name>.png`."""
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": WINDOW[0], "height": max(WINDOW[1], int(height)), "deviceScaleFactor": 1,
             "mobile": False},
        )  # fmt: skip
        path = directory / f"ui-{name}.png"
        try:
            assert driver.save_screenshot(str(path)), f"no screenshot of {name}"
        finally:
            driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        assert path.stat().st_size > 10_000, f"{path} is suspiciously small"
        if copies:
            Path(copies).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, Path(copies) / path.name)
        print(f"screenshot: {path}")
        return path

    return shoot


# ---- helpers -------------------------------------------------------------------------------


def wait(driver: WebDriver, within: float = 30) -> WebDriverWait:
    # Pages refresh their regions (and navigate after a POST): an element found a moment ago
    # may have been replaced, so a stale one is looked up again at the next poll.
    return WebDriverWait(
        driver,
        within,
        poll_frequency=0.2,
        ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
    )


def login(driver: WebDriver, ui_url: str, key: str) -> None:
    driver.get(f"{ui_url}login")
    field = wait(driver).until(lambda d: d.find_element(By.ID, "key"))
    field.clear()
    field.send_keys(key)
    driver.find_element(By.ID, "login").click()


def cookie_header(driver: WebDriver) -> dict[str, str]:
    cookie = driver.get_cookie(SESSION_COOKIE)
    assert cookie is not None, "no session cookie"
    return {"Cookie": f"{SESSION_COOKIE}={cookie['value']}"}


def page_json(driver: WebDriver, ui_url: str, path: str) -> Any:
    """A page's JSON, with the browser's session."""
    status, _, text = http(
        "GET", f"{ui_url}{path}", headers={"Accept": "application/json", **cookie_header(driver)}
    )
    assert status == 200, text
    return json.loads(text)


def cli_json(cloud: Cloud, command: str) -> Any:
    done = cloud.cli(command, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def host_row(driver: WebDriver, host_id: str) -> WebElement:
    return driver.find_element(By.CSS_SELECTOR, f'tr[data-host-id="{host_id}"]')


def run_form(driver: WebDriver, host_id: str, agent_type: str, job_id: str = "") -> WebElement:
    return driver.find_element(
        By.CSS_SELECTOR, f'form[data-form="{host_id}/{agent_type}/{job_id}"]'
    )


def run_status(driver: WebDriver) -> str | None:
    found = driver.find_elements(By.ID, "run-status")
    return found[0].get_attribute("data-status") if found else None


def no_script_ran(driver: WebDriver) -> None:
    assert driver.execute_script("return window.pwned") is None
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018 -- reading it is what raises


# ---- the tests, in order -------------------------------------------------------------------


def test_an_unauthenticated_request_gets_no_data(
    cloud: Cloud, host: Host, ui_url: str, browser: WebDriver, screenshots: Any
) -> None:
    for path in ("settings/agents/hosts", "jobs", "runs/r-none"):
        status, headers, text = http("GET", f"{ui_url}{path}")
        assert status == 303 and headers["Location"] == "/ui/login", path
        assert host.host_id not in text
        status, _, text = http("GET", f"{ui_url}{path}", headers={"Accept": "application/json"})
        assert (status, json.loads(text)) == (401, {"message": "log in first (/ui/login)"}), path
    status, _, _ = http(
        "POST",
        f"{ui_url}jobs/run",
        headers={"Accept": "application/json"},
        data={"host_id": host.host_id, "agent": "datahealth", "param.file_name": "a.yml"},
    )
    assert status == 401
    assert cli_json(cloud, "jobs") == [], "nothing was started"

    browser.get(f"{ui_url}settings/agents/hosts")
    wait(browser).until(lambda d: d.current_url.endswith("/ui/login"))
    assert host.host_id not in browser.page_source
    screenshots(browser, "login")


def test_a_wrong_key_and_a_member_key_are_refused(
    cloud: Cloud, ui_url: str, browser: WebDriver
) -> None:
    for key in ("bigeye_pak_not-a-key", cloud.key("member")):
        login(browser, ui_url, key)
        error = wait(browser).until(lambda d: d.find_element(By.ID, "login-error"))
        assert error.text == LOGIN_REFUSED
        assert browser.current_url.endswith("/ui/login")
        assert browser.get_cookie(SESSION_COOKIE) is None


def test_login_then_the_host_turns_healthy_on_the_hosts_tab(
    cloud: Cloud,
    host: Host,
    admin_key: str,
    ui_url: str,
    browser: WebDriver,
    screenshots: Any,
) -> None:
    login(browser, ui_url, admin_key)
    wait(browser).until(lambda d: d.current_url.endswith("/ui/settings/agents/hosts"))
    cookie = browser.get_cookie(SESSION_COOKIE)
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert admin_key not in cookie["value"]
    assert not browser.execute_script("return document.cookie"), "scripts cannot read it"

    health = host_row(browser, host.host_id).find_element(By.CSS_SELECTOR, "[data-health]")
    assert health.get_attribute("data-health") == "no_data"  # no orchestrator yet
    host.start()
    # no reload: the page refreshes itself
    wait(browser, 90).until(
        lambda d: (
            host_row(d, host.host_id)
            .find_element(By.CSS_SELECTOR, "[data-health]")
            .get_attribute("data-health")
            == "healthy"
        )
    )
    [listed] = cli_json(cloud, "hosts")
    row = host_row(browser, host.host_id)
    assert row.find_element(By.CSS_SELECTOR, "[data-health]").text == "Healthy"
    version = row.find_element(By.CSS_SELECTOR, '[data-field="version"]').text.splitlines()
    assert version[0] == listed["orchestrator_version"] and version[0], version
    assert version[1] == f"build {listed['last_status']['build_id']}", version
    assert row.find_element(By.CSS_SELECTOR, '[data-field="slots"]').text == "0 / 8"
    managed = row.find_elements(By.CSS_SELECTOR, "[data-managed-agent]")
    assert [m.text for m in managed] == ["datahealth", "external_monitors"]
    installed = row.find_elements(By.CSS_SELECTOR, "[data-installed-agent]")
    assert [i.text for i in installed] == ["sds"]
    screenshots(browser, "hosts")

    # the same data as `bigeye-cloud-dev hosts --json` (a heartbeat may land in between)
    wait_for(
        lambda: page_json(browser, ui_url, "settings/agents/hosts") == cli_json(cloud, "hosts"),
        60,
        "the Hosts tab's JSON to equal hosts --json",
    )
    assert listed["health"] == "healthy" and listed["last_status"]["worker"]["slots_max"] == 8


def test_run_now_starts_a_job_that_runs_then_succeeds_with_its_log_tail(
    cloud: Cloud, host: Host, ui_url: str, browser: WebDriver, screenshots: Any
) -> None:
    browser.find_element(By.LINK_TEXT, "Jobs").click()
    form = wait(browser).until(lambda d: run_form(d, host.host_id, "datahealth"))
    form.find_element(By.NAME, "param.file_name").send_keys("health.yml")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(browser).until(lambda d: "/ui/runs/" in d.current_url)
    run_id = browser.current_url.rsplit("/", 1)[1]
    wait(browser, 120).until(lambda d: run_status(d) == "running")
    assert browser.find_elements(By.ID, "cancel"), "an active run can be canceled"
    wait(browser, 120).until(lambda d: run_status(d) == "succeeded")

    log_tail = browser.find_element(By.ID, "log-tail")
    lines = [line.text for line in log_tail.find_elements(By.CSS_SELECTOR, ".line")]
    assert "datahealth run --file-name health.yml" in lines[0]
    for name in (HOSTILE_IMG, HOSTILE_SCRIPT):
        assert any(line.endswith(f"/app/config/{name}.yml") for line in lines), (name, lines)
    assert not log_tail.find_elements(By.CSS_SELECTOR, "img, script"), "markup stayed text"
    no_script_ran(browser)
    assert not browser.find_elements(By.ID, "cancel"), "a finished run has no Cancel"
    facts = browser.find_element(By.CSS_SELECTOR, "dl.facts").text
    assert "Exit code\n0" in facts and f"bigeye-job-{host.host_id}-datahealth-{run_id}" in facts
    screenshots(browser, "run")

    [shown] = [r for r in cli_json(cloud, "runs") if r["run_id"] == run_id]
    assert page_json(browser, ui_url, f"runs/{run_id}") == shown
    assert shown["status"] == "succeeded"
    assert [line.strip() for line in shown["result"]["log_tail"]] == lines

    browser.find_element(By.LINK_TEXT, "Jobs").click()
    cells = wait(browser).until(  # read at once: the runs table refreshes itself
        lambda d: [
            cell.text for cell in d.find_elements(By.CSS_SELECTOR, f'tr[data-run-id="{run_id}"] td')
        ]
    )
    assert cells[1] == "succeeded" and cells[4] == "0" and cells[3].endswith("s"), cells
    screenshots(browser, "jobs")
    assert page_json(browser, ui_url, "jobs") == {
        "jobs": cli_json(cloud, "jobs"),
        "runs": cli_json(cloud, "runs"),
    }


def test_a_hostile_parameter_is_refused_as_the_contract_says_and_shown_as_text(
    cloud: Cloud, host: Host, ui_url: str, browser: WebDriver
) -> None:
    runs_before = cli_json(cloud, "runs")
    job_id = f"{host.host_id}-datahealth"
    form = run_form(browser, host.host_id, "datahealth", job_id)
    field = form.find_element(By.NAME, "param.file_name")
    field.clear()
    field.send_keys(HOSTILE_PARAMETER)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    error = wait(browser).until(
        lambda d: run_form(d, host.host_id, "datahealth", job_id).find_element(
            By.CSS_SELECTOR, ".error"
        )
    )
    assert "parameters.file_name: String should match pattern" in error.text
    form = run_form(browser, host.host_id, "datahealth", job_id)
    assert form.find_element(By.NAME, "param.file_name").get_attribute("value") == (
        HOSTILE_PARAMETER
    )
    no_script_ran(browser)
    assert cli_json(cloud, "runs") == runs_before, "no run was started"


def test_cancel_ends_a_long_job_canceled_and_forged_posts_do_not(
    cloud: Cloud, host: Host, ui_url: str, browser: WebDriver, screenshots: Any
) -> None:
    browser.get(f"{ui_url}jobs")
    form = wait(browser).until(lambda d: run_form(d, host.host_id, "external_monitors"))
    form.find_element(By.NAME, "param.connector").send_keys("monte-carlo")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(browser).until(lambda d: "/ui/runs/" in d.current_url)
    run_id = browser.current_url.rsplit("/", 1)[1]
    wait(browser, 120).until(lambda d: run_status(d) == "running")

    csrf = browser.find_element(By.NAME, "csrf_token").get_attribute("value")
    assert csrf
    cancel_url = f"{ui_url}runs/{run_id}/cancel"
    origin = ui_url.removesuffix("/ui/")
    for data, headers in (
        ({}, {}),
        ({"csrf_token": "forged"}, {}),
        ({"csrf_token": csrf}, {"Origin": "http://attacker.example"}),
    ):
        status, _, _ = http("POST", cancel_url, data=data,
                            headers={**cookie_header(browser), **headers})  # fmt: skip
        assert status == 403, (data, headers)
    status, _, _ = http("POST", cancel_url, data={"csrf_token": csrf}, headers={"Origin": origin})
    assert status == 303, "without the cookie: to the login page"
    [listed] = [r for r in cli_json(cloud, "runs") if r["run_id"] == run_id]
    assert listed["status"] == "running", "no forged request canceled it"

    browser.find_element(By.ID, "cancel").click()
    notice = wait(browser).until(lambda d: d.find_element(By.CSS_SELECTOR, "p.notice"))
    assert notice.text == "Cancel requested."
    wait(browser, 90).until(lambda d: run_status(d) == "canceled")
    screenshots(browser, "run-canceled")
    [listed] = [r for r in cli_json(cloud, "runs") if r["run_id"] == run_id]
    assert listed["status"] == "canceled" and listed["result"]["status"] == "canceled"
    wait_for(lambda: not containers_of_host(host.host_id), 60, "the job container removed")


def test_logout_ends_the_session(ui_url: str, browser: WebDriver) -> None:
    old = cookie_header(browser)
    browser.find_element(By.ID, "logout").click()
    wait(browser).until(lambda d: d.current_url.endswith("/ui/login"))
    assert browser.get_cookie(SESSION_COOKIE) is None
    status, _, text = http(
        "GET", f"{ui_url}settings/agents/hosts", headers={"Accept": "application/json", **old}
    )
    assert status == 401 and json.loads(text) == {"message": "log in first (/ui/login)"}
