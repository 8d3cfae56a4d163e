"""Worker Deployment Versioning: a run is finished by the release that started it.

Every host is one worker deployment, `agent-orchestrator-<host_id>` (a deployment name holds no
dot), and every release one version of it whose build id is the orchestrator's version. A job
run is pinned to the version whose worker took its first task; new runs go to the deployment's
current version, which the running orchestrator claims once its workers poll. Across
`compose upgrade` the old version keeps a *drainer* (the old image in drain mode) that finishes
the runs pinned to it and exits when none is open and another version is current.

The decisions are pure functions; the calls to Temporal are the thin functions below them.
"""

from __future__ import annotations

from dataclasses import dataclass

from temporalio.api.workflowservice.v1 import (
    DescribeWorkerDeploymentRequest,
    SetWorkerDeploymentCurrentVersionRequest,
)
from temporalio.client import Client
from temporalio.common import VersioningBehavior, WorkerDeploymentVersion
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import WorkerDeploymentConfig

from orchestrator.contract import JOB_WORKFLOW_TYPE

DEPLOYMENT_PREFIX = "agent-orchestrator-"
# A drainer leaves only after another version has been current this long and two looks in a
# row found no open run of its own: visibility may lag the runs' own state by a few seconds.
DRAIN_SETTLE_SECONDS = 30.0


def deployment_name(host_id: str) -> str:
    return f"{DEPLOYMENT_PREFIX}{host_id}"


def deployment_version(host_id: str, version: str) -> WorkerDeploymentVersion:
    return WorkerDeploymentVersion(deployment_name(host_id), version)


def deployment_config(host_id: str, version: str) -> WorkerDeploymentConfig:
    """What every worker of this process declares: its deployment version, runs pinned."""
    return WorkerDeploymentConfig(
        version=deployment_version(host_id, version),
        use_worker_versioning=True,
        default_versioning_behavior=VersioningBehavior.PINNED,
    )


def open_pinned_query(host_id: str, version: str) -> str:
    """Visibility query for this version's job runs that are still open."""
    pinned = f"{deployment_name(host_id)}:{version}"
    return (
        f"TemporalWorkerDeploymentVersion = '{pinned}' AND ExecutionStatus = 'Running' "
        f"AND WorkflowType = '{JOB_WORKFLOW_TYPE}'"
    )


@dataclass
class DrainState:
    """What a drainer has seen so far; `observe` decides whether it may leave."""

    version: str
    settle_seconds: float = DRAIN_SETTLE_SECONDS
    away_since: float | None = None  # when another version was first seen current
    empty_looks: int = 0

    def observe(self, current: str | None, open_runs: int, now: float) -> bool:
        """True when this version has no open run and has stopped taking new ones."""
        if current == self.version or current is None:
            # still (or again) the version new runs go to: nothing to wait out yet
            self.away_since, self.empty_looks = None, 0
            return False
        if self.away_since is None:
            self.away_since = now
        self.empty_looks = self.empty_looks + 1 if open_runs == 0 else 0
        return self.empty_looks >= 2 and now - self.away_since >= self.settle_seconds


def not_polled_yet(exc: Exception) -> bool:
    """The server has not seen this version's pollers yet: retry, it is not an outage."""
    return isinstance(exc, RPCError) and exc.status in (
        RPCStatusCode.NOT_FOUND,
        RPCStatusCode.FAILED_PRECONDITION,
    )


async def claim_current(client: Client, host_id: str, version: str) -> None:
    """Make this version the one new runs go to (a no-op when it already is)."""
    await client.workflow_service.set_worker_deployment_current_version(
        SetWorkerDeploymentCurrentVersionRequest(
            namespace=client.namespace,
            deployment_name=deployment_name(host_id),
            build_id=version,
            identity=client.identity,
        )
    )


async def current_version(client: Client, host_id: str) -> str | None:
    """The build id new runs go to; None before any version was made current."""
    try:
        described = await client.workflow_service.describe_worker_deployment(
            DescribeWorkerDeploymentRequest(
                namespace=client.namespace, deployment_name=deployment_name(host_id)
            )
        )
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    routing = described.worker_deployment_info.routing_config
    return routing.current_deployment_version.build_id or None


async def open_pinned(client: Client, host_id: str, version: str) -> int:
    """How many job runs pinned to this version are still open."""
    return (await client.count_workflows(open_pinned_query(host_id, version))).count
