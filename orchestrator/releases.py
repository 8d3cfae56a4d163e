"""Release queues: a job run is finished by the orchestrator release that took it.

Bigeye starts every `AgentJobRun` on the host queue, `agent-orchestrator.<host_id>`, which only
the host's current release polls. There the run validates its request and hands the work to a
child, `<workflow id>@<version>/<run id>`, on that release's own *release queue*,
`agent-orchestrator.<host_id>@<version>` (whose activities follow on `….launch` and `….watch`).
Only that release polls it, so a release may change the child's workflow incompatibly: across
`compose upgrade` the retired release keeps a *drainer* (its image in drain mode) that polls its
release queues only, finishes the children on them and exits when none is left. The run on the
host queue relays the child's phases (signals), a cancel (passed on) and its result; that small
part is what every release must replay (`workflow.patched` and the recorded histories guard it).

Why a child and not continue-as-new: the server delays a run continued within
`history.workflowIdReuseMinimalInterval` (1 s by default) of its start, which would add a second
to every dispatch. Why not Temporal's Worker Deployment Versioning: it keeps a worker deployment
per host on the server (at most 100 per namespace by default, `matching.maxDeployments`), and a
task queue of many hosts' versions does not fit one deployment either (docs/scale.md). Task
queues are created on first use and cost the server nothing once idle, so this scheme holds at
any fleet size and needs no call to make a release current: polling the host queue does.

The drain decision is a pure function; the call to Temporal is the thin function below it.
"""

from __future__ import annotations

from dataclasses import dataclass

from temporalio.client import Client
from temporalio.common import WorkerDeploymentVersion
from temporalio.worker import WorkerDeploymentConfig

from orchestrator.contract import JOB_WORKFLOW_TYPE, release_queue, task_queue

# Identification only (never routing): the build id that workflow-task completions record in
# the histories, so that a history says which release ran each task. Set explicitly so that
# the SDK does not hash every loaded module at start-up to make one up.
BUILD_NAME = "agent-orchestrator"
# A drainer leaves only after it has looked this long and twice in a row found no open run on
# its queue: a child the retired daemon started just before it stopped reaches visibility a few
# seconds later.
DRAIN_SETTLE_SECONDS = 30.0


def run_queue(host_id: str, version: str) -> str:
    """The queue where `version` runs this host's job runs."""
    return release_queue(task_queue(host_id), version)


def build_identity(version: str) -> WorkerDeploymentConfig:
    """Every worker of this process names its release; routing stays unversioned."""
    return WorkerDeploymentConfig(
        version=WorkerDeploymentVersion(BUILD_NAME, version), use_worker_versioning=False
    )


def open_runs_query(host_id: str, version: str) -> str:
    """Visibility query for the job runs still open on `version`'s release queue."""
    return (
        f"TaskQueue = '{run_queue(host_id, version)}' AND ExecutionStatus = 'Running' "
        f"AND WorkflowType = '{JOB_WORKFLOW_TYPE}'"
    )


@dataclass
class DrainState:
    """What a drainer has seen so far; `observe` decides whether it may leave."""

    started: float
    settle_seconds: float = DRAIN_SETTLE_SECONDS
    empty_looks: int = 0

    def observe(self, open_runs: int, now: float) -> bool:
        """True when no run is left on this release's queue, seen twice after settling."""
        self.empty_looks = self.empty_looks + 1 if open_runs == 0 else 0
        return self.empty_looks >= 2 and now - self.started >= self.settle_seconds


async def open_runs(client: Client, host_id: str, version: str) -> int:
    """How many job runs on this release's queue are still open."""
    return (await client.count_workflows(open_runs_query(host_id, version))).count
