"""The Temporal connection: outbound only, mTLS when configured, core logs forwarded."""

from __future__ import annotations

import logging

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    PrometheusConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)
from temporalio.service import TLSConfig

from orchestrator.ports import LOOPBACK, free_port
from orchestrator.settings import Settings, SettingsError


def make_runtime(metrics_bind: str | None = None) -> Runtime:
    """A runtime whose core (Rust) logs go to stdlib logging, rendered by structlog, and whose
    metrics (when `metrics_bind` is given) are served there for our /metrics to pass on."""
    return Runtime(
        telemetry=TelemetryConfig(
            logging=LoggingConfig(
                filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
                forwarding=LogForwardingConfig(logger=logging.getLogger("temporalio.core")),
            ),
            metrics=PrometheusConfig(bind_address=metrics_bind, durations_as_seconds=True)
            if metrics_bind
            else None,
        )
    )


METRICS_PORT_TRIES = 5


def runtime_with_metrics() -> tuple[Runtime, str | None]:
    """A runtime serving the SDK's metrics on a free loopback port, and that address. A port
    found free can be taken before the exporter binds it: another is tried, and after
    `METRICS_PORT_TRIES` the runtime goes without the SDK's metrics rather than not start."""
    for _ in range(METRICS_PORT_TRIES):
        address = free_loopback_address()
        try:
            return make_runtime(address), address
        except ValueError as exc:  # "Failed starting Prometheus exporter: Address already in use"
            if "Address already in use" not in str(exc):
                raise
    return make_runtime(None), None


def free_loopback_address() -> str:
    return f"{LOOPBACK}:{free_port()}"


def tls_config(settings: Settings) -> TLSConfig | bool:
    if settings.tls is None:
        return False
    files = settings.tls
    try:
        return TLSConfig(
            client_cert=files.cert.read_bytes(),
            client_private_key=files.key.read_bytes(),
            server_root_ca_cert=files.ca.read_bytes(),
            domain=files.server_name,
        )
    except OSError as exc:
        raise SettingsError(
            f"cannot read TLS file {exc.filename}: {exc.strerror}: check the BIGEYE_TLS_* paths "
            "and that the orchestrator's user can read them"
        ) from None


async def connect(settings: Settings, runtime: Runtime | None = None) -> Client:
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.namespace,
        tls=tls_config(settings),
        data_converter=pydantic_data_converter,
        runtime=runtime,
        identity=f"bigeye-orchestrator@{settings.host_id}",
    )


CLOSED_AFTER_CONNECT = "call error after connection"


def connect_error(exc: BaseException) -> str:
    """One stable line for a failed connect: the transport's own wording of a closed
    connection changes from one attempt to the next (reset, EOF, canceled), which would make
    every retry look like a new failure."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if CLOSED_AFTER_CONNECT in text:
        return (
            "Temporal's frontend (or a proxy in front of it) accepted the connection, then "
            "closed it before answering: a refused client certificate (mtls.pem, mtls.key), a "
            "wrong TLS server name (BIGEYE_TLS_SERVER_NAME), or a frontend down behind a proxy"
        )
    return text[:300]
