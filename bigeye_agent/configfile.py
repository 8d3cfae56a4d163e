"""`bigeye_agent.yml`, edited as the operator wrote it: backed up, spliced, verified, replaced.

The text changes only at the keys being set (bigeye_agent.yml belongs to the host's other agents
too); the result is re-read with the one loader before it replaces the file.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bigeye_agent import files, yamledit
from bigeye_agent import messages as m
from bigeye_agent.messages import CliError
from orchestrator.hostconfig import CONFIG_FILE_NAME, ConfigError, HostConfig, parse_host_config


def backup_name(now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"{CONFIG_FILE_NAME}.bak-{stamp}"


def edited(host_dir: Path, old_text: str | None, updates: dict[str, Any]) -> str:
    """The spliced file, verified by re-parsing (nothing is written here)."""
    path = host_dir / CONFIG_FILE_NAME
    try:
        new_text = yamledit.apply(old_text or "", updates)
        yamledit.verify(old_text or "", new_text, updates)
        parse_host_config(new_text, path)
    except (yamledit.YamlEditError, ConfigError) as exc:
        raise CliError(m.YAML_EDIT_FAILED, path=path, detail=exc) from None
    return new_text


def write_edit(host_dir: Path, old_text: str | None, updates: dict[str, Any]) -> tuple[str, str]:
    """(new text, what was done): backed up, spliced, verified, replaced atomically."""
    path = host_dir / CONFIG_FILE_NAME
    new_text = edited(host_dir, old_text, updates)
    if old_text is None:
        files.atomic_write(path, new_text.encode(), 0o644, files.owner_of(host_dir))
        return new_text, f"wrote {path}"
    if new_text == old_text:
        return new_text, f"{path} already had these settings: left unchanged"
    backup = host_dir / backup_name()
    suffix = 1
    while backup.exists():
        suffix += 1
        backup = host_dir / f"{backup_name()}-{suffix}"
    files.copy_file(path, backup)
    target = path.resolve()  # a symlinked file stays a symlink: its target is replaced
    info = target.stat()
    files.atomic_write(target, new_text.encode(), info.st_mode & 0o7777, (info.st_uid, info.st_gid))
    return new_text, f"backed up {path.name} as {backup.name}; updated {path}"


def parse(text: str, host_dir: Path) -> HostConfig:
    return parse_host_config(text, host_dir / CONFIG_FILE_NAME)
