"""Shared fixtures: the repository root, the real helm/kubectl binaries, and running the CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


def _tool(name: str) -> str:
    local = REPO / ".tools" / "bin" / name
    found = shutil.which(name) if not local.exists() else str(local)
    if not found:
        pytest.fail(f"{name} not found: run scripts/setup.sh")
    return found


@pytest.fixture(scope="session")
def helm() -> str:
    return _tool("helm")


@pytest.fixture(scope="session")
def kubectl() -> str:
    return _tool("kubectl")


RunCli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run_cli() -> RunCli:
    """Run `python -m bundler ARGS` in a subprocess with this checkout first on the path."""

    def run(*args: str, cwd: str | Path | None = None, env: dict[str, str] | None = None,
            input: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        return subprocess.run([sys.executable, "-m", "bundler", *args], cwd=cwd, env=full_env, input=input,
                              capture_output=True, text=True, timeout=timeout)

    return run
