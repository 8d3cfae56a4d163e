"""The "Run now" form: one input per parameter of the agent, as the contract's models declare.

The fields come from `orchestrator.contract.PARAMETER_MODELS`, and a submitted form becomes a
`JobRunRequest` checked by `parse_job_request`, the workflow's own validation: the page cannot
accept what the orchestrator would reject, nor drift from it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from devcloud import runs
from orchestrator.contract import PARAMETER_MODELS, InvalidRequest, parse_job_request

FIELD_PREFIX = "param."


class FormRejected(ValueError):
    """The form breaks the contract; `str()` says which key and why."""


def _check_agent(agent: str) -> None:
    if agent not in PARAMETER_MODELS:
        raise FormRejected(f"agent: must be one of {', '.join(PARAMETER_MODELS)}")


FieldKind = Literal["bool", "list", "text"]


@dataclass(frozen=True)
class FormField:
    name: str
    kind: FieldKind
    required: bool
    value: str | bool  # as the input shows it

    @property
    def input_name(self) -> str:
        return FIELD_PREFIX + self.name

    @property
    def hint(self) -> str:
        if self.kind == "list":
            return "comma-separated; empty: all"
        return "required" if self.required else "optional"


def _kind(agent: str, name: str) -> FieldKind:
    if runs.is_list_parameter(agent, name):
        return "list"
    annotation = PARAMETER_MODELS[agent].model_fields[name].annotation
    return "bool" if annotation is bool else "text"


def _shown(kind: FieldKind, value: Any) -> str | bool:
    if kind == "bool":
        return value is True or value == "true"
    if kind == "list" and isinstance(value, list):
        return ", ".join(str(item) for item in value)
    return "" if value is None else str(value)


def form_fields(agent: str, values: Mapping[str, Any] | None = None) -> list[FormField]:
    """The agent's parameters as inputs, showing `values` (a job's parameters or a form's)."""
    values = values or {}
    fields = []
    for name, info in PARAMETER_MODELS[agent].model_fields.items():
        kind = _kind(agent, name)
        fields.append(FormField(name, kind, info.is_required(), _shown(kind, values.get(name))))
    return fields


def submitted_values(agent: str, form: Mapping[str, str]) -> dict[str, str | bool]:
    """What the user typed, to show it again next to an error."""
    return {f.name: form.get(f.input_name, "") for f in form_fields(agent)}


def parameters_from_form(agent: str, form: Mapping[str, str]) -> dict[str, Any]:
    """The `parameters` object: an empty optional input is left out (null may be omitted)."""
    _check_agent(agent)
    parameters: dict[str, Any] = {}
    for field in form_fields(agent):
        raw = form.get(field.input_name, "")
        if field.kind == "bool":
            parameters[field.name] = raw == "true"
        elif field.kind == "list":
            parameters[field.name] = [item for item in re.split(r"[,\s]+", raw) if item]
        elif raw.strip():
            parameters[field.name] = raw.strip()
    return parameters


def validate(job_id: str, agent: str, parameters: dict[str, Any]) -> None:
    """Check the request the run would send, as the workflow checks it."""
    _check_agent(agent)
    request = runs.build_request(
        job_id=job_id, run_id=runs.new_run_id(), agent=agent, parameters=parameters
    )
    try:
        parse_job_request(request)
    except InvalidRequest as exc:
        raise FormRejected(str(exc)) from None
