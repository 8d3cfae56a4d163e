"""Jobs and their runs, as rows of `cloud.db`.

A job belongs to one host and one agent and keeps the parameters of its last run request. A
run's status lives in Temporal while it is open; once final, the row caches it.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from devcloud import db
from devcloud.health import format_time


class JobConflict(ValueError):
    """The job id exists for another host or agent."""


@dataclass(frozen=True)
class Job:
    job_id: str
    host_id: str
    agent: str
    parameters: dict[str, Any]

    def listing(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "host_id": self.host_id,
            "agent": self.agent,
            "parameters": self.parameters,
        }


def _job(row: sqlite3.Row) -> Job:
    return Job(row["job_id"], row["host_id"], row["agent"], json.loads(row["parameters"]))


def get_job(conn: sqlite3.Connection, job_id: str) -> Job | None:
    row = conn.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    return _job(row) if row else None


def list_jobs(conn: sqlite3.Connection) -> list[Job]:
    return [_job(row) for row in conn.execute("SELECT * FROM jobs ORDER BY job_id")]


def save_job(
    conn: sqlite3.Connection,
    job_id: str,
    host_id: str,
    agent: str,
    parameters: dict[str, Any] | None,
) -> Job:
    """Create the job, or update its parameters when given; JobConflict on another host/agent."""
    stamp = format_time(datetime.now(UTC))
    with db.transaction(conn):
        job = get_job(conn, job_id)
        if job is None:
            job = Job(job_id, host_id, agent, parameters or {})
            conn.execute(
                "INSERT INTO jobs (job_id, host_id, agent, parameters, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (job_id, host_id, agent, json.dumps(job.parameters), stamp, stamp),
            )
            return job
        if (job.host_id, job.agent) != (host_id, agent):
            raise JobConflict(f"job {job_id} belongs to host {job.host_id} and agent {job.agent}")
        if parameters is not None and parameters != job.parameters:
            job = replace(job, parameters=parameters)
            conn.execute(
                "UPDATE jobs SET parameters = ?, updated_at = ? WHERE job_id = ?",
                (json.dumps(parameters), stamp, job_id),
            )
    return job


# ---- runs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    run_id: str
    job_id: str
    host_id: str
    agent: str
    workflow_id: str
    temporal_run_id: str | None
    namespace: str
    requested_at: str
    status: str = "queued"
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    final: bool = False

    def view(self) -> dict[str, Any]:
        """A run as the API and `runs --json` show it (`error` only when there is one)."""
        shown: dict[str, Any] = {
            "job_id": self.job_id,
            "run_id": self.run_id,
            "host_id": self.host_id,
            "agent": self.agent,
            "status": self.status,
            "result": self.result,
        }
        if self.error is not None:
            shown["error"] = self.error
        return shown


def _loads(text: str | None) -> Any:
    return json.loads(text) if text else None


def _run(row: sqlite3.Row) -> Run:
    return Run(
        run_id=row["run_id"],
        job_id=row["job_id"],
        host_id=row["host_id"],
        agent=row["agent"],
        workflow_id=row["workflow_id"],
        temporal_run_id=row["temporal_run_id"],
        namespace=row["namespace"],
        requested_at=row["requested_at"],
        status=row["status"],
        result=_loads(row["result"]),
        error=_loads(row["error"]),
        final=bool(row["final"]),
    )


def insert_run(conn: sqlite3.Connection, run: Run) -> None:
    with db.transaction(conn):
        conn.execute(
            "INSERT INTO runs (run_id, job_id, host_id, agent, workflow_id, temporal_run_id, "
            "namespace, requested_at, status, final) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
            (
                run.run_id, run.job_id, run.host_id, run.agent, run.workflow_id,
                run.temporal_run_id, run.namespace, run.requested_at, run.status,
            ),
        )  # fmt: skip


def get_run(conn: sqlite3.Connection, run_id: str) -> Run | None:
    row = conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    return _run(row) if row else None


def list_runs(conn: sqlite3.Connection) -> list[Run]:
    return [_run(row) for row in conn.execute("SELECT * FROM runs ORDER BY requested_at, run_id")]


def finish_run(
    conn: sqlite3.Connection,
    run_id: str,
    status: str,
    result: dict[str, Any] | None,
    error: dict[str, Any] | None,
) -> None:
    """Cache a run's final status; a final row is never rewritten."""
    with db.transaction(conn):
        conn.execute(
            "UPDATE runs SET status = ?, result = ?, error = ?, final = 1 "
            "WHERE run_id = ? AND final = 0",
            (
                status,
                json.dumps(result) if result is not None else None,
                json.dumps(error) if error is not None else None,
                run_id,
            ),
        )
