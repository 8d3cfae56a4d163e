"""Every line `bigeye-agent` prints on failure: one line naming what is wrong and how to fix it.

Each constant is a `str.format` template; docs/migration.md's troubleshooting table lists every
one of them (a unit test keeps the two in sync), with `{field}` written as `<field>`.
"""

from __future__ import annotations

from typing import Any


class CliError(Exception):
    """A failure the operator can fix; `str()` is the one line to print."""

    def __init__(self, template: str, **fields: Any) -> None:
        super().__init__(template.format(**fields) if fields else template)
        self.template = template


# ---- Docker on the host ------------------------------------------------------------------

DOCKER_MISSING = (
    "the docker command was not found: install Docker Engine and the Docker Compose V2 plugin "
    "(package docker-compose-plugin)"
)
COMPOSE_NOT_V2 = (
    "docker compose version does not report Compose V2 ({found}): install the Docker Compose V2 "
    "plugin (package docker-compose-plugin, or the docker-compose binary in "
    "/usr/local/lib/docker/cli-plugins/)"
)
DOCKER_PERMISSION = (
    "docker ps failed with permission denied: add your user to the docker group: "
    "sudo usermod -aG docker $USER, then log in again"
)
DOCKER_UNREACHABLE = (
    "docker ps failed ({detail}): start the Docker engine (sudo systemctl start docker) "
    "and check DOCKER_HOST"
)

# ---- arguments and the host directory ----------------------------------------------------

INVALID_HOST_ID = (
    "invalid host id '{host_id}': use letters, digits and hyphens (not first or last), "
    "at most 256 characters"
)
BAD_AGENT_SPEC = (
    "--agent '{value}' is not TYPE=IMAGE: write it like "
    "--agent datahealth=docker.io/bigeyedata/datahealth:latest"
)
UNKNOWN_AGENT = (
    "--agent '{value}': unknown agent type '{agent}': use one of lineage_plus, datahealth, "
    "external_monitors"
)
BAD_IMAGE = (
    "--agent '{value}': the image is empty or contains spaces: give an image reference like "
    "docker.io/bigeyedata/lineage-plus-connector:latest"
)
HOST_DIR_MISSING = (
    "the host directory {path} does not exist: run bigeye-agent from the directory holding "
    "bigeye_agent.yml (or an empty one on a fresh host)"
)
HOST_DIR_NOT_WRITABLE = (
    "cannot write to {path}: run bigeye-agent as the owner of the host directory (or with sudo)"
)
READ_FAILED = "cannot read {path}: {detail}: check the file's permissions"
WRITE_FAILED = "cannot write {path}: {detail}: check the directory's permissions and free space"
EXISTING_COMPOSE_INVALID = (
    "{path} is not valid YAML ({detail}): fix it, because it describes the agent services this "
    "host already runs"
)
KUBERNETES = (
    "Kubernetes hosts can't register: the orchestrator runs as a Docker Compose stack ({why})"
)
SOCKET_NOT_UNIX = (
    "DOCKER_HOST is {host}: the socket proxy needs the engine's unix socket: unset DOCKER_HOST "
    "or set it to unix:///path/to/docker.sock"
)
SOCKET_MISSING = (
    "there is no Docker socket at {path}: start Docker (a rootless engine: systemctl --user "
    "start docker) or point DOCKER_HOST at its unix socket"
)
PROJECT_CLASH = (
    "the services of {path} run as the Compose project '{project}', the orchestrator stack's "
    "own: set BIGEYE_COMPOSE_PROJECT to another name, then re-run bigeye-agent register"
)
INSTALL_WHICH = (
    "which agent? name it: bigeye-agent install AGENT, with AGENT lineage_plus, datahealth or "
    "external_monitors (there is no terminal to ask on)"
)
INSTALL_UNKNOWN = (
    "cannot install '{agent}': the orchestrator runs lineage_plus, datahealth and "
    "external_monitors (Data Source, SDS and Cross-Source keep running on their own)"
)
INSTALL_BAD_IMAGE = (
    "--image '{value}' is empty or contains spaces: give an image reference like "
    "docker.io/bigeyedata/datahealth:latest"
)
INSTALL_BAD_CONFIG_DIR = (
    "--config-dir '{value}' must be a directory inside the host directory other than "
    "agent_config itself, like agent_config/datahealth"
)
YAML_EDIT_FAILED = (
    "cannot update {path} without changing other settings ({detail}): remove the YAML "
    "anchors, aliases or flow style around docker_compose_enabled, orchestrator and agents, "
    "then re-run bigeye-agent register"
)
NOT_ENABLED = "Docker Compose mode is not enabled — re-run bigeye-agent register"
NOT_REGISTERED = "bigeye_agent.yml has no orchestrator.host_id: run bigeye-agent register first"

