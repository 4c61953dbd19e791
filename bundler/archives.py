"""Images that were never in a registry: `docker save` / `podman save` archives, and a local Docker daemon.

Input: the reference an image stands for, the archive files that hold it (one per platform, or one
holding several), the required platforms and the spec's exemptions, and a layout to import into.
Output: the descriptor of what the reference now resolves to in that layout (its blobs, manifests and
index stored, verified); the pull stage then treats it like any cached image, and never asks a
registry for it.

Formats (no daemon needed to read them):
- oci-archive (`podman save --format oci-archive`, `docker save` since Docker 25, `skopeo copy ...
  oci-archive:`): a tar of an OCI image layout. Blobs are named by digest and checked while copied.
- docker-archive (`docker save` before 25, `podman save --format docker-archive`): `manifest.json`
  (`Config`, `RepoTags`, `Layers`), the config, and uncompressed layer tars. A manifest is made for it
  with OCI media types and the layers as they are (uncompressed `application/vnd.oci.image.layer.v1.tar`),
  so every digest is the digest of bytes in the archive: the config digest is the image ID Docker
  shows, and each layer's digest must equal the config's `rootfs.diff_ids` entry (checked).

Digest-honest: nothing is trusted by name. An archive's index, when it is the only archive and covers
the platforms, is kept byte for byte; otherwise a new OCI index over the platform manifests is written
(deterministic, sorted by platform). A reference pinned by digest must resolve to exactly that digest.
A required platform that no archive provides fails, naming it, unless the spec exempts it.

`save_from_daemon` asks a local Docker daemon (docker-py, the `docker` extra) for a docker-archive of
one image; the result goes through the same import.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .errors import DigestMismatchError, InputError, PlatformMissingError, RegistryError, UsageError
from .layout import Layout, skip_bytes
from .oci import (
    ANNOTATION_REF_NAME,
    INDEX_TYPES,
    MANIFEST_TYPES,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    Descriptor,
    Platform,
    digest_hex,
    sha256_digest,
)
from .reference import ImageRef
from .spec import PlatformExemption

CHUNK = 1 << 20
MAX_JSON_BYTES = 16 * 1024 * 1024  # manifest.json, index.json, configs, manifests


@dataclass(frozen=True)
class PlatformImage:
    """One platform's manifest, stored in the layout."""

    descriptor: Descriptor  # carries the platform
    source: Path


