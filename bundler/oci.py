"""OCI content model shared by every stage (the analogue of go-containerregistry pkg/v1).

Types: `Platform`, `Descriptor`, media-type constants, digest helpers, and `verified()`, the one
stream wrapper through which every byte the tool keeps passes: it hashes as it reads, caps the read
at the declared size, and raises `DigestMismatchError` at the end if the bytes are not the ones asked
for (ggcr `verify.ReadCloser`).

Specs: OCI image-spec v1.1 (descriptor.md, image-index.md, manifest.md, image-layout.md),
Docker image manifest v2 schema 2.

Pure code: no network, no filesystem.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .errors import DigestMismatchError, InvalidReferenceError
from .reference import validate_digest

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
# What we ask registries for: every manifest kind, stored as it came (never converted).
ACCEPT_MANIFESTS = ", ".join([OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST])

ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
# BuildKit attestation manifests ride in an index with platform unknown/unknown.
ANNOTATION_REFERENCE_TYPE = "vnd.docker.reference.type"
ANNOTATION_REFERENCE_DIGEST = "vnd.docker.reference.digest"


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def digest_hex(digest: str) -> str:
    """The hex part of a sha256 digest (the file name under blobs/sha256/)."""
    algorithm, _, encoded = validate_digest(digest).partition(":")
    if algorithm != "sha256":
        raise InvalidReferenceError(f"unsupported digest algorithm in {digest}: only sha256 is stored")
    return encoded


@dataclass(frozen=True, order=True)
class Platform:
    """os/architecture[/variant], matched as containerd's platforms.Only does for the common cases."""

    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.strip().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise InvalidReferenceError(f"invalid platform {text!r}: expected os/arch[/variant], e.g. linux/arm64")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None).normalized()

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Platform:
        return cls(str(obj.get("os", "")), str(obj.get("architecture", "")), obj.get("variant") or None)

    def normalized(self) -> Platform:
        """containerd normalisation: arm64 has variant v8 by default, arm has v7, amd64 has none."""
        arch, variant = self.architecture, self.variant
        if arch == "aarch64":
            arch = "arm64"
        if arch in ("x86_64", "x86-64"):
            arch = "amd64"
        if arch == "arm64" and variant in ("v8", "8"):
            variant = None
        if arch == "arm" and variant in (None, "7"):
            variant = "v7"
        if arch == "amd64" and variant == "v1":
            variant = None
        return Platform(self.os, arch, variant)

    def matches(self, other: Platform) -> bool:
        return self.normalized() == other.normalized()

    @property
    def is_unknown(self) -> bool:
        return self.os == "unknown" and self.architecture == "unknown"

    def __str__(self) -> str:
        return f"{self.os}/{self.architecture}" + (f"/{self.variant}" if self.variant else "")


DEFAULT_PLATFORMS: tuple[Platform, ...] = (Platform("linux", "amd64"), Platform("linux", "arm64"))


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor (descriptor.md)."""

    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: tuple[tuple[str, str], ...] = field(default=())

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Descriptor:
        platform = obj.get("platform")
        return cls(
            media_type=str(obj.get("mediaType", "")),
            digest=validate_digest(str(obj["digest"])),
            size=int(obj["size"]),
            platform=Platform.from_json(platform) if isinstance(platform, dict) else None,
            annotations=tuple(sorted((obj.get("annotations") or {}).items())),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.platform is not None:
            p: dict[str, str] = {"architecture": self.platform.architecture, "os": self.platform.os}
            if self.platform.variant:
                p["variant"] = self.platform.variant
            out["platform"] = p
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    def annotation(self, key: str) -> str | None:
        return dict(self.annotations).get(key)


def blob_descriptors(manifest: dict[str, Any]) -> list[Descriptor]:
    """The config and layers an image manifest references (manifest.md), in manifest order.

    Raises:
        KeyError, TypeError, ValueError: a malformed descriptor (callers name the manifest).
    """
    return [Descriptor.from_json(d) for d in [manifest.get("config") or {}, *(manifest.get("layers") or [])]]


def verified(chunks: Iterable[bytes], digest: str, size: int | None, *, what: str) -> Iterator[bytes]:
    """Pass chunks through, hashing them; raise DigestMismatchError on excess size or a wrong digest.

    The caller must consume the iterator to the end: the digest check happens after the last chunk,
    before the iterator finishes, so a caller that renames a file only after the loop never keeps bad bytes.

    Raises:
        DigestMismatchError: more bytes than `size`, fewer bytes, or a different sha256.
    """
    algorithm, _, expected = validate_digest(digest).partition(":")
    hasher = hashlib.new(algorithm)
    seen = 0
    for chunk in chunks:
        seen += len(chunk)
        if size is not None and seen > size:
            raise DigestMismatchError(f"{what}: more than the {size} bytes declared for {digest}")
        hasher.update(chunk)
        yield chunk
    if size is not None and seen != size:
        raise DigestMismatchError(f"{what}: got {seen} bytes, {size} declared for {digest}")
    if hasher.hexdigest() != expected:
        raise DigestMismatchError(
            f"{what}: content hashes to {algorithm}:{hasher.hexdigest()}, expected {digest}",
            hint="the registry or a proxy served different bytes; nothing was kept",
        )
