"""The hand-written stub python/ets_async/_core.pyi matches the built extension (mypy.stubtest)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALLOWLIST = Path(__file__).with_name("stubtest_allowlist.txt")


def test_stub_matches_extension():
    env = {**os.environ, "MYPYPATH": str(ROOT / "python")}
    proc = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "ets_async._core", "--allowlist", str(ALLOWLIST)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
