"""Who the orchestrator's container runs as, and what it must be able to read.

Never root on the host. On a rootful engine it runs as the owner of the host directory when
that is not root; when root owns it, as a fixed unprivileged uid and group, and the few files
the orchestrator reads are given that group's read permission. On a rootless engine the
container's uid 0 is the engine's own unprivileged user (the owner of the host directory, whose
files it must read), so the stack runs as that uid 0 there. Keys are never made world-readable;
the account CA's private key (mtls_ca.key) is never given to the orchestrator at all.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from bigeye_agent import files
from bigeye_agent import messages as m
from bigeye_agent.messages import CliError

ORCHESTRATOR_UID = 10001
ORCHESTRATOR_GID = 10001
# What the orchestrator reads in the host directory (mounted read-only at /etc/bigeye).
READS = (
    "bigeye_agent.yml",
    "agent_config/mtls.pem",
    "agent_config/mtls.key",
    "agent_config/bigeye_workflows_ca.pem",
)


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    owner_is_root: bool
    rootless: bool = False

    @property
    def user(self) -> str:
        return f"{self.uid}:{self.gid}"

    def describe(self, host_dir: Path) -> str:
        if self.rootless:
            owner = files.owner_of(host_dir)[0]
            return (
                f"the orchestrator runs as uid 0 of the rootless engine's user namespace, which "
                f"is uid {owner} (the host directory's owner) on the host: never root"
            )
        return f"the orchestrator runs as uid {self.uid}, gid {self.gid} (never root)"


def orchestrator_identity(host_dir: Path, rootless: bool = False) -> Identity:
    if rootless:
        return Identity(0, 0, owner_is_root=False, rootless=True)
    uid, gid = files.owner_of(host_dir)
    if uid != 0:
        return Identity(uid, gid, owner_is_root=False)
    return Identity(ORCHESTRATOR_UID, ORCHESTRATOR_GID, owner_is_root=True)


def grant_reads(host_dir: Path, identity: Identity, extra: tuple[str, ...] = ()) -> list[str]:
    """Make what the orchestrator reads readable by its group; what changed, one line each.

    Only needed (and only done) when root owns the host directory; running as root.
    """
    if not identity.owner_is_root or os.geteuid() != 0:
        return []
    changed: list[str] = []
    for directory in (host_dir, host_dir / "agent_config"):
        if directory.is_dir():
            changed += _allow(directory, identity.gid, stat.S_IXGRP, "traverse")
    for name in (*READS, *extra):
        path = host_dir / name
        if path.is_file():
            changed += _allow(path, identity.gid, stat.S_IRGRP, "read")
    return changed


def _allow(path: Path, gid: int, bit: int, what: str) -> list[str]:
    info = path.stat()
    mode = stat.S_IMODE(info.st_mode)
    others = stat.S_IROTH if bit == stat.S_IRGRP else stat.S_IXOTH
    if mode & others and not path.name.endswith(".key"):
        return []  # everybody may already: nothing to give
    if info.st_gid == gid and mode & bit:
        return []
    new_mode = (mode | bit) & ~(stat.S_IWOTH | (stat.S_IRWXO if path.name.endswith(".key") else 0))
    try:
        os.chown(path, -1, gid)
        os.chmod(path, new_mode)
    except OSError as exc:
        raise CliError(m.WRITE_FAILED, path=path, detail=exc.strerror or exc) from None
    return [
        f"{path}: group {gid}, mode {new_mode:04o} (was group {info.st_gid}, mode {mode:04o}): "
        f"the orchestrator (uid {ORCHESTRATOR_UID}, not root) must {what} it"
    ]
