"""`bigeye-agent diagnose [--json]`: the host's state in one report, fit for a support ticket.

Host checks (Docker, Compose, the socket, the host directory, bigeye_agent.yml, the agent set,
the mTLS files' modes and dates), the stack's state, `bigeye-orchestrator check` and its
readiness run inside the stack, and the orchestrator's last log lines. Secrets are never read
into the report: of key files only their mode, owner and what their certificates say of
themselves; job output (`stream=agent` lines) is left out of the log excerpt.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bigeye_agent import checks, compose, keys
from bigeye_agent.compose_file import COMPOSE_FILE_NAME, ORCHESTRATOR_SERVICE
from bigeye_agent.messages import CliError
from bigeye_agent.sync import installed_set
from orchestrator import certificates
from orchestrator.version import VERSION

Print = Callable[[str], None]
LOG_LINES = 40
KEY_FILES = (keys.CLIENT_CERT, keys.CLIENT_KEY, keys.CA_CERT, keys.CA_KEY, keys.SERVER_CA)


def _attempt(problems: list[str], what: str, call: Callable[[], Any]) -> Any:
    try:
        return call()
    except CliError as exc:
        problems.append(f"{what}: {exc}")
        return None


def _key_files(key_dir: Path) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name in KEY_FILES:
        path = key_dir / name
        try:
            info = path.stat()
        except OSError:
            found[name] = {"present": False}
            continue
        mode = stat.S_IMODE(info.st_mode)
        found[name] = {"present": True, "mode": f"{mode:04o}", "uid": info.st_uid,
                       "gid": info.st_gid, "world_readable": bool(mode & stat.S_IROTH)}  # fmt: skip
    return found


def _in_stack(host_dir: Path, env: Mapping[str, str], *command: str) -> dict[str, Any]:
    argv = compose.compose_argv(host_dir, env, "exec", "-T", ORCHESTRATOR_SERVICE, *command)
    done = checks.docker(argv[1:], env)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    return {"exit_code": done.returncode, "output": lines[-20:]}


def _recent_log(host_dir: Path, env: Mapping[str, str]) -> list[Any]:
    argv = compose.compose_argv(
        host_dir, env, "logs", "--no-log-prefix", "--tail", str(LOG_LINES * 4), ORCHESTRATOR_SERVICE
    )
    done = checks.docker(argv[1:], env)
    events: list[Any] = []
    for line in done.stdout.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("stream") != "agent":  # not the jobs' output
            events.append(event)
    return events[-LOG_LINES:]


def collect(host_dir: Path, env: Mapping[str, str]) -> dict[str, Any]:
    problems: list[str] = []
    report: dict[str, Any] = {"cli_version": VERSION, "host_dir": str(host_dir),
                              "environment": environment_summary(env)}  # fmt: skip
    docker: dict[str, Any] = {}
    docker["compose"] = _attempt(problems, "Docker Compose", lambda: checks.check_compose_v2(env))
    _attempt(problems, "Docker", lambda: checks.check_docker_access(env))
    server = checks.docker(["version", "--format", "{{.Server.Version}}"], env)
    docker["engine"] = server.stdout.strip() if server.returncode == 0 else None
    socket = _attempt(problems, "the engine's socket", lambda: checks.docker_socket(env))
    docker["socket"] = str(socket) if socket else None
    docker["rootless"] = checks.engine_is_rootless(env)
    report["docker"] = docker

    owner = host_dir.stat() if host_dir.is_dir() else None
    report["owner"] = {"uid": owner.st_uid, "gid": owner.st_gid} if owner else None
    loaded = _attempt(problems, "bigeye_agent.yml", lambda: checks.read_host_config(host_dir))
    text, config = loaded if loaded else (None, None)
    registered = bool(config and config.docker_compose_enabled and config.orchestrator.host_id)
    report["config"] = {
        "present": text is not None,
        "valid": loaded is not None,
        "host_id": config.orchestrator.host_id if config else None,
        "docker_compose_enabled": bool(config and config.docker_compose_enabled),
        "temporal_address": config.orchestrator.temporal.address if config else None,
    }
    report["agents"] = [
        {"agent": f.agent, "managed": f.managed, "in_agent_set": f.in_agent_set, "image": f.image,
         "config_dir": f.config_dir, "why": f.why}
        for f in (installed_set(host_dir, text) if loaded else [])
    ]  # fmt: skip

    key_dir = host_dir / keys.AGENT_CONFIG_DIR
    report["keys"] = _key_files(key_dir)
    for name, info in report["keys"].items():
        if info.get("world_readable") and name.endswith(".key"):
            problems.append(f"{key_dir / name}: readable by everyone: chmod 0600 it")
    found = certificates.check_tls(
        key_dir / keys.CLIENT_CERT, certificates.read(key_dir / keys.CLIENT_CERT),
        key_dir / keys.CLIENT_KEY, certificates.read(key_dir / keys.CLIENT_KEY),
        key_dir / keys.SERVER_CA, certificates.read(key_dir / keys.SERVER_CA),
        key_dir / keys.CA_CERT, certificates.read(key_dir / keys.CA_CERT),
    ) if report["keys"][keys.CLIENT_CERT]["present"] else []  # fmt: skip
    report["certificates"] = [str(p) if p.fatal else f"warning: {p}" for p in found]
    problems += [str(p) for p in found if p.fatal]

    if registered and (host_dir / COMPOSE_FILE_NAME).is_file():
        ps = checks.docker(compose.compose_argv(host_dir, env, "ps", "-a", "--format", "json")[1:],
                           env)  # fmt: skip
        report["stack"] = (
            compose.services_of(ps.stdout) if ps.returncode == 0 else ps.stderr.strip()
        )
        report["long_running"] = compose.persistent_projects(host_dir, env)
        report["orchestrator_check"] = _in_stack(host_dir, env, "bigeye-orchestrator", "check")
        report["readiness"] = _in_stack(
            host_dir, env, "bigeye-orchestrator", "healthcheck", "--show"
        )
        report["recent_log"] = _recent_log(host_dir, env)
        if report["orchestrator_check"]["exit_code"] != 0:
            problems.append("bigeye-orchestrator check failed inside the stack: see its output")
        if report["readiness"]["exit_code"] != 0:
            problems.append("the orchestrator is not ready: see readiness")
    else:
        report["stack"] = "not registered: run bigeye-agent register"
    report["problems"] = problems
    return report


def diagnose(host_dir: Path, env: Mapping[str, str], as_json: bool, out: Print = print) -> int:
    report = collect(host_dir, env)
    if as_json:
        out(json.dumps(report, indent=2, sort_keys=True, default=str))
    else:
        for line in render(report):
            out(line)
    return 1 if report["problems"] else 0


def render(report: Mapping[str, Any]) -> list[str]:
    lines = [f"bigeye-agent {report['cli_version']} diagnose — {report['host_dir']}", ""]
    variables = ", ".join(f"{k} {v}" for k, v in report["environment"].items())
    lines.append(f"environment (names only): {variables}")
    docker = report["docker"]
    lines += [
        f"Docker engine {docker['engine'] or 'unreachable'}, Compose {docker['compose'] or '?'}, "
        f"socket {docker['socket'] or '?'}{' (rootless)' if docker['rootless'] else ''}",
    ]
    config = report["config"]
    lines.append(
        f"bigeye_agent.yml: {'valid' if config['valid'] else 'INVALID'}; host id "
        f"{config['host_id'] or '-'}; Docker Compose mode "
        f"{'on' if config['docker_compose_enabled'] else 'off'}"
    )
    lines.append("agents:")
    for agent in report["agents"] or [{"agent": "none found"}]:
        if "managed" not in agent:
            lines.append("  none found")
            continue
        kind = "managed" if agent["managed"] else "runs on its own"
        lines.append(f"  {agent['agent']}: {kind}; {agent['why']}")
    lines.append("mTLS files (modes only, never their content):")
    for name, info in report["keys"].items():
        state = f"mode {info['mode']}, uid {info['uid']}" if info["present"] else "missing"
        lines.append(f"  {name}: {state}")
    lines += [f"  {line}" for line in report["certificates"]]
    stack = report["stack"]
    lines.append("stack:")
    if isinstance(stack, list):
        for service in stack:
            lines.append(f"  {service['Service']}: {service['State']} {service['Health'] or ''}")
        for project, names in report.get("long_running", {}).items():
            lines.append(f"  long-running agents of project {project}: {', '.join(names)}")
        for title in ("orchestrator_check", "readiness"):
            result = report[title]
            lines.append(f"{title.replace('_', ' ')} (exit {result['exit_code']}):")
            lines += [f"  {line}" for line in result["output"]]
        lines.append(f"orchestrator log (last {len(report['recent_log'])} events):")
        lines += [f"  {json.dumps(event, sort_keys=True)}" for event in report["recent_log"]]
    else:
        lines.append(f"  {stack}")
    lines.append("")
    lines += [f"problem: {p}" for p in report["problems"]] or ["no problem found"]
    return lines


def environment_summary(env: Mapping[str, str]) -> dict[str, str]:
    """Which of the variables the CLI reads are set (names only: values may be secrets)."""
    names = ("BIGEYE_API_KEY", "BIGEYE_URL", "BIGEYE_COMPOSE_PROJECT", "DOCKER_HOST",
             "BIGEYE_ORCHESTRATOR_IMAGE", "BIGEYE_METRICS_ADDR")  # fmt: skip
    return {name: "set" if env.get(name) else "unset" for name in names}
