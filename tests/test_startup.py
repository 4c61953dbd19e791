"""A warm `pull` is mostly process start: what the command line loads, and what a pull that changes
nothing writes, are pinned here so the start-up work (docs/performance.md "Pull") cannot regress silently.

Heavy libraries are imported where they are used: ruamel.yaml where a spec or catalogue is read or a
file is rewritten, jsonschema where a spec is validated, cryptography where keys are, tarfile where a
`docker save` archive is imported, requests when the registry client is made."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.images import Pusher, multi_platform

REPO = Path(__file__).resolve().parent.parent
# Never needed to start the command line or to pull references: each costs 5-45 ms of start-up.
NOT_AT_START = ("ruamel", "jsonschema", "cryptography", "yaml", "requests", "urllib3", "tarfile", "difflib")
NOT_IN_PULL = ("ruamel", "jsonschema", "cryptography", "yaml", "tarfile", "difflib")


def _loaded(*args: str, cwd: Path | None = None) -> set[str]:
    """Top-level names of every module a real `python ARGS` process imports (from -X importtime)."""
    done = subprocess.run([sys.executable, "-X", "importtime", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-3000:]
    return {line.rsplit("|", 1)[1].strip().split(".")[0] for line in done.stderr.splitlines()
            if line.startswith("import time:") and not line.endswith("imported package")}


def test_the_command_line_starts_without_the_heavy_libraries() -> None:
    loaded = _loaded("-c", "import bundler.cli")
    assert "click" in loaded  # the probe sees third-party imports
    assert sorted(loaded & set(NOT_AT_START)) == []
    assert sorted(loaded & set(NOT_AT_START)) == sorted(_loaded("-m", "bundler", "--help") & set(NOT_AT_START))


@pytest.fixture(scope="module")
def image(registry: Any) -> str:
    Pusher.to(registry).push("startup/app", multi_platform("startup/app", seed="startup"), "v1")
    return f"{registry.host}/startup/app:v1"


def _pull(image: str, host: str, tmp: Path) -> set[str]:
    return _loaded("-m", "bundler", "pull", "--insecure-registry", host, "--cache", str(tmp / "cache"),
                   "--output", str(tmp / "out"), image)


def test_a_warm_pull_of_references_loads_no_yaml_schema_or_crypto_library(image: str, registry: Any,
                                                                          tmp_path: Path) -> None:
    cold = _pull(image, registry.host, tmp_path)
    warm = _pull(image, registry.host, tmp_path)
    assert "requests" in warm  # it did ask the registry
    assert sorted(warm & set(NOT_IN_PULL)) == [] and sorted(cold & set(NOT_IN_PULL)) == []


def test_a_pull_that_changes_nothing_rewrites_no_index(image: str, registry: Any, tmp_path: Path) -> None:
    _pull(image, registry.host, tmp_path)
    indexes = [tmp_path / "out" / "index.json", tmp_path / "cache" / "index.json"]
    before = [(p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in indexes]
    _pull(image, registry.host, tmp_path)
    assert [(p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in indexes] == before
