"""A warm `pull` is mostly process start: what the command line loads, and what a pull that changes
nothing writes, are pinned here so the start-up work (docs/performance.md "Pull") cannot regress silently.

Heavy libraries are imported where they are used: ruamel.yaml where a spec or catalogue is read or a
file is rewritten, jsonschema where a spec is validated, cryptography where keys are, tarfile where a
`docker save` archive is imported. The registry client speaks HTTP through the standard library's
http.client (bundler/transport.py): requests and urllib3 are never imported by a pull."""

from __future__ import annotations

import importlib.util
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
NOT_IN_PULL = ("ruamel", "jsonschema", "cryptography", "yaml", "tarfile", "difflib", "requests", "urllib3")


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
    assert "bundler" in warm and "http" in warm  # the probe saw the pull and its HTTP client
    assert sorted(warm & set(NOT_IN_PULL)) == [] and sorted(cold & set(NOT_IN_PULL)) == []


def test_a_pull_that_changes_nothing_rewrites_no_index(image: str, registry: Any, tmp_path: Path) -> None:
    _pull(image, registry.host, tmp_path)
    indexes = [tmp_path / "out" / "index.json", tmp_path / "cache" / "index.json"]
    before = [(p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in indexes]
    _pull(image, registry.host, tmp_path)
    assert [(p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in indexes] == before


def test_verifying_loads_neither_the_signing_nor_the_sbom_libraries() -> None:
    """verify, inspect and push only read signature files and the predicate: sigstore-models (pydantic),
    securesystemslib and cyclonedx-python-lib are the build's, 0.1-0.3 s each of start-up."""
    loaded = _loaded("-c", "import bundler.verify, bundler.inspect, bundler.push, bundler.parts, bundler.update")
    assert "cryptography" in loaded  # the probe sees what verify needs
    assert sorted(loaded & {"sigstore_models", "pydantic", "securesystemslib", "cyclonedx", "boto3"}) == []


@pytest.mark.skipif(importlib.util.find_spec("boto3") is None, reason="boto3 is not installed: nothing to hide")
def test_signing_does_not_load_the_cloud_kms_sdks(tmp_path: Path) -> None:
    """securesystemslib's signer package imports boto3 when it is installed (its AWS KMS signer): hidden
    while it is imported, since the tool signs with local keys only. boto3 is installed here (moto)."""
    code = ("import sys\nfrom bundler import keys, sign\n"
            "open('k.pem', 'wb').write(keys.private_key_pem(keys.generate_private_key()))\n"
            "assert sign.parse(sign.sign(b'{}', keys.load_signer('k.pem'), 'vendor')).payload == b'{}'\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'securesystemslib', 'sigstore_models', 'boto3', "
            "'botocore'}))\n"
            "import boto3  # still importable afterwards: hidden only while securesystemslib is imported\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == "['securesystemslib', 'sigstore_models']\n"


def test_start_up_objects_are_kept_from_the_collector_and_the_command_runs_with_it_on() -> None:
    """bundler/__main__.py: the import of the command line and the exit skip the cyclic collector."""
    probe = ("import gc, sys\n"
             "from bundler.__main__ import main\n"
             "sys.argv = ['airgap-bundle', 'ref', 'nginx']\n"
             "seen = []\n"
             "import bundler.cli\n"
             "real = bundler.cli.main\n"
             "bundler.cli.main = lambda: (seen.append((gc.isenabled(), gc.get_freeze_count())), real())[1]\n"
             "try:\n"
             "    main()\n"
             "except SystemExit as exc:\n"
             "    code = exc.code\n"
             "print(code, seen[0][0], seen[0][1] > 10_000, gc.get_freeze_count() > seen[0][1])\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "0 True True True", done.stdout
