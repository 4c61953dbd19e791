"""The bill of materials: what a bundle carries, as typed values and as documents.

Input: the resolved images (source, local and digests), charts, manifests, Crossplane packages and the
payload files, as `Bom`. Output:
- `Bom.to_dict()`: the predicate of `bundle.intoto.json` (predicateType `PREDICATE_TYPE`), checked
  against `schemas/bom-predicate.schema.json` when written and when read (`Bom.from_dict`);
- `Bom.subjects()`: the in-toto subjects (every image by local name and bundled digest, every chart);
- `cyclonedx(bom)`: `sbom.cdx.json`, CycloneDX 1.6 via cyclonedx-python-lib, one `container` component
  per image (digest as hash, `pkg:oci` purl) and one `application` component per chart.

Specs: in-toto Statement v1 (ResourceDescriptor), CycloneDX 1.6, purl-spec `oci` type.
Does not read files, sign, or serialise the statement (that is `attest.py`); pure code.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
from packageurl import PackageURL

from .errors import VerificationError

PREDICATE_TYPE = "https://airgap-bundle.dev/bom/v1"
TOOL_NAME = "airgap-bundle"


@dataclass(frozen=True)
class PlatformEntry:
    platform: str
    digest: str
    size: int
    media_type: str | None = None


@dataclass(frozen=True)
class ImageEntry:
    source: str  # as written in the sources
    normalized: str
    local: str  # cluster-local, digest-pinned
    upstream_digest: str
    bundled_digest: str
    media_type: str
    platforms: tuple[PlatformEntry, ...]
    keep_upstream_index: bool = False
    attestations: tuple[str, ...] = ()
    exemptions: tuple[tuple[str, str], ...] = ()  # (platform, reason)


@dataclass(frozen=True)
class ChartSourceEntry:
    """Where a chart archive was fetched from: a Helm repository URL or an OCI reference, version, digest."""

    source: str   # https://charts.example.com/stable, or oci://host/path/name
    name: str
    version: str
    digest: str   # sha256 of the archive as fetched (index.yaml digest, or the OCI chart layer)
    url: str = ""  # where the archive was downloaded from
    provenance: str | None = None  # "verified: <signer>" when its .prov was verified

    def to_dict(self) -> dict[str, Any]:
        return _drop_none({"source": self.source, "name": self.name, "version": self.version, "digest": self.digest,
                           "url": self.url or None, "provenance": self.provenance})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChartSourceEntry:
        return cls(d["source"], d["name"], d["version"], d["digest"], d.get("url", ""), d.get("provenance"))


@dataclass(frozen=True)
class ChartEntry:
    name: str
    version: str
    path: str  # member path in the bundle
    digest: str
    values_override: str | None = None
    fetched: ChartSourceEntry | None = None  # the chart was named by reference (repository or OCI)
    dependencies: tuple[ChartSourceEntry, ...] = ()  # fetched into its charts/ (helm dependency build)


@dataclass(frozen=True)
class ManifestEntry:
    path: str
    source: str


@dataclass(frozen=True)
class CrossplanePackageEntry:
    ref: str
    kind: str
    local: str | None = None


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class BaseEntry:
    """An update bundle's base: the full bundle it was built against, named by the sha256 of its
    `bundle.intoto.json` bytes, and the image blobs the update takes from it instead of carrying them
    (docs/bundle-format.md section 7)."""

    statement_digest: str  # sha256:<hex> of the base's statement bytes
    name: str
    version: str
    files: tuple[FileEntry, ...] = ()

    def describe(self) -> str:
        """`NAME VERSION (statement sha256:...)`: how messages name the base."""
        return f"{self.name} {self.version} (statement {self.statement_digest})"

    def to_dict(self) -> dict[str, Any]:
        return {"statementDigest": self.statement_digest, "name": self.name, "version": self.version,
                "files": _file_dicts(self.files)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BaseEntry:
        return cls(d["statementDigest"], d["name"], d["version"], _file_entries(d["files"]))


@dataclass(frozen=True)
class Bom:
    name: str
    version: str
    created: int  # seconds since the epoch (SOURCE_DATE_EPOCH)
    tool_version: str
    spec_digest: str
    local_registry: str
    images: tuple[ImageEntry, ...] = ()
    charts: tuple[ChartEntry, ...] = ()
    manifests: tuple[ManifestEntry, ...] = ()
    crossplane_packages: tuple[CrossplanePackageEntry, ...] = ()
    files: tuple[FileEntry, ...] = field(default=())
    base: BaseEntry | None = None  # set on an update bundle: what it takes from its base

    @property
    def created_rfc3339(self) -> str:
        return datetime.fromtimestamp(self.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def to_dict(self) -> dict[str, Any]:
        """The predicate, validated against the schema (a bug here must not reach a signature)."""
        out: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "created": self.created_rfc3339,
            "tool": {"name": TOOL_NAME, "version": self.tool_version},
            "specDigest": self.spec_digest,
            "localRegistry": self.local_registry,
            "images": [_image_dict(i) for i in sorted(self.images, key=lambda i: (i.local, i.source))],
            "charts": [_chart_dict(c) for c in sorted(self.charts, key=lambda c: c.path)],
            "manifests": [{"path": m.path, "source": m.source} for m in sorted(self.manifests, key=lambda m: m.path)],
            "crossplanePackages": [_drop_none({"ref": p.ref, "kind": p.kind, "local": p.local})
                                   for p in sorted(self.crossplane_packages, key=lambda p: p.ref)],
            "files": _file_dicts(self.files),
        }
        if self.base is not None:
            out["base"] = self.base.to_dict()
        _validate(out)
        return out

    @classmethod
    def from_dict(cls, data: Any) -> Bom:
        """Parse a predicate read from a bundle.

        Raises:
            VerificationError: the predicate does not follow the schema.
        """
        _validate(data)
        created = int(datetime.strptime(data["created"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp())
        return cls(
            name=data["name"], version=data["version"], created=created, tool_version=data["tool"]["version"],
            spec_digest=data["specDigest"], local_registry=data.get("localRegistry", ""),
            images=tuple(
                ImageEntry(
                    source=i["source"], normalized=i["normalized"], local=i["local"],
                    upstream_digest=i["upstreamDigest"], bundled_digest=i["bundledDigest"],
                    media_type=i["mediaType"], keep_upstream_index=bool(i.get("keepUpstreamIndex", False)),
                    platforms=tuple(PlatformEntry(p["platform"], p["digest"], p["size"], p.get("mediaType"))
                                    for p in i["platforms"]),
                    attestations=tuple(i.get("attestations", ())),
                    exemptions=tuple((e["platform"], e["reason"]) for e in i.get("exemptions", ())),
                )
                for i in data["images"]
            ),
            charts=tuple(ChartEntry(c["name"], c["version"], c["path"], c["digest"], c.get("valuesOverride"),
                                    ChartSourceEntry.from_dict(c["source"]) if "source" in c else None,
                                    tuple(ChartSourceEntry.from_dict(d) for d in c.get("dependencies", ())))
                         for c in data["charts"]),
            manifests=tuple(ManifestEntry(m["path"], m["source"]) for m in data["manifests"]),
            crossplane_packages=tuple(CrossplanePackageEntry(p["ref"], p["kind"], p.get("local"))
                                      for p in data["crossplanePackages"]),
            files=_file_entries(data["files"]),
            base=BaseEntry.from_dict(data["base"]) if "base" in data else None,
        )

    def subjects(self) -> list[dict[str, Any]]:
        """in-toto ResourceDescriptors: every image (local name, bundled digest) and every chart."""
        subjects: dict[str, dict[str, Any]] = {}
        for image in self.images:
            name = image.local.split("@", 1)[0]
            subjects[name] = {"name": name, "digest": {"sha256": image.bundled_digest.removeprefix("sha256:")}}
        for chart in self.charts:
            subjects[chart.path] = {"name": chart.path, "digest": {"sha256": chart.digest.removeprefix("sha256:")}}
        return [subjects[k] for k in sorted(subjects)]


def _file_dicts(files: tuple[FileEntry, ...]) -> list[dict[str, Any]]:
    return [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in sorted(files, key=lambda f: f.path)]


def _file_entries(files: list[dict[str, Any]]) -> tuple[FileEntry, ...]:
    return tuple(FileEntry(f["path"], f["size"], f["sha256"]) for f in files)


def _chart_dict(chart: ChartEntry) -> dict[str, Any]:
    out = _drop_none({"name": chart.name, "version": chart.version, "path": chart.path, "digest": chart.digest,
                      "valuesOverride": chart.values_override})
    if chart.fetched:
        out["source"] = chart.fetched.to_dict()
    if chart.dependencies:
        out["dependencies"] = [d.to_dict() for d in chart.dependencies]
    return out


def _image_dict(image: ImageEntry) -> dict[str, Any]:
    out: dict[str, Any] = {
        "source": image.source, "normalized": image.normalized, "local": image.local,
        "upstreamDigest": image.upstream_digest, "bundledDigest": image.bundled_digest,
        "mediaType": image.media_type, "keepUpstreamIndex": image.keep_upstream_index,
        "platforms": [_drop_none({"platform": p.platform, "digest": p.digest, "size": p.size,
                                  "mediaType": p.media_type}) for p in image.platforms],
    }
    if image.attestations:
        out["attestations"] = list(image.attestations)
    if image.exemptions:
        out["exemptions"] = [{"platform": p, "reason": r} for p, r in image.exemptions]
    return out


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


@cache
def _validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(resources.files("bundler").joinpath("schemas/bom-predicate.schema.json").read_text())
    return jsonschema.Draft202012Validator(schema)


def _validate(data: Any) -> None:
    error = jsonschema.exceptions.best_match(_validator().iter_errors(data))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(predicate)"
        raise VerificationError(f"bill of materials: {where}: {error.message}",
                                hint="the statement does not follow schemas/bom-predicate.schema.json")


def purl(image: ImageEntry) -> str:
    """purl-spec `oci`: pkg:oci/<last path segment>@<digest>?repository_url=<registry/path>&tag=<tag>."""
    name_part = image.normalized.split("@", 1)[0]
    tag = None
    last = name_part.rsplit("/", 1)[-1]
    if ":" in last:
        name_part, tag = name_part.rsplit(":", 1)
    qualifiers = {"repository_url": name_part}
    if tag:
        qualifiers["tag"] = tag
    return str(PackageURL(type="oci", name=name_part.rsplit("/", 1)[-1].lower(),
                          version=image.bundled_digest, qualifiers=qualifiers))


def cyclonedx(bom: Bom) -> bytes:
    """`sbom.cdx.json`: CycloneDX 1.6 JSON, deterministic (fixed serial number and timestamp)."""
    # Imported here: cyclonedx-python-lib costs ~0.1 s of start-up, and only a build writes an SBOM
    # (verify, inspect and push read the predicate through this module too).
    from cyclonedx.model import HashAlgorithm, HashType, Property
    from cyclonedx.model.bom import Bom as CdxBom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot6

    created = datetime.fromtimestamp(bom.created, UTC)
    # A serial number derived from the content keeps the SBOM reproducible (same inputs, same bytes).
    serial = uuid.uuid5(uuid.NAMESPACE_URL, f"{PREDICATE_TYPE}/{bom.name}/{bom.version}/{bom.spec_digest}")
    cdx = CdxBom(serial_number=serial)
    cdx.metadata.timestamp = created
    root = Component(name=bom.name, version=bom.version, type=ComponentType.APPLICATION,
                     bom_ref=f"bundle:{bom.name}@{bom.version}")
    cdx.metadata.component = root
    for image in sorted(bom.images, key=lambda i: i.local):
        cdx.components.add(Component(
            name=image.normalized.split("@", 1)[0],
            version=image.bundled_digest,
            type=ComponentType.CONTAINER,
            bom_ref=image.local,
            purl=PackageURL.from_string(purl(image)),
            hashes=[HashType(alg=HashAlgorithm.SHA_256, content=image.bundled_digest.removeprefix("sha256:"))],
            properties=[Property(name="airgap-bundle:source", value=image.source),
                        Property(name="airgap-bundle:local", value=image.local),
                        Property(name="airgap-bundle:upstreamDigest", value=image.upstream_digest),
                        *(Property(name="airgap-bundle:platform", value=f"{p.platform} {p.digest}")
                          for p in image.platforms)],
        ))
    for chart in sorted(bom.charts, key=lambda c: c.path):
        cdx.components.add(Component(
            name=chart.name, version=chart.version, type=ComponentType.APPLICATION, bom_ref=f"chart:{chart.path}",
            hashes=[HashType(alg=HashAlgorithm.SHA_256, content=chart.digest.removeprefix("sha256:"))],
            properties=[Property(name="airgap-bundle:path", value=chart.path),
                        *(Property(name="airgap-bundle:source", value=f"{f.source} {f.name} {f.version} {f.digest}")
                          for f in ((chart.fetched,) if chart.fetched else ())),
                        *(Property(name="airgap-bundle:dependency", value=f"{d.source} {d.name} {d.version} {d.digest}")
                          for d in chart.dependencies)],
        ))
    cdx.register_dependency(root, list(cdx.components))
    text = JsonV1Dot6(cdx).output_as_string(indent=2)
    # The library adds a tool entry with its own version; keep it, but sort keys for stable bytes.
    return (json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n").encode()
