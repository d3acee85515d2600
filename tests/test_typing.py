"""Static checks: the package type-checks (mypy with the pydantic plugin) and the code passes ruff's
lint rules (both configured in pyproject.toml; clippy runs in scripts/test.sh)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_package_type_checks():
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "python/ets_async"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_code_passes_ruff():
    run = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
