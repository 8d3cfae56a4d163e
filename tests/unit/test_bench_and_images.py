"""bench/stats.py's arithmetic and table; deploy/slim_wheels.py's rewriting of a wheel."""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.util
import io
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from bench.stats import Row, percentile, table

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("slim_wheels", ROOT / "deploy" / "slim_wheels.py")
assert spec is not None and spec.loader is not None
slim_wheels = importlib.util.module_from_spec(spec)
spec.loader.exec_module(slim_wheels)


def test_percentiles_are_measured_values() -> None:
    assert percentile([4, 1, 3, 2], 50) == 2
    assert percentile([4, 1, 3, 2], 95) == 4
    assert percentile([7.5], 99) == 7.5
    with pytest.raises(ValueError):
        percentile([], 50)


def test_rows_compare_as_their_kind_says() -> None:
    ratio = Row("one job", "in-process", "raw", 0.4, 0.5, "s", "≤ 1.10x")
    delta = Row("p50", "in-process", "raw", 300.0, 338.0, "ms", "≤ +50 ms", kind="delta")
    plain = Row("idle RSS", "in-process", "", None, 98.4, "MB", "≤ 70 MB", kind="plain")
    small = Row("round trip", "stack", "plain", 0.84, 3.12, "ms", "—", kind="delta")
    assert ratio.comparison() == "1.25x"
    assert delta.comparison() == "+38 ms"
    assert plain.comparison() == "—"
    lines = table([ratio, delta, plain, small]).splitlines()
    assert lines[2] == "| one job | in-process | 0.40 s (raw) | 0.50 s | 1.25x | ≤ 1.10x |"
    assert lines[3] == "| p50 | in-process | 300 ms (raw) | 338 ms | +38 ms | ≤ +50 ms |"
    assert lines[4] == "| idle RSS | in-process | — | 98 MB | — | ≤ 70 MB |"
    assert lines[5] == "| round trip | stack | 0.8 ms (plain) | 3.1 ms | +2.3 ms | — |"


def make_wheel(path: Path, library: bytes) -> None:
    files = {
        "temporalio/__init__.py": b"",
        "temporalio/bridge/lib.abi3.so": library,
        "temporalio/bridge/sdk-core/core/src/lib.rs": b"fn main() {}",
        "temporalio/bridge/Cargo.toml": b"[package]",
        "temporalio-1.0.dist-info/METADATA": b"Name: temporalio\n",
    }
    record = "".join(f"{name},,\n" for name in files) + "temporalio-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr("temporalio-1.0.dist-info/RECORD", record)


def test_a_slimmed_wheel_drops_the_sources_and_records_what_it_holds(tmp_path: Path) -> None:
    library = Path("/bin/true").read_bytes()  # a real ELF file, with a symbol table to strip
    wheel = tmp_path / "temporalio-1.0-py3-none-any.whl"
    make_wheel(wheel, library)
    assert slim_wheels.main(str(tmp_path)) == 0
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert names == {
            "temporalio/__init__.py",
            "temporalio/bridge/lib.abi3.so",
            "temporalio-1.0.dist-info/METADATA",
            "temporalio-1.0.dist-info/RECORD",
        }
        rows = list(csv.reader(io.StringIO(zf.read("temporalio-1.0.dist-info/RECORD").decode())))
        for name, hashed, size in rows:
            if name.endswith("RECORD"):
                continue
            data = zf.read(name)
            expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            assert hashed == "sha256=" + expected.decode() and int(size) == len(data)
        slimmed = zf.read("temporalio/bridge/lib.abi3.so")
    if shutil.which("strip"):
        assert len(slimmed) <= len(library)
    runnable = tmp_path / "true"  # what strip left still runs
    runnable.write_bytes(slimmed)
    runnable.chmod(0o755)
    assert subprocess.run([str(runnable)], check=False).returncode == 0
    # the stamp leaves a slimmed wheel alone the next time
    stamp = wheel.with_name(wheel.name + ".slim")
    assert stamp.read_text().strip() == hashlib.sha256(wheel.read_bytes()).hexdigest()
    before = wheel.read_bytes()
    assert slim_wheels.main(str(tmp_path)) == 0
    assert wheel.read_bytes() == before
