"""Writing files in the host directory: atomically, and owned by the directory's owner.

The orchestrator's container runs as the owner of the host directory (so that it can read the
0600 keys); when `bigeye-agent` runs as root, what it writes is handed to that owner.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from bigeye_agent import messages as m
from bigeye_agent.messages import CliError

Owner = tuple[int, int]


def owner_of(path: Path) -> Owner:
    info = path.stat()
    return info.st_uid, info.st_gid


def give_to(path: Path, owner: Owner) -> bool:
    """chown to `owner` when running as root and it differs; True when something changed."""
    if os.geteuid() != 0:
        return False
    info = path.lstat()
    if (info.st_uid, info.st_gid) == owner:
        return False
    os.lchown(path, *owner)
    return True


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CliError(m.READ_FAILED, path=path, detail=exc.strerror or exc) from None


def atomic_write(path: Path, data: bytes, mode: int, owner: Owner | None = None) -> None:
    """Write `data` to a temporary file beside `path`, then rename it over `path`."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, mode)  # the umask may have narrowed it
        if owner is not None:
            give_to(tmp, owner)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CliError(m.WRITE_FAILED, path=path, detail=exc.strerror or exc) from None


def copy_file(source: Path, target: Path) -> None:
    """A byte-identical copy that keeps the mode, times and (as root) the owner."""
    try:
        shutil.copy2(source, target)
        give_to(target, owner_of(source))
    except OSError as exc:
        raise CliError(m.WRITE_FAILED, path=target, detail=exc.strerror or exc) from None


def make_dir(path: Path, owner: Owner) -> bool:
    """Create `path` (mode 0755) when missing; True when it was created."""
    if path.is_dir():
        return False
    try:
        path.mkdir(mode=0o755)
        give_to(path, owner)
    except OSError as exc:
        raise CliError(m.WRITE_FAILED, path=path, detail=exc.strerror or exc) from None
    return True
