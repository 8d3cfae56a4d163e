"""Slims the runtime wheels in .wheels/ before the images install them: shared libraries lose
their symbol tables (`strip --strip-unneeded`: the code is unchanged, a traceback through them
just has no symbol names), and the Rust sources the temporalio wheel ships beside its compiled
bridge are left out. Each wheel's RECORD is rewritten to match, so pip installs it as usual.

About 30 MB less in the orchestrator image. A wheel already slimmed is left alone (a stamp
beside it holds its hash). Without `strip` on this machine, only the sources are left out.

    python deploy/slim_wheels.py .wheels
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

# Not needed to run: the bridge's Rust sources and build files (temporalio ships them).
DROPPED_PREFIXES = ("temporalio/bridge/sdk-core/", "temporalio/bridge/src/")
DROPPED_FILES = {"temporalio/bridge/Cargo.toml", "temporalio/bridge/Cargo.lock"}


def digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def dropped(name: str) -> bool:
    return name.startswith(DROPPED_PREFIXES) or name in DROPPED_FILES


def stripped(data: bytes, strip: str | None) -> bytes:
    if strip is None:
        return data
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "lib.so"
        path.write_bytes(data)
        done = subprocess.run([strip, "--strip-unneeded", str(path)], capture_output=True)
        return path.read_bytes() if done.returncode == 0 else data


def slim(wheel: Path, strip: str | None) -> tuple[int, int]:
    """Rewrites the wheel in place; its size before and after."""
    before = wheel.stat().st_size
    out = io.BytesIO()
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        record_name = next(n for n in src.namelist() if n.endswith(".dist-info/RECORD"))
        rows: list[list[str]] = []
        for info in src.infolist():
            if info.filename == record_name or dropped(info.filename):
                continue
            data = src.read(info)
            if info.filename.endswith(".so") or ".so." in info.filename:
                data = stripped(data, strip)
            dst.writestr(info, data)
            rows.append([info.filename, digest(data), str(len(data))])
        rows.append([record_name, "", ""])
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows(rows)
        dst.writestr(record_name, text.getvalue())
    wheel.write_bytes(out.getvalue())
    return before, wheel.stat().st_size


def main(directory: str) -> int:
    strip = shutil.which("strip")
    if strip is None:
        print("slim-wheels: no strip command (package binutils): shared libraries left as they are")
    for wheel in sorted(Path(directory).glob("*.whl")):
        stamp = wheel.with_name(wheel.name + ".slim")
        current = hashlib.sha256(wheel.read_bytes()).hexdigest()
        if stamp.exists() and stamp.read_text().strip() == current:
            continue
        with zipfile.ZipFile(wheel) as zf:
            worth = any(n.endswith(".so") or dropped(n) for n in zf.namelist())
        if worth:
            before, after = slim(wheel, strip)
            print(f"slim-wheels: {wheel.name}: {before / 1e6:.1f} → {after / 1e6:.1f} MB")
        stamp.write_text(hashlib.sha256(wheel.read_bytes()).hexdigest() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else ".wheels"))
