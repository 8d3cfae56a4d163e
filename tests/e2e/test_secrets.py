"""No secret in any output: canaries planted in the API key, the registry password and the
private keys are found in no output of the daemon, the socket proxy, the CLIs or `diagnose`."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import DEMO_IMAGE, Cloud
from tests.e2e.test_migrate import as_operator, job_succeeds
from tests.e2e.test_register import become_healthy
from tests.registry import TestRegistry, remove_local_image

pytestmark = pytest.mark.e2e


def test_no_secret_reaches_any_output(cloud: Cloud, make_host_dir: Any) -> None:
    canary = f"CANARY-REGISTRY-{uuid.uuid4().hex}"
    with TestRegistry() as registry:
        image = f"{registry.address}/bigeye/demo:canary"
        registry.add_image(DEMO_IMAGE, "bigeye/demo", "canary")
        host = make_host_dir(cloud=cloud)
        (host.path / "agent_config").mkdir()
        (host.path / "agent_config" / "docker_token").write_text(canary + "\n")
        (host.path / "agent_config" / "docker_token").chmod(0o600)
        config = {"registry": {"server": registry.address, "username": "canary-user",
                               "password_file": "agent_config/docker_token"}}  # fmt: skip
        (host.path / "bigeye_agent.yml").write_text(yaml.safe_dump(config))
        as_operator(host.path)
        # the registry of this test is on the engine host's loopback: the proxy must admit it
        host.extra_env["BIGEYE_PROXY_ALLOW_LOOPBACK_REGISTRY"] = "1"
        outputs: dict[str, str] = {}
        try:
            done = host.register(f"datahealth={image}")
            outputs["register"] = done.stdout + done.stderr
            assert done.returncode == 0, outputs["register"]
            become_healthy(cloud, host)
            result = job_succeeds(cloud, host, "datahealth", "file_name=a.yml")["result"]
            assert result["image_digest"], "the image was pulled, with the registry login"
            for name, argv in {
                "sync --json": ["sync", "--json"],
                "compose status --json": ["compose", "status", "--json"],
                "diagnose": ["diagnose"],
                "diagnose --json": ["diagnose", "--json"],
            }.items():
                done = host.agent_cli(*argv)
                outputs[name] = done.stdout + done.stderr
            json.loads(host.agent_cli("diagnose", "--json").stdout)
            logs = host.compose("logs", "--no-log-prefix")
            outputs["compose logs"] = logs.stdout + logs.stderr
            check = host.compose("exec", "-T", "bigeye-agent-orchestrator",
                                 "bigeye-orchestrator", "check")  # fmt: skip
            outputs["bigeye-orchestrator check"] = check.stdout + check.stderr
        finally:
            remove_local_image(image)

    assert '"event": "polling"' in outputs["compose logs"], "the daemon's log was read"
    secrets = {"the registry password": canary, "the API key": host.key}
    for key_file in ("mtls.key", "mtls_ca.key"):
        body = (host.path / "agent_config" / key_file).read_text().splitlines()[1:-1]
        secrets |= {f"{key_file} line {i}": line for i, line in enumerate(body) if len(line) > 16}
    leaks = [
        f"{what} in the output of {name}"
        for name, text in outputs.items()
        for what, secret in secrets.items()
        if secret in text
    ]
    assert not leaks, leaks
