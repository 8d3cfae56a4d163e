"""`bigeye-orchestrator check`: one line per problem on stderr, non-zero exit (design §5).

Settings fail before any connection is tried, so no Temporal or Docker is needed; the one case
that gets further points both at closed loopback ports.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from orchestrator.cli import check

CLI = Path(sys.executable).parent / "bigeye-orchestrator"
if not CLI.exists():
    CLI = Path("/work/main/.venv/bin/bigeye-orchestrator")


def run_check(**env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("BIGEYE_", "DOCKER_"))}
    return subprocess.run(
        [str(CLI), "check"],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bigeye_agent.yml"
    path.write_text(text, encoding="utf-8")
    return path


def test_broken_file_is_one_line_naming_the_key(tmp_path):
    path = write(tmp_path, "agents: {datahealth: {image: x, memory: lots}}\n")
    result = run_check(BIGEYE_AGENT_CONFIG=str(path))
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "agents.datahealth.memory" in lines[0]
    assert str(path) in lines[0]
    assert result.stdout == ""


def test_missing_file_is_one_line_naming_the_path(tmp_path):
    path = tmp_path / "missing" / "bigeye_agent.yml"
    result = run_check(BIGEYE_AGENT_CONFIG=str(path))
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0]
    assert "not found" in lines[0]


def test_yaml_syntax_error_is_one_line(tmp_path):
    path = write(tmp_path, "agents:\n  datahealth: {image: x\n")
    result = run_check(BIGEYE_AGENT_CONFIG=str(path))
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "line " in lines[0]


def test_partial_tls_is_one_line(tmp_path):
    path = write(tmp_path, "orchestrator: {host_id: h1, temporal: {address: '127.0.0.1:1'}}\n")
    result = run_check(BIGEYE_AGENT_CONFIG=str(path), BIGEYE_TLS_CERT="/x/mtls.pem")
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "BIGEYE_TLS_KEY" in lines[0]
    assert "BIGEYE_TLS_CA" in lines[0]


def test_unreachable_services_give_one_line_per_problem(tmp_path):
    path = write(tmp_path, "orchestrator: {host_id: h1, temporal: {address: '127.0.0.1:1'}}\n")
    result = run_check(BIGEYE_AGENT_CONFIG=str(path), DOCKER_HOST="tcp://127.0.0.1:1")
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 3, result.stderr
    assert "agents" in lines[0] and "no agent is installed" in lines[0]
    assert lines[1].startswith("cannot reach Temporal at 127.0.0.1:1")
    assert "127.0.0.1:1" in lines[2]


# ---- the function behind it ----------------------------------------------------------------


async def test_check_returns_the_settings_error_alone(tmp_path):
    path = write(tmp_path, "agents: {spark: {image: x}}\n")
    problems = await check({"BIGEYE_AGENT_CONFIG": str(path)})
    assert len(problems) == 1
    assert "spark" in problems[0]


async def test_check_reports_an_invalid_host_id(tmp_path):
    path = write(tmp_path, "orchestrator: {temporal: {address: 'x:1'}}\n")
    problems = await check({"BIGEYE_AGENT_CONFIG": str(path), "BIGEYE_HOST_ID": "bad_host"})
    assert len(problems) == 1
    assert "BIGEYE_HOST_ID" in problems[0]


def test_unreachable_docker_line_says_how_to_fix_it(tmp_path):
    path = write(tmp_path, "orchestrator: {host_id: h1, temporal: {address: '127.0.0.1:1'}}\n")
    result = run_check(BIGEYE_AGENT_CONFIG=str(path), DOCKER_HOST="tcp://127.0.0.1:1")
    docker_line = result.stderr.splitlines()[-1]
    assert "cannot reach the Docker engine" in docker_line
    assert "DOCKER_HOST" in docker_line
