"""Build real xpkg images for tests: an OCI image whose base layer holds package.yaml.

`build(package_yaml)` returns the manifest, config and layer bytes as `crossplane xpkg push` makes
them: the base layer descriptor annotated `io.crossplane.xpkg: base` and the image config labelled
`io.crossplane.xpkg:sha256:<layer digest>` = `base`. Writers put the image into an OCI image layout
directory, an OCI layout tarball, a go-containerregistry (docker-save style) tarball, or a registry
(through the shared `tests.support.images.Pusher`).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

from tests.support.images import Blob, Pusher

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
                         "rootfs": {"type": "layers", "diff_ids": [digest(gzip.decompress(layer) if compress and i == 0
                                                                          else layer) for i, layer in enumerate(layers)]}},
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


# --- into a registry --------------------------------------------------------------------------------------


def push(pusher: Pusher, repo: str, tag: str, image: Image) -> None:
    """Push an xpkg image through the shared test pusher (tests.support.images)."""
    for d, data in image.blobs().items():
        if d != image.digest:
            pusher.push_blob(repo, Blob("application/octet-stream", data))
    pusher.push_manifest(repo, Blob(OCI_MANIFEST, image.manifest), tag)