class _Archive:
    """Random access to the regular files of a tar (symlinks resolved inside the archive only)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.tar = tarfile.open(path, mode="r:*")  # noqa: SIM115 - closed by close()
            self.members = {m.name.removeprefix("./"): m for m in self.tar.getmembers() if m.isfile() or m.issym()}
        except (tarfile.TarError, OSError) as e:
            raise InputError(f"{path}: not a readable image archive: {e}",
                             hint="pass a file written by `docker save` or `podman save`") from None

    def has(self, name: str) -> bool:
        return name.removeprefix("./") in self.members

    def open(self, name: str) -> IO[bytes]:
        member = self.members.get(name.removeprefix("./"))
        handle = self.tar.extractfile(member) if member is not None else None
        if handle is None:
            raise InputError(f"{self.path}: {name} is missing from the archive",
                             hint="the archive is incomplete; save the image again")
        return handle

    def chunks(self, name: str) -> Iterator[bytes]:
        with self.open(name) as f:
            while chunk := f.read(CHUNK):
                yield chunk

    def json(self, name: str) -> Any:
        with self.open(name) as f:
            data = f.read(MAX_JSON_BYTES + 1)
        if len(data) > MAX_JSON_BYTES:
            raise InputError(f"{self.path}: {name} is larger than {MAX_JSON_BYTES} bytes")
        try:
            return json.loads(data)
        except ValueError as e:
            raise InputError(f"{self.path}: {name} is not JSON: {e}") from None

    def close(self) -> None:
        self.tar.close()


def import_image(ref: ImageRef, archives: Sequence[Path], layout: Layout, *, required: Sequence[Platform],
                 exemptions: Sequence[PlatformExemption] = ()) -> Descriptor:
    """Import the image `ref` stands for from `archives` into `layout`; return what `ref` resolves to.

    Raises:
        InputError: an unreadable archive, or one that does not hold `ref`.
        DigestMismatchError: a blob that is not what its name or the config says, or a pinned digest
            the archives do not produce.
        PlatformMissingError: a required platform no archive provides and the spec does not exempt.
    """
    if not archives:
        raise UsageError(f"{ref}: no archive given")
    tops: list[tuple[Descriptor, bytes, Path]] = []
    for path in archives:
        archive = _Archive(path)
        try:
            if archive.has("index.json") and archive.has("oci-layout"):
                tops.append(_import_oci(archive, ref, layout))
            elif archive.has("manifest.json"):
                tops.append(_import_docker(archive, ref, layout))
            else:
                raise InputError(f"{path}: neither an OCI layout (index.json) nor a docker save archive "
                                 "(manifest.json)", hint="pass a file written by `docker save` or `podman save`")
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            # JSON of the wrong shape inside an untrusted archive (a config that is not JSON, a descriptor
            # without a digest): one line naming the archive, never a traceback
            raise InputError(f"{path}: malformed image archive ({type(e).__name__}: {e})",
                             hint="the archive is damaged; save the image again") from None
        finally:
            archive.close()

    platforms = [p for top, data, source in tops for p in _platforms_of(top, data, layout, source)]
    offered = {str(p.descriptor.platform) for p in platforms}
    for want in required:
        if any(p.descriptor.platform and p.descriptor.platform.matches(want) for p in platforms):
            continue
        if any(x.platform.matches(want) for x in exemptions):
            continue
        raise PlatformMissingError(
            f"{ref}: platform {want} is missing from {', '.join(str(a) for a in archives)} "
            f"(they provide: {', '.join(sorted(offered)) or 'none'})",
            hint=f"save one archive per platform (e.g. docker buildx build --platform {want} "
                 "-o type=docker,dest=app.tar .) and list each under archives:, or exempt it with a reason")

    if len(tops) == 1 and tops[0][0].media_type in INDEX_TYPES:
        top = tops[0][0]  # the archive's own index, byte for byte
    else:
        top = _write_index(platforms, layout)
    if ref.digest is not None and ref.digest != top.digest:
        raise DigestMismatchError(f"{ref}: the archives hold {top.digest}, not the pinned {ref.digest}",
                                  hint="pin the digest the archives produce, or save the image that was pinned")
    return top


def _store_json(layout: Layout, data: bytes, expected: str | None, where: str) -> str:
    digest = sha256_digest(data)
    if expected is not None and digest != expected:
        raise DigestMismatchError(f"{where}: content hashes to {digest}, expected {expected}",
                                  hint="the archive is damaged or was altered; save the image again")
    return layout.put_bytes(data, digest)


def _copy_blob(archive: _Archive, name: str, digest: str, size: int, layout: Layout) -> None:
    if not layout.has_blob(digest):
        layout.write_blob(digest, size, lambda offset: skip_bytes(archive.chunks(name), offset))


# --- oci-archive ----------------------------------------------------------------------------------


def _import_oci(archive: _Archive, ref: ImageRef, layout: Layout) -> tuple[Descriptor, bytes, Path]:
    index = archive.json("index.json")
    entries = [Descriptor.from_json(e) for e in index.get("manifests") or [] if isinstance(e, dict)]
    chosen = _choose(entries, ref, archive.path, lambda e: [e.annotation(ANNOTATION_REF_NAME) or ""])

    def blob_name(digest: str) -> str:
        return f"blobs/sha256/{digest_hex(digest)}"

    def copy_manifest(desc: Descriptor) -> bytes:
        with archive.open(blob_name(desc.digest)) as f:
            data = f.read(MAX_JSON_BYTES + 1)
        _store_json(layout, data, desc.digest, f"{archive.path}: manifest {desc.digest}")
        return data

    data = copy_manifest(chosen)
    doc = json.loads(data)
    manifests = [Descriptor.from_json(m) for m in doc.get("manifests") or []] if chosen.media_type in INDEX_TYPES \
        else [chosen]
    for desc in manifests:
        child = copy_manifest(desc) if desc is not chosen else data
        child_doc = json.loads(child)
        for blob in [child_doc.get("config") or {}, *(child_doc.get("layers") or [])]:
            b = Descriptor.from_json(blob)
            _copy_blob(archive, blob_name(b.digest), b.digest, b.size, layout)
    return Descriptor(chosen.media_type or doc.get("mediaType", OCI_MANIFEST), chosen.digest, len(data)), data, \
        archive.path


# --- docker-archive -------------------------------------------------------------------------------


def _import_docker(archive: _Archive, ref: ImageRef, layout: Layout) -> tuple[Descriptor, bytes, Path]:
    entries = archive.json("manifest.json")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise InputError(f"{archive.path}: manifest.json is not a list of images")
    entry = _choose(entries, ref, archive.path, lambda e: [str(t) for t in e.get("RepoTags") or []])
    try:
        config_name, layer_names = str(entry["Config"]), [str(n) for n in entry["Layers"]]
    except (KeyError, TypeError) as e:
        raise InputError(f"{archive.path}: manifest.json entry without Config or Layers: {e!r}") from None
    with archive.open(config_name) as f:
        config_bytes = f.read(MAX_JSON_BYTES + 1)
    config_digest = _store_json(layout, config_bytes, None, f"{archive.path}: config")
    config = json.loads(config_bytes)
    diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
    if len(diff_ids) != len(layer_names):
        raise DigestMismatchError(f"{archive.path}: {len(layer_names)} layers, but the config lists "
                                  f"{len(diff_ids)} diff_ids", hint="the archive is damaged; save the image again")
    layers = []
    for n, (name, diff_id) in enumerate(zip(layer_names, diff_ids, strict=True), 1):
        # The digest is needed before the copy (write_blob verifies against it), so hash in a first pass.
        hasher, size = hashlib.sha256(), 0
        for chunk in archive.chunks(name):
            hasher.update(chunk)
            size += len(chunk)
        digest = "sha256:" + hasher.hexdigest()
        if digest != diff_id:
            raise DigestMismatchError(f"{archive.path}: layer {n} ({name}) hashes to {digest}, the config's "
                                      f"diff_id is {diff_id}", hint="the archive is damaged; save the image again")
        _copy_blob(archive, name, digest, size, layout)
        layers.append(Descriptor(OCI_LAYER, digest, size).to_json())
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": Descriptor(OCI_CONFIG, config_digest, len(config_bytes)).to_json(),
                           "layers": layers}, separators=(",", ":")).encode()
    digest = layout.put_bytes(manifest)
    return Descriptor(OCI_MANIFEST, digest, len(manifest)), manifest, archive.path


# --- choosing and combining -----------------------------------------------------------------------


def _choose(entries: list[Any], ref: ImageRef, path: Path, names: Any) -> Any:
    """The entry naming `ref`, or the only one. A name matches on the whole reference first, then on
    repository path and tag whatever the registry (tools save `team/app:1.4` as docker.io/team/app:1.4
    or localhost/team/app:1.4), then on the last path component and tag, then on the tag alone (an
    oci-archive's `ref.name` annotation is often just that)."""
    tag = ref.tag or "latest"
    last = ref.path.rsplit("/", 1)[-1]

    def rank(name: str) -> int | None:
        parsed = ImageRef.try_parse(name)
        if parsed is not None and parsed.with_default_tag() == ref.with_default_tag():
            return 0
        if parsed is not None and parsed.tag == tag and parsed.path == ref.path:
            return 1
        if parsed is not None and parsed.tag == tag and parsed.path.rsplit("/", 1)[-1] == last:
            return 2
        return 3 if name == tag else None

    ranked = sorted((r, n, e) for n, e in enumerate(entries) for name in names(e)
                    if (r := rank(name)) is not None)
    if ranked:
        return entries[ranked[0][1]]
    if len(entries) == 1:
        return entries[0]
    listed = sorted({n for e in entries for n in names(e) if n})
    raise InputError(f"{path}: holds {len(entries)} images and none is named {ref} ({', '.join(listed) or 'unnamed'})",
                     hint=f"save just that image, or tag it {ref} before saving")


def _platforms_of(top: Descriptor, data: bytes, layout: Layout, source: Path) -> list[PlatformImage]:
    doc = json.loads(data)
    if top.media_type in INDEX_TYPES or "manifests" in doc:
        return [PlatformImage(d, source) for d in (Descriptor.from_json(m) for m in doc.get("manifests") or [])
                if d.platform is not None and not d.platform.is_unknown and d.media_type in MANIFEST_TYPES]
    config = json.loads(layout.read_blob(Descriptor.from_json(doc["config"]).digest))
    platform = Platform(str(config.get("os", "")), str(config.get("architecture", "")),
                        config.get("variant") or None)
    return [PlatformImage(Descriptor(top.media_type, top.digest, top.size, platform), source)]


def _write_index(platforms: list[PlatformImage], layout: Layout) -> Descriptor:
    unique = {p.descriptor.digest: p.descriptor for p in platforms}
    ordered = sorted(unique.values(), key=lambda d: (str(d.platform), d.digest))
    data = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                       "manifests": [d.to_json() for d in ordered]}, separators=(",", ":")).encode()
    return Descriptor(OCI_INDEX, layout.put_bytes(data), len(data))


