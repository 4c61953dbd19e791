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


@pytest.fixture(scope="session")
def run_cli() -> RunCli:
    """Run `python -m bundler ARGS` in a subprocess with this checkout first on the path."""

    def run(*args: str, cwd: str | Path | None = None, env: dict[str, str] | None = None,
            input: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        return subprocess.run([sys.executable, "-m", "bundler", *args], cwd=cwd, env=full_env, input=input,
                              capture_output=True, text=True, timeout=timeout)

    return run


# --- real registries (tests/support/registry.py; added with issue 3) ------------------------------

def _registry_fixture(tmp_path_factory: pytest.TempPathFactory, variant: str):  # type: ignore[no-untyped-def]
    from tests.support.registry import start_registry

    reg = start_registry(tmp_path_factory.mktemp(f"registry-{variant}"), variant=variant)
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """An anonymous docker-registry on 127.0.0.1 (plain HTTP): `.host`, `.url`, `.storage`."""
    yield from _registry_fixture(tmp_path_factory, "anonymous")


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """docker-registry with htpasswd basic auth: `.username`, `.password`, `.auth`."""
    yield from _registry_fixture(tmp_path_factory, "basic")


@pytest.fixture(scope="session")
def tls_registry(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """docker-registry over HTTPS with a test CA: `.ca_file` (PEM), `.url` is https://."""
    yield from _registry_fixture(tmp_path_factory, "tls")


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """docker-registry with bearer-token auth from an in-process token server (`.extra['realm']`)."""
    yield from _registry_fixture(tmp_path_factory, "token")
