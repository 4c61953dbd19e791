"""Crossplane packages (xpkg): read one from a directory, a `.xpkg` tarball or a pulled OCI image.

Input: a path or an OCI image (its top manifest bytes plus a `BlobGetter`, `(digest) -> bytes`, so it
works on a pulled OCI image layout or on any registry client). Output: `Package`, a frozen record of
the package's identity (the reference it stands for: registry and repository are the identity, the
tag the pinned version), its meta object (kind, name, `crossplane.version`, `dependsOn`,
`capabilities`, the provider-family label), its CRDs (group, kind, plural, scope, versions), every
other object of its `package.yaml`, and the structural problems found while reading it (rule PKG-001
is reported from those by `crossplane.check`).

Format (crossplane/crossplane `contributing/specifications/xpkg.md`; v2.0.0 `internal/xpkg/*`):
- an xpkg is an OCI image; from an index the single manifest, or linux/amd64, is used;
- at most one layer descriptor is annotated `io.crossplane.xpkg: base`; `crossplane xpkg build` also
  records that as an image-config label `io.crossplane.xpkg:sha256:<layer-hex>` = `base` (tarballs can
  lose descriptor annotations; `crossplane beta validate` finds the layer by the label); both must agree;
- that layer holds one `package.yaml` (a YAML stream) at its root; with no annotated layer the
  flattened filesystem is used (legacy);
- a `.xpkg` file is go-containerregistry `tarball.Write` output (`manifest.json`, docker-save style)
  or an OCI image layout in a tar (`oci-layout`, `index.json`, `blobs/`).

Does not talk to registries (pass a `BlobGetter` from `bundler.registry`/`bundler.layout`), and does
not judge compatibility (that is `crossplane.py`).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .documents import Document, Origin, load_stream
from .errors import InputError, UsageError
from .oci import INDEX_TYPES, Descriptor, Platform, digest_hex, verified
from .reference import ImageRef

BlobGetter = Callable[[str], bytes]

META_GROUP = "meta.pkg.crossplane.io"
PACKAGE_FILE = "package.yaml"
UNPUBLISHED = "unpublished"  # the registry of a local package given without REF= (never a real host: no dot)
XPKG_ANNOTATION = "io.crossplane.xpkg"
XPKG_BASE = "base"
FAMILY_LABEL = "pkg.crossplane.io/provider-family"
MAX_PACKAGE_BYTES = 64 * 1024 * 1024
MAX_TAR_MEMBER = 512 * 1024 * 1024
PACKAGE_KINDS = ("Provider", "Function", "Configuration")

# Linters NewProviderLinter / NewConfigurationLinter / NewFunctionLinter (v2.0.0 internal/xpkg/lint.go):
# the (group, kind) pairs each package type may carry besides its one meta object.
_CRD = ("apiextensions.k8s.io", "CustomResourceDefinition")
ALLOWED_OBJECTS: dict[str, frozenset[tuple[str, str]]] = {
    "Provider": frozenset({_CRD, ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"),
                           ("admissionregistration.k8s.io", "MutatingWebhookConfiguration")}),
    "Function": frozenset({_CRD}),
    "Configuration": frozenset({
        ("apiextensions.crossplane.io", "CompositeResourceDefinition"), ("apiextensions.crossplane.io", "Composition"),
        ("ops.crossplane.io", "Operation"), ("ops.crossplane.io", "CronOperation"),
        ("ops.crossplane.io", "WatchOperation"),
    }),
}


@dataclass(frozen=True)
class CRDVersion:
    name: str
    served: bool
    deprecated: bool
    storage: bool
    schema: dict[str, Any] | None  # openAPIV3Schema, when the CRD carries one


@dataclass(frozen=True)
class CRD:
    group: str
    kind: str
    plural: str
    scope: str  # "Namespaced" | "Cluster"
    versions: tuple[CRDVersion, ...]
    doc: Document

    @property
    def name(self) -> str:
        return f"{self.plural}.{self.group}"

    def version(self, name: str) -> CRDVersion | None:
        return next((v for v in self.versions if v.name == name), None)


@dataclass(frozen=True)
class Dependency:
    """One meta `dependsOn` entry (v2.0.0 apis/pkg/meta/v1/meta.go)."""

    kind: str  # Provider | Function | Configuration ("" when the entry names none)
    package: str  # the reference as written
    version: str  # Masterminds constraint or an OCI digest
    key: str  # "package" (current form) or the deprecated "provider" / "configuration" / "function"
    index: int


@dataclass(frozen=True)
class Problem:
    """A structural problem found while reading a package (reported as PKG-001)."""

    message: str
    path: str = ""


@dataclass(frozen=True)
class Package:
    ref: ImageRef  # identity: ref.name (registry + repository); pinned version: ref.tag / ref.digest
    source: str  # what it was read from (path or reference), for messages
    kind: str  # meta kind: Provider | Function | Configuration ("" when the meta object is missing)
    meta: Document | None
    crds: tuple[CRD, ...]
    objects: tuple[Document, ...]  # every document of package.yaml, meta included
    problems: tuple[Problem, ...] = ()

    @property
    def identity(self) -> str:
        return self.ref.name

    @property
    def published(self) -> bool:
        """False for a local package read without REF= (a root under development, never pushed)."""
        return self.ref.domain != UNPUBLISHED

    @property
    def version(self) -> str | None:
        return self.ref.tag

    @property
    def name(self) -> str:
        return self.meta.name if self.meta is not None else ""

    @property
    def dns_name(self) -> str:
        """The name Crossplane gives a package installed as a dependency: ToDNSLabel(repository path)."""
        return to_dns_label(self.ref.path)

    @property
    def spec(self) -> dict[str, Any]:
        spec = self.meta.obj.get("spec") if self.meta is not None else None
        return spec if isinstance(spec, dict) else {}

    @property
    def crossplane_constraint(self) -> str | None:
        xp = self.spec.get("crossplane")
        value = xp.get("version") if isinstance(xp, dict) else None
        return str(value) if value is not None else None

    @property
    def capabilities(self) -> tuple[str, ...] | None:
        caps = self.spec.get("capabilities")
        return tuple(str(c) for c in caps) if isinstance(caps, list) else None

    @property
    def family(self) -> str | None:
        labels = (self.meta.obj.get("metadata") or {}).get("labels") if self.meta is not None else None
        value = labels.get(FAMILY_LABEL) if isinstance(labels, dict) else None
        return str(value) if value else None

    @property
    def depends_on(self) -> tuple[Dependency, ...]:
        out: list[Dependency] = []
        for index, dep in enumerate(self.spec.get("dependsOn") or []):
            if not isinstance(dep, dict):
                continue
            key, kind = "package", str(dep.get("kind", ""))
            package = dep.get("package")
            for legacy in ("provider", "configuration", "function"):
                if package is None and dep.get(legacy) is not None:
                    key, package, kind = legacy, dep[legacy], legacy.capitalize()
            out.append(Dependency(kind, str(package or ""), str(dep.get("version") or ""), key, index))
        return tuple(out)


def to_dns_label(path: str) -> str:
    """crossplane internal/xpkg ToDNSLabel: '/' and '.' become '-', lower case, at most 63 characters."""
    out = "".join(c if c.isalnum() or c == "-" else "-" for c in path.lower())
    return out[:63].strip("-")


# --- package.yaml ------------------------------------------------------------------------------


def parse_package_yaml(text: str, ref: ImageRef, source: str, problems: list[Problem] | None = None) -> Package:
    """Build a `Package` from the text of a `package.yaml` stream.

    Raises:
        InputError: the YAML does not parse.
    """
    problems = list(problems or [])
    docs = load_stream(text, Origin(f"{source}!{PACKAGE_FILE}", 1, source="package"))
    metas = [d for d in docs if d.api_version.split("/")[0] == META_GROUP]
    meta = metas[0] if len(metas) == 1 else None
    if not metas:
        problems.append(Problem(f"{PACKAGE_FILE} has no {META_GROUP} object"))
    elif len(metas) > 1:
        problems.append(Problem(f"{PACKAGE_FILE} has {len(metas)} {META_GROUP} objects; exactly one is allowed"))
    kind = meta.kind if meta is not None else ""
    if meta is not None and kind not in PACKAGE_KINDS:
        problems.append(Problem(f"meta kind {kind!r} is not one of {', '.join(PACKAGE_KINDS)}", "kind"))
        kind = ""
    crds: list[CRD] = []
    for doc in docs:
        if doc is meta or doc in metas:
            continue
        gk = (doc.api_version.split("/")[0] if "/" in doc.api_version else "", doc.kind)
        if kind and gk not in ALLOWED_OBJECTS[kind]:
            problems.append(Problem(f"{doc.api_version} {doc.kind} {doc.name!r} is not allowed in a {kind} package"))
        if gk == _CRD:
            crd = parse_crd(doc)
            if crd is None:
                problems.append(Problem(f"CustomResourceDefinition {doc.name!r} lacks spec.group, names or versions"))
            else:
                crds.append(crd)
    return Package(ref, source, kind, meta, tuple(crds), tuple(docs), tuple(problems))


def parse_crd(doc: Document) -> CRD | None:
    spec = doc.obj.get("spec")
    if not isinstance(spec, dict):
        return None
    names = spec.get("names") or {}
    group, kind = spec.get("group"), names.get("kind") if isinstance(names, dict) else None
    plural = names.get("plural") if isinstance(names, dict) else None
    versions = spec.get("versions")
    if not group or not kind or not isinstance(versions, list):
        return None
    out = []
    for v in versions:
        if not isinstance(v, dict) or "name" not in v:
            continue
        schema = (v.get("schema") or {}).get("openAPIV3Schema") if isinstance(v.get("schema"), dict) else None
        out.append(CRDVersion(str(v["name"]), bool(v.get("served", False)), bool(v.get("deprecated", False)),
                              bool(v.get("storage", False)), schema if isinstance(schema, dict) else None))
    return CRD(str(group), str(kind), str(plural or kind.lower() + "s"), str(spec.get("scope", "Namespaced")),
               tuple(out), doc)


# --- local directory or file -------------------------------------------------------------------


def read_local(path: Path, ref: ImageRef) -> Package:
    """A directory holding `package.yaml`, or the file itself (the content of a base layer).

    Raises:
        InputError: no package.yaml, unreadable, or malformed YAML.
    """
    target = path / PACKAGE_FILE if path.is_dir() else path
    if not target.is_file():
        raise InputError(f"{path}: no {PACKAGE_FILE} found", hint="point at the package.yaml of a built package")
    if target.stat().st_size > MAX_PACKAGE_BYTES:
        raise InputError(f"{target}: larger than {MAX_PACKAGE_BYTES} bytes")
    try:
        text = target.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{target}: cannot read: {exc}") from None
    return parse_package_yaml(text, ref, str(target))


# --- OCI image (pulled layout, registry, or tarball) -------------------------------------------


def read_image(ref: ImageRef, top: bytes, blob: BlobGetter, *, source: str | None = None) -> Package:
    """Read an xpkg image: `top` is the manifest or index `ref` resolves to; `blob` returns verified bytes.

    Raises:
        InputError: the manifest, config or layer is not what an image needs (not JSON, bad tar).
    """
    source = source or str(ref)
    manifest = _json(top, f"{source}: manifest")
    if manifest.get("mediaType") in INDEX_TYPES or "manifests" in manifest:
        manifest = _json(blob(_pick_manifest(manifest, source).digest), f"{source}: manifest")
    layers = [Descriptor.from_json(d) for d in manifest.get("layers") or []]
    config_desc = manifest.get("config")
    config = _json(blob(Descriptor.from_json(config_desc).digest), f"{source}: config") if config_desc else {}
    labels = ((config.get("config") or {}).get("Labels") or {}) if isinstance(config, dict) else {}
    return _from_layers(ref, source, layers, labels, lambda d: blob(d.digest))


def _pick_manifest(index: dict[str, Any], source: str) -> Descriptor:
    manifests = [Descriptor.from_json(d) for d in index.get("manifests") or []]
    manifests = [m for m in manifests if m.platform is None or not m.platform.is_unknown]
    if len(manifests) == 1:
        return manifests[0]
    amd64 = [m for m in manifests if m.platform and m.platform.matches(Platform("linux", "amd64"))]
    if not amd64:
        raise InputError(f"{source}: index has {len(manifests)} manifests and none for linux/amd64",
                         hint="Crossplane reads the single manifest or the linux/amd64 one")
    return amd64[0]


def _from_layers(ref: ImageRef, source: str, layers: list[Descriptor], labels: dict[str, Any],
                 layer_bytes: Callable[[Descriptor], bytes]) -> Package:
    problems: list[Problem] = []
    annotated = [d for d in layers if d.annotation(XPKG_ANNOTATION) == XPKG_BASE]
    labelled = {k.removeprefix(XPKG_ANNOTATION + ":") for k, v in labels.items()
                if k.startswith(XPKG_ANNOTATION + ":") and v == XPKG_BASE}
    if len(annotated) > 1:
        problems.append(Problem(f"{len(annotated)} layers are annotated {XPKG_ANNOTATION}: {XPKG_BASE}; at most one"))
    if len(labelled) > 1:
        problems.append(Problem(f"{len(labelled)} config labels mark a {XPKG_BASE} layer; at most one"))
    if annotated and labelled and annotated[0].digest not in labelled:
        problems.append(Problem(f"the config label ({min(labelled)}) and the layer annotation "
                                f"({annotated[0].digest}) name different base layers"))
    base = annotated[0] if annotated else next((d for d in layers if d.digest in labelled), None)
    if labelled and base is None:
        problems.append(Problem(f"the config label names a base layer {min(labelled)} the manifest lacks"))
    text = None
    if base is not None:
        text = _tar_file(layer_bytes(base), PACKAGE_FILE, f"{source}: layer {base.digest}")
        if text is None:
            problems.append(Problem(f"the base layer {base.digest} has no {PACKAGE_FILE} at its root"))
    else:  # legacy: the flattened filesystem, later layers win
        for layer in layers:
            found = _tar_file(layer_bytes(layer), PACKAGE_FILE, f"{source}: layer {layer.digest}")
            text = found if found is not None else text
        if text is None:
            problems.append(Problem(f"no layer is annotated {XPKG_ANNOTATION}: {XPKG_BASE} and no layer holds "
                                    f"{PACKAGE_FILE}"))
    if text is None:
        return Package(ref, source, "", None, (), (), tuple(problems))
    return parse_package_yaml(text, ref, source, problems)


def _tar_file(data: bytes, name: str, what: str) -> str | None:
    """The text of `name` at the root of a (possibly gzip-compressed) tar layer, or None."""
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise InputError(f"{what}: bad gzip: {exc}") from None
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar:
                if member.isfile() and member.name.lstrip("./") == name and "/" not in member.name.lstrip("./"):
                    if member.size > MAX_PACKAGE_BYTES:
                        raise InputError(f"{what}: {name} is larger than {MAX_PACKAGE_BYTES} bytes")
                    handle = tar.extractfile(member)
                    assert handle is not None
                    return handle.read().decode("utf-8")
    except (tarfile.TarError, UnicodeDecodeError) as exc:
        raise InputError(f"{what}: not a readable tar layer: {exc}") from None
    return None


def _json(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{what}: not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise InputError(f"{what}: not a JSON object")
    return obj


def layout_blob_getter(root: Path) -> BlobGetter:
    """Blobs of an OCI image layout directory (`blobs/<alg>/<hex>`), digest-checked as they are read."""
    def get(digest: str) -> bytes:
        path = root / "blobs" / "sha256" / digest_hex(digest)
        try:
            data = path.read_bytes()
        except OSError:
            raise InputError(f"{root}: blob {digest} is missing", hint="the OCI layout is incomplete") from None
        return b"".join(verified([data], digest, None, what=f"{root}: blob"))
    return get


def read_layout(root: Path, ref: ImageRef | None) -> Package:
    """An xpkg inside an OCI image layout directory (`oci-layout`, `index.json`, `blobs/`).

    The image is the `index.json` entry whose `org.opencontainers.image.ref.name` annotation is the
    reference (or its tag), else the only entry.

    Raises:
        InputError: not a layout, or the image is not in it.
        UsageError: no reference given and none recorded in the layout.
    """
    index = _json(_read(root / "index.json"), f"{root}/index.json")
    entries = [Descriptor.from_json(d) for d in index.get("manifests") or []]
    chosen = _choose_entry(entries, ref, str(root))
    ref = ref or _ref_from_annotation(chosen, str(root))
    get = layout_blob_getter(root)
    top = get(chosen.digest)
    return read_image(ref, top, get, source=str(root))


def _choose_entry(entries: list[Descriptor], ref: ImageRef | None, source: str) -> Descriptor:
    if ref is not None:
        names = {str(ref), ref.tag, ref.familiar}
        hits = [e for e in entries if e.annotation("org.opencontainers.image.ref.name") in names]
        if hits:
            return hits[0]
    if len(entries) == 1:
        return entries[0]
    raise InputError(f"{source}: {len(entries)} images in the layout and none is named {ref}",
                     hint="say which one with REF=PATH")


def _ref_from_annotation(entry: Descriptor, source: str) -> ImageRef:
    name = entry.annotation("org.opencontainers.image.ref.name")
    ref = ImageRef.try_parse(name) if name and "/" in name else None
    if ref is None:
        raise UsageError(f"{source}: the package does not say which reference it stands for",
                         hint="pass it as REF=PATH, e.g. xpkg.crossplane.io/org/provider-x:v1.0.0=PATH")
    return ref


def read_xpkg_file(path: Path, ref: ImageRef | None) -> Package:
    """A `.xpkg` file: a go-containerregistry tarball (`manifest.json`) or an OCI layout in a tar.

    Raises:
        InputError: not a tar, or neither format.
        UsageError: no reference given and none recorded in the file.
    """
    members = _tar_members(path)
    if "index.json" in members:
        index = _json(members["index.json"], f"{path}!index.json")
        entries = [Descriptor.from_json(d) for d in index.get("manifests") or []]
        chosen = _choose_entry(entries, ref, str(path))
        ref = ref or _ref_from_annotation(chosen, str(path))

        def get(digest: str) -> bytes:
            data = members.get(f"blobs/sha256/{digest_hex(digest)}")
            if data is None:
                raise InputError(f"{path}: blob {digest} is missing")
            return b"".join(verified([data], digest, None, what=f"{path}: blob"))
        return read_image(ref, get(chosen.digest), get, source=str(path))
    if "manifest.json" not in members:
        raise InputError(f"{path}: neither manifest.json nor index.json: not an image tarball",
                         hint="build it with `crossplane xpkg build`")
    # go-containerregistry tarball.Write: [{"Config": file, "RepoTags": [...], "Layers": [file, ...]}]
    try:
        entries_ = json.loads(members["manifest.json"])
        entry = entries_[0]
        config = _json(members[entry["Config"]], f"{path}!{entry['Config']}")
        layer_files = [str(f) for f in entry["Layers"]]
        layer_data = [members[f] for f in layer_files]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise InputError(f"{path}: malformed manifest.json: {exc!r}") from None
    if ref is None:
        tags = entry.get("RepoTags") or []
        ref = ImageRef.try_parse(tags[0]) if tags else None
        if ref is None:
            raise UsageError(f"{path}: the package does not say which reference it stands for",
                             hint="pass it as REF=FILE, e.g. xpkg.crossplane.io/org/provider-x:v1.0.0=FILE")
    # Descriptor annotations are not in a docker-save tarball: the config label is the only marker.
    descriptors = [Descriptor("application/vnd.docker.image.rootfs.diff.tar", "sha256:" + hashlib.sha256(d).hexdigest(),
                              len(d)) for d in layer_data]
    by_digest = dict(zip((d.digest for d in descriptors), layer_data, strict=True))
    labels = (config.get("config") or {}).get("Labels") or {}
    return _from_layers(ref, str(path), descriptors, labels, lambda d: by_digest[d.digest])


def _tar_members(path: Path) -> dict[str, bytes]:
    try:
        with tarfile.open(path, mode="r:*") as tar:
            out: dict[str, bytes] = {}
            for member in tar:
                if member.isfile():
                    if member.size > MAX_TAR_MEMBER:
                        raise InputError(f"{path}: member {member.name} is larger than {MAX_TAR_MEMBER} bytes")
                    handle = tar.extractfile(member)
                    assert handle is not None
                    out[member.name.removeprefix("./")] = handle.read()
            return out
    except (tarfile.TarError, OSError) as exc:
        raise InputError(f"{path}: not a readable tar file: {exc}") from None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None


def read_package(arg: str) -> Package:
    """Read `DIR`, `FILE`, `FILE.xpkg`, `LAYOUT_DIR`, or any of them as `REF=PATH`.

    A bare reference (no local path) needs a registry client; the CLI and pipeline pull it into an
    OCI layout first and call `read_layout` or `read_image`.

    Raises:
        UsageError: the argument names no local path, or no reference can be found for it.
        InputError: the file cannot be read as a package.
    """
    ref: ImageRef | None = None
    path_text = arg
    if "=" in arg:
        ref_text, _, path_text = arg.partition("=")
        ref = ImageRef.try_parse(ref_text)
        if ref is None or not (ref.tag or ref.digest) or ref_text.split("/")[0] != ref.domain:
            raise UsageError(f"--package {arg}: {ref_text!r} is not a fully qualified reference with a tag",
                             hint="write REGISTRY/ORG/NAME:VERSION=PATH")
    path = Path(path_text)
    if not path.exists():
        raise UsageError(f"--package {arg}: {path} does not exist",
                         hint="pull the package into an OCI layout first, then pass REF=LAYOUT_DIR")
    if path.is_dir() and (path / "index.json").is_file() and (path / "oci-layout").is_file():
        return read_layout(path, ref)
    if path.is_file() and path.suffix not in (".yaml", ".yml"):
        return read_xpkg_file(path, ref)
    if ref is None:
        # A root being checked (a Configuration under development) needs no identity until something in
        # the bundle depends on it or installs it; those checks then say to pass REF=PATH.
        package = read_local(path, ImageRef(UNPUBLISHED, "package", None, None))
        name = package.name or (path.name if path.is_dir() else path.parent.name)
        return replace(package, ref=ImageRef(UNPUBLISHED, name, None, None))
    return read_local(path, ref)