# ---- Bigeye's API --------------------------------------------------------------------------

BAD_URL = "invalid Bigeye URL '{url}': give --bigeye-url or BIGEYE_URL like https://app.bigeye.com"
NO_API_KEY = (
    "no API key: set BIGEYE_API_KEY to an admin Personal API Key "
    "(there is no terminal to prompt on)"
)
EMPTY_API_KEY = "the API key is empty: paste an admin Personal API Key, or set BIGEYE_API_KEY"
KEY_REJECTED = (
    "the API key was rejected by {url}: create an admin Personal API Key in Bigeye and set "
    "BIGEYE_API_KEY (and check --bigeye-url or BIGEYE_URL)"
)
NOT_ADMIN = (
    "an admin Personal API Key is required (this key's role is {role}): ask an account admin "
    "for one and set BIGEYE_API_KEY"
)
CANNOT_CONNECT = (
    "cannot connect to Bigeye at {url}: {detail}: check --bigeye-url or BIGEYE_URL and the "
    "network (proxy, firewall)"
)
NOT_JSON = (
    "{url} answered {method} {path} with HTTP {status} and a body that is not JSON: check "
    "that --bigeye-url or BIGEYE_URL is Bigeye's address"
)
UNEXPECTED_ANSWER = (
    "Bigeye answered {method} {path} with HTTP {status}: {detail}: retry, and contact Bigeye "
    "support if it persists"
)
BAD_ANSWER = (
    "Bigeye's answer to {method} {path} lacks a valid {field}: upgrade bigeye-agent "
    "(pip install -U bigeye-agent-orchestrator)"
)
ALREADY_REGISTERED = (
    "Host is already registered: host id '{host_id}' belongs to another machine: choose "
    "another --host-id (this machine's instance_id is in bigeye_agent.yml)"
)
REGISTER_REJECTED = (
    "Bigeye rejected the registration of '{host_id}': {detail}: fix that, then re-run "
    "bigeye-agent register"
)
HOST_UNKNOWN = "host '{host_id}' is not registered with Bigeye at {url}: run bigeye-agent register"

# ---- mTLS files in agent_config/ ---------------------------------------------------------

KEYS_COPY = (
    "{directory} has no mTLS files and the account already has {hosts} orchestrator host(s): "
    "copy the agent_config/ directory from a registered host, then re-run bigeye-agent register"
)
KEYS_PARTIAL = (
    "{directory} has {present} but lacks {missing}: copy the agent_config/ directory from a "
    "registered host (on the account's first host only: remove the mTLS files to generate them)"
)
KEYS_UNREADABLE = (
    "{path} is not a valid {what} ({detail}): copy the agent_config/ directory from a "
    "registered host"
)
KEYS_MISMATCH = (
    "{path} is not the private key of {certificate}: copy the agent_config/ directory from a "
    "registered host"
)
KEYS_NOT_SIGNED = (
    "{path} is not signed by mtls_ca.pem: copy the agent_config/ directory from a registered host"
)
KEYS_OTHER_ACCOUNT = (
    "{path} is not the CA this account trusts (SHA-256 {found}, expected {expected}): copy the "
    "agent_config/ directory from a registered host of this account"
)

# ---- docker compose --------------------------------------------------------------------

COMPOSE_FAILED = (
    "docker compose {command} failed (exit {code}): see its output above, fix the cause, then "
    "run bigeye-agent {retry}"
)
PULL_FAILED_LOCAL = (
    "docker compose pull failed: the images are present locally, so the stack is recreated "
    "from them (check registry access before the next upgrade)"
)
PULL_FAILED_MISSING = (
    "docker compose pull failed and {image} is not present locally: check the network and "
    "the registry login (docker login), then re-run bigeye-agent compose upgrade"
)
DRAINER_NOT_CREATED = (
    "cannot create the drainer that finishes the runs orchestrator {version} started ({detail}): "
    "nothing was changed; fix the cause, then re-run bigeye-agent {action}"
)
DRAINER_NOT_STARTED = (
    "the stack was upgraded but the drainer of orchestrator {version} did not start ({detail}): "
    "the runs {version} started wait for it; fix the cause, then run bigeye-agent compose up"
)
DRAINING = (
    "orchestrator {version} finishes the runs it started in {name}; it exits when none is left "
    "(bigeye-agent compose status shows it)"
)
INTERRUPTED = "interrupted: re-run the same command to finish"
