"""The worker of task queue `bigeye-control-plane`: Bigeye's side of the host heartbeat."""

from __future__ import annotations

import sqlite3

from temporalio.client import Client
from temporalio.worker import Worker

from devcloud.heartbeat_activity import HeartbeatRecorder
from devcloud.heartbeat_workflow import AgentHeartbeat
from orchestrator.contract import CONTROL_PLANE_TASK_QUEUE


def control_plane_worker(client: Client, conn: sqlite3.Connection) -> Worker:
    """`AgentHeartbeat` and its recording activity (async: it runs on the server's loop)."""
    recorder = HeartbeatRecorder(conn)
    return Worker(
        client,
        task_queue=CONTROL_PLANE_TASK_QUEUE,
        workflows=[AgentHeartbeat],
        activities=[recorder.record],
    )
