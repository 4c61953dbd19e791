"""Build real xpkg images for tests: an OCI image whose base layer holds package.yaml.

`build(package_yaml)` returns the manifest, config and layer bytes as `crossplane xpkg push` makes
them: the base layer descriptor annotated `io.crossplane.xpkg: base` and the image config labelled
`io.crossplane.xpkg:sha256:<layer digest>` = `base`. Writers put the image into an OCI image layout
directory, an OCI layout tarball, a go-containerregistry (docker-save style) tarball, or a
distribution registry through its HTTP API (a minimal client for tests only; the product's
registry client is `bundler.registry`).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tar_layer(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@dataclass(frozen=True)
class Image:
    manifest: bytes
    config: bytes
    layers: tuple[bytes, ...]

    @property
    def digest(self) -> str:
        return digest(self.manifest)

    def blobs(self) -> dict[str, bytes]:
        out = {digest(self.config): self.config, self.digest: self.manifest}
        out.update({digest(layer): layer for layer in self.layers})
        return out


def build(package_yaml: str, *, annotate: bool = True, label: bool = True, compress: bool = True,
          label_digest: str | None = None, extra_layer: bytes | None = None) -> Image:
    base = tar_layer({"package.yaml": package_yaml.encode()})
    base = gzip.compress(base, mtime=0) if compress else base
    layers = [base] + ([extra_layer] if extra_layer is not None else [])
    labels = {f"io.crossplane.xpkg:{label_digest or digest(base)}": "base"} if label else {}
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": labels},
                         "rootfs": {"type": "layers", "diff_ids": [digest(gzip.decompress(l) if compress and i == 0
                                                                          else l) for i, l in enumerate(layers)]}},
                        sort_keys=True).encode()
    descriptors = []
    for i, layer in enumerate(layers):
        d = {"mediaType": "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if compress and i == 0 else ""),
             "digest": digest(layer), "size": len(layer)}
        if annotate and i == 0:
            d["annotations"] = {"io.crossplane.xpkg": "base"}
        descriptors.append(d)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": digest(config), "size": len(config)},
                           "layers": descriptors}, sort_keys=True).encode()
    return Image(manifest, config, tuple(layers))


def write_layout(image: Image, root: Path, ref_name: str | None = None) -> Path:
    (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    for d, data in image.blobs().items():
        (root / "blobs" / "sha256" / d.split(":")[1]).write_bytes(data)
    entry = {"mediaType": OCI_MANIFEST, "digest": image.digest, "size": len(image.manifest)}
    if ref_name:
        entry["annotations"] = {"org.opencontainers.image.ref.name": ref_name}
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
    return root


def write_layout_tar(image: Image, path: Path, ref_name: str | None = None) -> Path:
    tmp = path.with_suffix(".d")
    write_layout(image, tmp, ref_name)
    with tarfile.open(path, "w") as tar:
        for p in sorted(tmp.rglob("*")):
            tar.add(p, arcname=str(p.relative_to(tmp)), recursive=False)
    shutil.rmtree(tmp)
    return path


def write_ggcr_tarball(image: Image, path: Path, repo_tag: str | None) -> Path:
    """go-containerregistry tarball.Write layout: manifest.json, <config>.json, <layer>.tar.gz."""
    cfg_name = digest(image.config).replace(":", "-") + ".json"
    files = {cfg_name: image.config}
    layer_names = []
    for layer in image.layers:
        name = digest(layer).split(":")[1] + ".tar.gz"
        files[name] = layer
        layer_names.append(name)
    files["manifest.json"] = json.dumps([{"Config": cfg_name, "RepoTags": [repo_tag] if repo_tag else [],
                                          "Layers": layer_names}]).encode()
    path.write_bytes(tar_layer(files))
    return path


# --- a throwaway distribution registry (docker-registry) on 127.0.0.1 -----------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Registry:
    host: str  # 127.0.0.1:PORT
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def push(self, repo: str, tag: str, image: Image) -> None:
        for d, data in image.blobs().items():
            if d == image.digest:
                continue
            start = requests.post(f"{self.url}/v2/{repo}/blobs/uploads/", timeout=10)
            start.raise_for_status()
            location = start.headers["Location"]
            location = location if location.startswith("http") else self.url + location
            sep = "&" if "?" in location else "?"
            requests.put(f"{location}{sep}digest={d}", data=data, timeout=30,
                         headers={"Content-Type": "application/octet-stream"}).raise_for_status()
        requests.put(f"{self.url}/v2/{repo}/manifests/{tag}", data=image.manifest, timeout=10,
                     headers={"Content-Type": OCI_MANIFEST}).raise_for_status()

    def manifest(self, repo: str, reference: str) -> bytes:
        r = requests.get(f"{self.url}/v2/{repo}/manifests/{reference}", timeout=10,
                         headers={"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"})
        r.raise_for_status()
        return r.content

    def blob(self, repo: str, d: str) -> bytes:
        r = requests.get(f"{self.url}/v2/{repo}/blobs/{d}", timeout=30)
        r.raise_for_status()
        return r.content


def start_registry(workdir: Path) -> Iterator[Registry]:
    """Start docker-registry with filesystem storage; stop it (by its PID) on exit."""
    binary = shutil.which("docker-registry")
    if binary is None:
        raise RuntimeError("docker-registry is not installed (apt install docker-registry)")
    port = _free_port()
    config = workdir / "config.yml"
    config.write_text(f"""version: 0.1
log: {{level: error}}
storage:
  filesystem: {{rootdirectory: {workdir / 'data'}}}
  delete: {{enabled: true}}
http: {{addr: 127.0.0.1:{port}}}
""")
    log = open(workdir / "registry.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "OTEL_TRACES_EXPORTER": "none"})
    registry = Registry(f"127.0.0.1:{port}", process)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                if requests.get(f"{registry.url}/v2/", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"docker-registry did not start: {(workdir / 'registry.log').read_text()}")
            time.sleep(0.05)
        yield registry
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
