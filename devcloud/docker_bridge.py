"""Where containers reach this machine: the Docker default bridge's gateway address.

`extra_hosts: host.docker.internal:host-gateway` maps that name to this address, so the mTLS
front listens there (and on loopback for local clients).
"""

from __future__ import annotations

import ipaddress
from typing import Any

import aiodocker
import structlog

log = structlog.get_logger("devcloud.docker")

BRIDGE_NETWORK = "bridge"


def gateway_of(network: dict[str, Any]) -> str | None:
    """IPAM.Config[0].Gateway of a network inspect answer; else the subnet's first address
    (what the engine assigns the bridge when it does not report a gateway)."""
    configs = (network.get("IPAM") or {}).get("Config") or []
    first = configs[0] if configs and isinstance(configs[0], dict) else {}
    gateway = first.get("Gateway")
    if gateway:
        return str(gateway).split("/", 1)[0]
    subnet = first.get("Subnet")
    if not subnet:
        return None
    try:
        return str(next(ipaddress.ip_network(subnet, strict=False).hosts()))
    except (ValueError, StopIteration):
        return None


async def bridge_gateway() -> str | None:
    """The default bridge's gateway IP from the Docker API, or None (logged) when unknown."""
    try:
        docker = aiodocker.Docker()
        try:
            network = await docker.networks.get(BRIDGE_NETWORK)
            info = await network.show()
        finally:
            await docker.close()
    except Exception as exc:  # no engine, no socket access, no bridge network…
        log.warning("docker_bridge_unknown", reason=f"{type(exc).__name__}: {exc}")
        return None
    gateway = gateway_of(info)
    if gateway is None:
        log.warning("docker_bridge_unknown", reason="network bridge reports no IPAM config")
    return gateway