# --- a local Docker daemon ------------------------------------------------------------------------


def save_from_daemon(ref: ImageRef, dest: Path) -> Path:  # pragma: no cover - needs a Docker engine
    """Write `docker save REF` from the local daemon (docker-py) to `dest`; return the file.

    Raises:
        UsageError: docker-py is not installed.
        RegistryError: the daemon cannot be reached or does not have the image.
    """
    try:
        import docker  # type: ignore[import-untyped,import-not-found,unused-ignore]
        import docker.errors  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        raise UsageError(f"{ref}: dockerDaemon needs docker-py",
                         hint="pip install 'airgap-bundle[docker]', or `docker save` it and list the file "
                              "under archives:") from None
    try:
        client = docker.from_env()
        image = client.images.get(ref.familiar if ref.domain == "docker.io" else str(ref))
        with open(dest, "wb") as out:
            for chunk in image.save(named=True):
                out.write(chunk)
    except docker.errors.ImageNotFound:
        raise RegistryError(f"{ref}: the local Docker daemon has no such image",
                            hint="build or tag it first, e.g. docker tag app " + str(ref)) from None
    except docker.errors.DockerException as e:
        raise RegistryError(f"{ref}: cannot reach the local Docker daemon: {e}",
                            hint="start Docker, or set DOCKER_HOST") from None
    return dest
