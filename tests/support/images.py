"""Deterministic test images built in memory and pushed through the real distribution API.

Builds layers (a tar holding one file of seeded pseudo-random bytes, gzip-compressed with mtime 0 or
stored as a plain tar), configs, manifests and indexes in OCI or Docker media types, attestation
manifests (platform unknown/unknown with the BuildKit `vnd.docker.reference.*` annotations), and pushes
them with `Pusher` (POST + PUT monolithic blob uploads, manifest PUT), which handles anonymous, basic
and bearer-token registries. The same seed always gives the same bytes and digests.

This is test support, not the product: it uses `requests` directly and trusts what it builds.

    idx = multi_platform("app", seed=1)                      # OCI index over 4 platforms
    Pusher(reg).push(f"{reg.host}/team/app", idx, "v1")      # -> digest of the index
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import re
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
IN_TOTO_LAYER = "application/vnd.in-toto+json"

ALL_PLATFORMS = ("linux/amd64", "linux/arm64", "linux/arm/v7", "linux/s390x")


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def seeded_bytes(seed: object, size: int) -> bytes:
    return random.Random(str(seed)).randbytes(size)


def dumps(obj: Any) -> bytes:
    """Registry-style JSON: indented, key order as written (the digest is of these bytes)."""
    return json.dumps(obj, indent=3).encode()


@dataclass(frozen=True)
class Blob:
    media_type: str
    data: bytes
    annotations: dict[str, str] | None = None

    @property
    def digest(self) -> str:
        return digest_of(self.data)

    @property
    def size(self) -> int:
        return len(self.data)

    def descriptor(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mediaType": self.media_type, "size": self.size, "digest": self.digest}
        if self.annotations:
            d["annotations"] = self.annotations
        return d


@dataclass(frozen=True)
class Image:
    """A manifest with its config and layers; `platform` goes into an index descriptor."""

    manifest: Blob
    config: Blob
    layers: tuple[Blob, ...]
    platform: dict[str, str] | None = None
    descriptor_annotations: dict[str, str] | None = None

    @property
    def digest(self) -> str:
        return self.manifest.digest

    @property
    def media_type(self) -> str:
        return self.manifest.media_type

    def blobs(self) -> list[Blob]:
        return [self.config, *self.layers]

    def descriptor(self) -> dict[str, Any]:
        d = self.manifest.descriptor()
        if self.descriptor_annotations:
            d["annotations"] = self.descriptor_annotations
        if self.platform is not None:
            d["platform"] = self.platform
        return d


@dataclass(frozen=True)
class Index:
    manifest: Blob
    images: tuple[Image, ...]

    @property
    def digest(self) -> str:
        return self.manifest.digest

    @property
    def media_type(self) -> str:
        return self.manifest.media_type

    def blobs(self) -> list[Blob]:
        return [b for i in self.images for b in i.blobs()]


Pushable = Image | Index


def platform_dict(text: str) -> dict[str, str]:
    parts = text.split("/")
    d = {"architecture": parts[1], "os": parts[0]}
    if len(parts) == 3:
        d["variant"] = parts[2]
    return d


def make_layer(seed: object, size: int = 2048, *, compress: bool = True, docker: bool = False) -> Blob:
    """A deterministic layer: a tar with one file of `size` seeded random bytes, gzip or plain."""
    payload = seeded_bytes(seed, size)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(f"data/{hashlib.sha256(str(seed).encode()).hexdigest()[:12]}.bin")
        info.size, info.mtime, info.mode = size, 0, 0o644
        tar.addfile(info, io.BytesIO(payload))
    raw = buf.getvalue()
    if compress:
        out = io.BytesIO()
        with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, compresslevel=1) as gz:
            gz.write(raw)
        raw = out.getvalue()
        return Blob(DOCKER_LAYER_GZIP if docker else OCI_LAYER_GZIP, raw)
    return Blob(DOCKER_LAYER if docker else OCI_LAYER, raw)


def make_image(platform: str, layers: list[Blob] | tuple[Blob, ...], *, docker: bool = False,
               label: str = "", annotations: dict[str, str] | None = None) -> Image:
    p = platform_dict(platform)
    config_obj: dict[str, Any] = {"architecture": p["architecture"], "os": p["os"]}
    if "variant" in p:
        config_obj["variant"] = p["variant"]
    config_obj.update({"created": "2024-01-01T00:00:00Z",
                       "config": {"Labels": {"test.label": label}} if label else {},
                       "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layers]}})
    config = Blob(DOCKER_CONFIG if docker else OCI_CONFIG, json.dumps(config_obj, sort_keys=True).encode())
    manifest_obj: dict[str, Any] = {"schemaVersion": 2, "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
                                    "config": config.descriptor(), "layers": [layer.descriptor() for layer in layers]}
    if annotations:
        manifest_obj["annotations"] = annotations
    return Image(Blob(manifest_obj["mediaType"], dumps(manifest_obj)), config, tuple(layers), p)


def make_attestation(subject: Image, seed: object = "att") -> Image:
    """A BuildKit-style attestation manifest for `subject` (platform unknown/unknown)."""
    statement = json.dumps({"_type": "https://in-toto.io/Statement/v0.1", "predicateType": "https://slsa.dev/provenance/v0.2",
                            "subject": [{"name": "x", "digest": {"sha256": subject.digest[7:]}}],
                            "predicate": {"seed": str(seed)}}, sort_keys=True).encode()
    layer = Blob(IN_TOTO_LAYER, statement, {"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"})
    config = Blob(OCI_CONFIG, json.dumps({"architecture": "unknown", "os": "unknown", "config": {},
                                          "rootfs": {"type": "layers", "diff_ids": [layer.digest]}},
                                         sort_keys=True).encode())
    manifest_obj = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config.descriptor(),
                    "layers": [layer.descriptor()]}
    return Image(Blob(OCI_MANIFEST, dumps(manifest_obj)), config, (layer,),
                 {"architecture": "unknown", "os": "unknown"},
                 {"vnd.docker.reference.digest": subject.digest,
                  "vnd.docker.reference.type": "attestation-manifest"})


def make_index(images: list[Image], *, docker: bool = False, annotations: dict[str, str] | None = None) -> Index:
    obj: dict[str, Any] = {"schemaVersion": 2, "mediaType": DOCKER_LIST if docker else OCI_INDEX,
                           "manifests": [i.descriptor() for i in images]}
    if annotations:
        obj["annotations"] = annotations
    return Index(Blob(obj["mediaType"], dumps(obj)), tuple(images))


def multi_platform(name: str, *, seed: object = 0, platforms: tuple[str, ...] = ALL_PLATFORMS,
                   docker: bool = False, attestations: bool = False, base: list[Blob] | None = None,
                   layer_size: int = 2048, layers: int = 1, compress: bool = True,
                   annotations: dict[str, str] | None = None) -> Index:
    """An index over `platforms`; each image = shared `base` layers + `layers` own layers."""
    images: list[Image] = []
    for p in platforms:
        own = [make_layer(f"{name}/{seed}/{p}/{n}", layer_size, compress=compress, docker=docker)
               for n in range(layers)]
        images.append(make_image(p, [*(base or []), *own], docker=docker, label=f"{name}-{seed}"))
    if attestations:
        images += [make_attestation(i, seed=f"{name}/{seed}") for i in list(images)]
    return make_index(images, docker=docker,
                      annotations=annotations or ({"org.opencontainers.image.source": f"test/{name}"}
                                                  if not docker else None))


def single_platform(name: str, platform: str = "linux/amd64", *, seed: object = 0, docker: bool = False,
                    layer_size: int = 2048) -> Image:
    return make_image(platform, [make_layer(f"{name}/{seed}/single", layer_size, docker=docker)], docker=docker,
                      label=name)


class Pusher:
    """Pushes blobs and manifests to a registry (anonymous, basic or bearer auth)."""

    def __init__(self, url: str, *, auth: tuple[str, str] | None = None, verify: str | bool = True) -> None:
        self.url = url.rstrip("/")
        self.auth = auth
        self.session = requests.Session()
        self.session.trust_env = False
        self.verify = verify
        self._tokens: dict[str, str] = {}

    @classmethod
    def to(cls, registry: Any) -> Pusher:
        """A pusher for a tests.support.registry.TestRegistry."""
        return cls(registry.url, auth=registry.auth, verify=registry.verify)

    def _request(self, method: str, url: str, repo: str, **kwargs: Any) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}) or {})
        if repo in self._tokens:
            headers["Authorization"] = self._tokens[repo]
        elif self.auth:
            kwargs["auth"] = self.auth
        r = self.session.request(method, url, headers=headers, verify=self.verify, timeout=60, **kwargs)
        challenge = r.headers.get("WWW-Authenticate", "")
        if r.status_code == 401 and challenge.lower().startswith("bearer") and repo not in self._tokens:
            params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
            t = self.session.get(params["realm"], params={"service": params.get("service", ""),
                                                          "scope": f"repository:{repo}:pull,push"},
                                 auth=self.auth, timeout=30)
            t.raise_for_status()
            self._tokens[repo] = "Bearer " + t.json()["token"]
            return self._request(method, url, repo, headers=headers, **kwargs)
        return r

    def push_blob(self, repo: str, blob: Blob) -> None:
        head = self._request("HEAD", f"{self.url}/v2/{repo}/blobs/{blob.digest}", repo)
        if head.status_code == 200:
            return
        start = self._request("POST", f"{self.url}/v2/{repo}/blobs/uploads/", repo)
        if start.status_code != 202:
            raise RuntimeError(f"upload start {start.status_code}: {start.text[:300]}")
        location = start.headers["Location"]
        if location.startswith("/"):
            location = self.url + location
        sep = "&" if "?" in location else "?"
        put = self._request("PUT", f"{location}{sep}digest={blob.digest}", repo, data=blob.data,
                            headers={"Content-Type": "application/octet-stream"})
        if put.status_code != 201:
            raise RuntimeError(f"blob upload {put.status_code}: {put.text[:300]}")

    def push_blob_chunks(self, repo: str, chunks: Iterable[bytes]) -> tuple[str, int]:
        """Stream a blob whose digest is not known yet: POST, one chunked PATCH (hashing as it goes),
        PUT ?digest=. Memory stays flat whatever the size (benchmarks push gigabytes this way).
        Returns (digest, size)."""
        digest, size = hashlib.sha256(), 0

        def counted() -> Iterator[bytes]:
            nonlocal size
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                yield chunk

        start = self._request("POST", f"{self.url}/v2/{repo}/blobs/uploads/", repo)
        if start.status_code != 202:
            raise RuntimeError(f"upload start {start.status_code}: {start.text[:300]}")
        location = self._absolute(start.headers["Location"])
        patch = self._request("PATCH", location, repo, data=counted(),
                              headers={"Content-Type": "application/octet-stream"})
        if patch.status_code != 202:
            raise RuntimeError(f"blob patch {patch.status_code}: {patch.text[:300]}")
        location = self._absolute(patch.headers["Location"])
        sep = "&" if "?" in location else "?"
        hexdigest = "sha256:" + digest.hexdigest()
        put = self._request("PUT", f"{location}{sep}digest={hexdigest}", repo)
        if put.status_code != 201:
            raise RuntimeError(f"blob upload {put.status_code}: {put.text[:300]}")
        return hexdigest, size

    def _absolute(self, location: str) -> str:
        return self.url + location if location.startswith("/") else location

    def push_manifest(self, repo: str, manifest: Blob, reference: str) -> str:
        r = self._request("PUT", f"{self.url}/v2/{repo}/manifests/{reference}", repo, data=manifest.data,
                          headers={"Content-Type": manifest.media_type})
        if r.status_code != 201:
            raise RuntimeError(f"manifest put {r.status_code}: {r.text[:300]}")
        return manifest.digest

    def push_image(self, repo: str, image: Image, tag: str | None = None) -> str:
        for blob in image.blobs():
            self.push_blob(repo, blob)
        return self.push_manifest(repo, image.manifest, tag or image.digest)

    def push(self, repo: str, item: Pushable, tag: str | None = None) -> str:
        """Push an Image or an Index (children by digest first); return the top-level digest."""
        if isinstance(item, Image):
            return self.push_image(repo, item, tag)
        for image in item.images:
            self.push_image(repo, image)
        return self.push_manifest(repo, item.manifest, tag or item.digest)

    def delete_tag_target(self, repo: str, digest: str) -> None:
        self._request("DELETE", f"{self.url}/v2/{repo}/manifests/{digest}", repo)


@dataclass
class Catalog:
    """Handy bundle of pushed test images (see push_standard_set)."""

    host: str
    refs: dict[str, str] = field(default_factory=dict)       # name -> "host/repo:tag"
    items: dict[str, Pushable] = field(default_factory=dict)  # name -> built item


def push_standard_set(registry: Any, *, prefix: str = "std") -> Catalog:
    """Push the standard cases: multi (OCI, 4 platforms), dockerlist, single, attested, and two images
    sharing a base layer (shared-a, shared-b). Returns refs by name."""
    pusher = Pusher.to(registry)
    base = [make_layer("shared-base", 64 * 1024)]
    items: dict[str, Pushable] = {
        "multi": multi_platform("multi", seed=1),
        "dockerlist": multi_platform("dockerlist", seed=2, docker=True, platforms=("linux/amd64", "linux/arm64/v8",
                                                                                  "linux/ppc64le")),
        "single": single_platform("single"),
        "single-arm64": single_platform("single-arm64", "linux/arm64"),
        "attested": multi_platform("attested", seed=3, attestations=True),
        "shared-a": multi_platform("shared-a", seed=4, base=base, platforms=("linux/amd64", "linux/arm64")),
        "shared-b": multi_platform("shared-b", seed=5, base=base, platforms=("linux/amd64", "linux/arm64")),
        "amd64-only": multi_platform("amd64-only", seed=6, platforms=("linux/amd64",)),
    }
    cat = Catalog(registry.host)
    for name, item in items.items():
        repo = f"{prefix}/{name}"
        pusher.push(repo, item, "v1")
        cat.refs[name] = f"{registry.host}/{repo}:v1"
        cat.items[name] = item
    return cat


def one_image_spec(registry: Any, tmp_path: Path, run_cli: Any, name: str, *, seed: int, layer_size: int,
                   via: str | None = None) -> Index:
    """Push one two-platform image named `name`, write a spec carrying it (bundle.yaml) and a vendor key.
    `via`: the host the spec pulls from instead of the registry's own (a fault proxy in front of it)."""
    index = multi_platform(name, seed=seed, platforms=("linux/amd64", "linux/arm64"), layer_size=layer_size)
    Pusher.to(registry).push(f"bench/{name}", index, "v1")
    host = via or registry.host
    (tmp_path / "bundle.yaml").write_text(
        f"apiVersion: airgap-bundle.dev/v1alpha1\nkind: Bundle\nmetadata: {{name: {name}, version: 1.0.0}}\n"
        "localRegistry: {host: registry.airgap.local:5000, template: '{host}/{path}'}\n"
        f"extraImages: [{{ref: '{host}/bench/{name}:v1', reason: test}}]\n"
        f"registries: [{{host: '{host}', insecure: true}}]\n")
    assert run_cli("keys", "generate", "--out", "vendor", cwd=tmp_path).returncode == 0
    return index
