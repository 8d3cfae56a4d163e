"""`HostPing`: Bigeye asks a host how it is, on the host's own task queue."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.hoststatus import HostActivities
    from orchestrator.contract import HOST_PING_WORKFLOW_TYPE, HostStatus


# A ping is one short activity on the host queue: the release that polls it now answers.
@workflow.defn(name=HOST_PING_WORKFLOW_TYPE)
class HostPing:
    @workflow.run
    async def run(self, _: Any = None) -> dict[str, Any]:
        status: HostStatus = await workflow.execute_activity_method(
            HostActivities.host_status,
            start_to_close_timeout=timedelta(seconds=20),
            retry_policy=RetryPolicy(maximum_attempts=3),
        )
        return status.model_dump(mode="json")
