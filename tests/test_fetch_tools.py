"""scripts/fetch_tools.py: which helm/kubectl a machine or a container build (TARGETARCH) gets.

The downloads themselves need PyPI or the release sites; what is tested here is the choice of
architecture and source, and the check that refuses a binary built for another machine, on the real
binaries in .tools/bin (amd64, from the PyPI layer).
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fetch_tools", REPO / "scripts" / "fetch_tools.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fetch_tools = _load()


def _header(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read(64)


@pytest.mark.parametrize(("given", "machine", "expected"), [
    ("amd64", "aarch64", "amd64"),   # Docker's TARGETARCH wins over the build machine
    ("arm64", "x86_64", "arm64"),
    ("x86_64", "aarch64", "amd64"),  # uname -m spellings
    ("AARCH64", "x86_64", "arm64"),
    ("", "aarch64", "arm64"),        # no TARGETARCH (a classic docker build): this machine
    (None, "x86_64", "amd64"),
])
def test_arch_from_targetarch_or_this_machine(given: str | None, machine: str, expected: str) -> None:
    assert fetch_tools.normalise_arch(given, machine) == expected


def test_unsupported_arch_is_refused_by_name() -> None:
    with pytest.raises(SystemExit, match="no helm/kubectl source for architecture 's390x'"):
        fetch_tools.normalise_arch("s390x", "x86_64")


def test_amd64_comes_from_pypi_arm64_from_the_release_files() -> None:
    assert fetch_tools.source_for("amd64") is fetch_tools.from_pypi
    assert fetch_tools.source_for("arm64") is not fetch_tools.from_pypi
    urls = fetch_tools.release_urls("arm64")
    assert urls["helm"].endswith(f"/helm-v{fetch_tools.HELM_VERSION}-linux-arm64.tar.gz")
    assert urls["kubectl"].endswith(f"/v{fetch_tools.KUBECTL_VERSION}/bin/linux/arm64/kubectl")


def test_pinned_versions_are_the_ones_the_amd64_layer_carries(helm: str, kubectl: str) -> None:
    """arm64 takes the same versions as amd64: the constants match the binaries the PyPI layer gave."""
    helm_version = subprocess.run([helm, "version", "--short"], capture_output=True, text=True, check=True).stdout
    assert helm_version.startswith(f"v{fetch_tools.HELM_VERSION}+")
    client = subprocess.run([kubectl, "version", "--client"], capture_output=True, text=True, check=True).stdout
    assert re.search(rf"Client Version: v{re.escape(fetch_tools.KUBECTL_VERSION)}\b", client), client


def test_elf_header_names_the_architecture(helm: str, kubectl: str) -> None:
    assert fetch_tools.elf_arch(_header(helm)) == fetch_tools.elf_arch(_header(kubectl)) == "amd64"
    arm = bytearray(_header(helm))
    arm[18:20] = (183).to_bytes(2, "little")  # EM_AARCH64
    assert fetch_tools.elf_arch(bytes(arm)) == "arm64"
    assert fetch_tools.elf_arch(b"#!/bin/sh\nexit 0\n") is None


def test_a_binary_for_another_machine_is_refused_and_nothing_written(helm: str, tmp_path: Path) -> None:
    header = _header(helm)
    with pytest.raises(SystemExit, match="helm is built for amd64, not arm64"):
        fetch_tools.install({"helm": header}, "arm64", tmp_path / "bin")
    assert list((tmp_path / "bin").iterdir()) == []
    fetch_tools.install({"helm": header}, "amd64", tmp_path / "bin")
    installed = tmp_path / "bin" / "helm"
    assert installed.read_bytes() == header and installed.stat().st_mode & 0o777 == 0o755
    assert sorted(p.name for p in (tmp_path / "bin").iterdir()) == ["helm"]  # no temporary file left
