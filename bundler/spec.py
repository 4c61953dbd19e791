"""Load and validate `bundle.yaml`, keeping line numbers: YAML text -> `Spec`.

The file is read with ruamel.yaml (its nodes keep line numbers, so an error names file, line and field),
validated against `schemas/bundle.schema.json` (jsonschema), then turned into frozen dataclasses that
later stages take as arguments. Relative paths are resolved against the spec file's folder.

Does not render, pull or read the files the spec names; it only checks that they are well-formed names.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InvalidReferenceError, SpecError
from .oci import DEFAULT_PLATFORMS, Platform
from .reference import ImageRef

if TYPE_CHECKING:  # ruamel and the catalogue are imported where a spec is loaded: `pull REF...` never loads one
    from ruamel.yaml.comments import CommentedMap

    from . import catalogue

API_VERSION = "airgap-bundle.dev/v1alpha1"
DEFAULT_TEMPLATE = "{host}/{source_host}/{path}"
MAX_SPEC_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class AcceptedImage:
    """An image a chart template hard-codes, accepted with a reason: no values setting can move it."""

    ref: ImageRef
    reason: str


@dataclass(frozen=True)
class ProvenancePolicy:
    """Verify Helm provenance (`.prov`) against an OpenPGP public keyring; `required`: a missing one fails."""

    keyring: Path
    required: bool = True


@dataclass(frozen=True)
class RemoteChart:
    """A chart named by where it lives: a Helm repository (`repo` https://...) or an OCI repository
    (`repo` oci://host/path holding `name`, or `chart` oci://host/path/name). `version` may be a constraint."""

    repo: str        # https://charts.example.com/stable, or oci://host/path (the chart's parent)
    name: str
    version: str
    provenance: ProvenancePolicy | None = None
    line: int = 0    # of the entry in the spec, for messages

    @property
    def is_oci(self) -> bool:
        return self.repo.startswith("oci://")

    def __str__(self) -> str:
        if self.is_oci:
            return f"{self.repo.rstrip('/')}/{self.name}:{self.version}"
        return f"{self.name} {self.version} from {self.repo}"


@dataclass(frozen=True)
class ChartSource:
    # A remote chart's `path` is a placeholder until `charts.localize` fetches it (render never sees it).
    path: Path
    release: str
    namespace: str | None = None
    values: tuple[Path, ...] = ()
    set: tuple[str, ...] = ()
    kube_version: str | None = None
    include_tests: bool = True
    # `helm package --version/--app-version`: for charts whose in-repo version is a placeholder.
    stamp_version: str | None = None
    stamp_app_version: str | None = None
    accept_hardcoded: tuple[AcceptedImage, ...] = ()
    remote: RemoteChart | None = None


@dataclass(frozen=True)
class ExtraImage:
    ref: str
    reason: str
    line: int = 0


@dataclass(frozen=True)
class PlatformExemption:
    platform: Platform
    reason: str


@dataclass(frozen=True)
class ImageOptions:
    """Per-image options, matched by normalised name (and tag/digest when the entry gives them)."""

    ref: ImageRef
    confirm: bool = False
    exclude: str | None = None
    keep_upstream_index: bool = False
    platform_exemptions: tuple[PlatformExemption, ...] = ()
    archives: tuple[Path, ...] = ()  # `docker save` / `podman save` files holding the image: never pulled
    docker_daemon: bool = False  # take the image from the local Docker daemon (docker extra)

    @property
    def local(self) -> bool:
        """The image comes from local files or the daemon, never from a registry."""
        return bool(self.archives) or self.docker_daemon

    def matches(self, ref: ImageRef) -> bool:
        if self.ref.name != ref.name:
            return False
        if self.ref.tag is not None and self.ref.tag != ref.tag:
            return False
        return self.ref.digest is None or self.ref.digest == ref.digest


WILDCARD = "*"  # a registries entry for every host no other entry names (through its mirror only)


@dataclass(frozen=True)
class MirrorConfig:
    """A mirror with its own connection settings, in the registries entry that routes through it."""

    host: str
    prefix: str = ""  # repository prefix on the mirror; `{host}` is the source registry's host
    insecure: bool = False
    ca_file: Path | None = None
    docker_config: bool = True
    username_env: str | None = None
    password_env: str | None = None

    def prefix_for(self, source_host: str) -> str:
        """The prefix for one source registry: `{host}` -> `docker.io`, as pull-through caches lay it out."""
        return self.prefix.replace("{host}", source_host).strip("/")


@dataclass(frozen=True)
class RegistryConfig:
    host: str  # as in references, or WILDCARD
    mirrors: tuple[str, ...] = ()
    skip_upstream: bool = False
    insecure: bool = False
    ca_file: Path | None = None
    docker_config: bool = True
    username_env: str | None = None
    password_env: str | None = None
    keep_alive: bool = True
    mirror: MirrorConfig | None = None  # tried before `mirrors`; the only endpoint of a WILDCARD entry


@dataclass(frozen=True)
class CrossplanePackageSource:
    ref: str
    path: Path | None = None


@dataclass(frozen=True)
class CrossplaneWaiver:
    composition: str
    produces: tuple[tuple[str, str], ...]  # (apiVersion, kind)
    reason: str
    step: str | None = None


@dataclass(frozen=True)
class CrossplaneConfig:
    target: str | None = None
    packages: tuple[CrossplanePackageSource, ...] = ()
    waivers: tuple[CrossplaneWaiver, ...] = ()


@dataclass(frozen=True)
class Authority:
    name: str
    required: bool = False


@dataclass(frozen=True)
class Spec:
    path: Path
    digest: str  # sha256 of the spec file bytes, recorded in the bill of materials
    document: Mapping[str, Any] = field(compare=False)  # the spec as plain JSON values (provenance)
    name: str
    version: str
    local_registry: str
    template: str = DEFAULT_TEMPLATE
    source_date_epoch: int | None = None
    platforms: tuple[Platform, ...] = DEFAULT_PLATFORMS
    charts: tuple[ChartSource, ...] = ()
    kustomize: tuple[Path, ...] = ()
    manifests: tuple[str, ...] = ()  # files, directories or globs (absolute)
    extra_images: tuple[ExtraImage, ...] = ()
    images: tuple[ImageOptions, ...] = ()
    registries: tuple[RegistryConfig, ...] = ()
    crossplane: CrossplaneConfig = field(default_factory=CrossplaneConfig)
    authorities: tuple[Authority, ...] = (Authority("vendor", True),)
    discovery_rules: tuple[catalogue.Entry, ...] = ()  # `discovery.rules`: the user's catalogue entries
    chart_repositories: tuple[tuple[str, str], ...] = ()  # `sources.chartRepositories`: (name, url)

    @property
    def catalogue(self) -> catalogue.Catalogue:
        """The built-in operator catalogue plus this spec's `discovery.rules`."""
        from . import catalogue

        return catalogue.builtin().extend(self.discovery_rules)

    def options_for(self, ref: ImageRef) -> ImageOptions | None:
        """The most specific `images:` entry for a reference (digest, then tag, then name)."""
        hits = [o for o in self.images if o.matches(ref)]
        return max(hits, key=lambda o: (o.ref.digest is not None, o.ref.tag is not None), default=None)

    def registry(self, host: str) -> RegistryConfig | None:
        return registry_for(self.registries, host)


def registry_for(configs: Sequence[RegistryConfig], host: str) -> RegistryConfig | None:
    """The registries entry for `host`: its own, else the WILDCARD entry, else None (not allowed)."""
    exact = next((r for r in configs if r.host == host), None)
    return exact or next((r for r in configs if r.host == WILDCARD), None)


def load(path: str | Path) -> Spec:
    """Read, validate and type a bundle spec.

    Raises:
        SpecError: unreadable file, malformed YAML, or a schema violation; the message is `file:line: ...`.
    """
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap
    from ruamel.yaml.error import YAMLError

    spec_path = Path(path)
    try:
        raw = spec_path.read_bytes()
    except OSError as exc:
        raise SpecError(f"{spec_path}: cannot read the bundle spec: {exc.strerror}",
                        hint="pass the path of a bundle.yaml (see examples/bundle.yaml)") from None
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError(f"{spec_path}: larger than {MAX_SPEC_BYTES} bytes; not a bundle spec")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{spec_path}: not UTF-8 (byte {exc.start})", hint="save the file as UTF-8") from None
    try:
        data = YAML(typ="rt").load(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise SpecError(f"{spec_path}:{line}: malformed YAML: {getattr(exc, 'problem', exc)}",
                        hint="fix the YAML syntax") from None
    if not isinstance(data, CommentedMap):
        raise SpecError(f"{spec_path}:1: the bundle spec must be a YAML mapping",
                        hint=f"start from examples/bundle.yaml (apiVersion: {API_VERSION})")
    plain = json.loads(json.dumps(data, default=str))
    errors = sorted(_validator().iter_errors(plain), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        err = errors[0]
        where: list[str | int] = list(err.absolute_path)
        unknown = _unknown_key(err)
        if unknown is not None:  # name the key at its own line, not the mapping that holds it
            key, allowed = unknown
            import difflib

            close = difflib.get_close_matches(key, allowed, n=1)
            message = (f"{_field(where)}: " if where else "") + f"unknown key `{key}`; " + (
                f"did you mean `{close[0]}`?" if close else f"expected one of {', '.join(sorted(allowed))}")
            raise SpecError(f"{spec_path}:{_line(data, [*where, key])}: {message}",
                            hint="see schemas/bundle.schema.json and examples/bundle.yaml")
        raise SpecError(f"{spec_path}:{_line(data, where)}: {_field(where)}: {err.message}",
                        hint="see schemas/bundle.schema.json and examples/bundle.yaml")
    return _build(spec_path, raw, data, plain)


def _validator() -> Any:
    # Imported here: jsonschema costs ~45 ms at start-up, and commands that only use the spec's types
    # (`pull REF...`, `verify`) never validate a spec.
    from importlib import resources

    import jsonschema

    schema = json.loads(resources.files("bundler").joinpath("schemas/bundle.schema.json").read_text())
    return jsonschema.Draft202012Validator(schema)


def _mirror(m: Mapping[str, Any], rel: Callable[[str], Path]) -> MirrorConfig:
    credentials = m.get("credentials") or {}
    return MirrorConfig(
        host=str(m["host"]),
        prefix=str(m.get("prefix") or ""),
        insecure=bool(m.get("insecure", False)),
        ca_file=rel(m["caFile"]) if m.get("caFile") else None,
        docker_config=bool(credentials.get("dockerConfig", True)),
        username_env=credentials.get("usernameEnv"),
        password_env=credentials.get("passwordEnv"),
    )


def _unknown_key(err: Any) -> tuple[str, list[str]] | None:
    """For an `additionalProperties: false` violation: the first key the schema does not know, and the
    keys it does."""
    if err.validator != "additionalProperties" or not isinstance(err.instance, dict):
        return None
    allowed = list(err.schema.get("properties") or {})
    return next(((str(k), allowed) for k in err.instance if k not in allowed), None)


def _line(data: Any, path: list[str | int]) -> int:
    """1-based line of the deepest node on `path` that ruamel knows a position for."""
    from . import catalogue

    return catalogue.line_in(data, path)


def _field(path: list[str | int]) -> str:
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else str(step))
    return out or "(top level)"


def _build(path: Path, raw: bytes, d: CommentedMap, plain: dict[str, Any]) -> Spec:
    from . import catalogue

    base = path.parent.resolve()

    def rel(p: str) -> Path:
        return (base / p) if not Path(p).is_absolute() else Path(p)

    def ref(text: str, where: list[str | int]) -> ImageRef:
        try:
            return ImageRef.parse(text)
        except InvalidReferenceError as exc:
            raise SpecError(f"{path}:{_line(d, where)}: {_field(where)}: {exc.message}",
                            hint="write a full image reference such as registry.example.com/team/app:1.2") from None

    def platform(text: str, where: list[str | int]) -> Platform:
        try:
            return Platform.parse(text)
        except InvalidReferenceError as exc:
            raise SpecError(f"{path}:{_line(d, where)}: {_field(where)}: {exc.message}") from None

    for n, c in enumerate(sources_of(d).get("charts") or ()):
        _check_chart_form(c, f"{path}:{_line(d, ['sources', 'charts', n])}: sources.charts[{n}]")
    meta = d["metadata"]
    local = d["localRegistry"]
    sources = d.get("sources") or {}
    charts = tuple(
        ChartSource(
            path=rel(c["path"]) if "path" in c else Path(f"<{remote}>"),
            release=str(c.get("release") or (remote.name if remote else Path(c["path"]).name.removesuffix(".tgz"))),
            namespace=c.get("namespace"),
            values=tuple(rel(v) for v in c.get("values") or ()),
            set=tuple(str(s) for s in c.get("set") or ()),
            kube_version=c.get("kubeVersion"),
            include_tests=bool(c.get("includeTests", True)),
            stamp_version=str((c.get("stamp") or {})["version"]) if "version" in (c.get("stamp") or {}) else None,
            stamp_app_version=(str((c.get("stamp") or {})["appVersion"])
                               if "appVersion" in (c.get("stamp") or {}) else None),
            accept_hardcoded=tuple(
                AcceptedImage(ref(str(a["ref"]), ["sources", "charts", n, "acceptHardcoded", k, "ref"]),
                              str(a["reason"]))
                for k, a in enumerate(c.get("acceptHardcoded") or ())),
            remote=remote,
        )
        for n, c in enumerate(sources.get("charts") or ())
        for remote in [_remote_chart(c, rel, _line(d, ["sources", "charts", n]))]
    )
    images = tuple(
        ImageOptions(
            ref=ref(str(i["ref"]), ["images", n, "ref"]),
            confirm=bool(i.get("confirm", False)),
            exclude=i.get("exclude"),
            keep_upstream_index=bool(i.get("keepUpstreamIndex", False)),
            platform_exemptions=tuple(
                PlatformExemption(platform(e["platform"], ["images", n, "platformExemptions", k, "platform"]),
                                  str(e["reason"]))
                for k, e in enumerate(i.get("platformExemptions") or ())
            ),
            archives=tuple(rel(str(a)) for a in i.get("archives") or ()),
            docker_daemon=bool(i.get("dockerDaemon", False)),
        )
        for n, i in enumerate(d.get("images") or ())
    )
    for n, e in enumerate(d.get("extraImages") or ()):
        ref(str(e["ref"]), ["extraImages", n, "ref"])
    registries = tuple(
        RegistryConfig(
            host=str(r["host"]),
            mirrors=tuple(str(m) for m in r.get("mirrors") or ()),
            skip_upstream=bool(r.get("skipUpstream", False)),
            insecure=bool(r.get("insecure", False)),
            ca_file=rel(r["caFile"]) if r.get("caFile") else None,
            docker_config=bool((r.get("credentials") or {}).get("dockerConfig", True)),
            username_env=(r.get("credentials") or {}).get("usernameEnv"),
            password_env=(r.get("credentials") or {}).get("passwordEnv"),
            keep_alive=bool(r.get("keepAlive", True)),
            mirror=_mirror(r["mirror"], rel) if r.get("mirror") else None,
        )
        for r in d.get("registries") or ()
    )
    xp = d.get("crossplane") or {}
    crossplane = CrossplaneConfig(
        target=str(xp["target"]) if xp.get("target") is not None else None,
        packages=tuple(CrossplanePackageSource(str(p["ref"]), rel(p["path"]) if p.get("path") else None)
                       for p in xp.get("packages") or ()),
        waivers=tuple(
            CrossplaneWaiver(
                composition=str(w["composition"]),
                produces=tuple((str(p["apiVersion"]), str(p["kind"])) for p in w["produces"]),
                reason=str(w["reason"]),
                step=w.get("step"),
            )
            for w in xp.get("waivers") or ()
        ),
    )
    authorities = tuple(Authority(str(a["name"]), bool(a.get("required", False)) or a["name"] == "vendor")
                        for a in (d.get("signing") or {}).get("authorities") or ())
    rules = tuple(
        catalogue.entry(rule, file=str(path), line=_line(d, ["discovery", "rules", n]),
                        line_of=lambda where, n=n: _line(d, ["discovery", "rules", n, *where]))
        for n, rule in enumerate((d.get("discovery") or {}).get("rules") or ())
    )
    if not any(a.name == "vendor" for a in authorities):
        authorities = (Authority("vendor", True), *authorities)
    return Spec(
        path=path.resolve(),
        digest="sha256:" + hashlib.sha256(raw).hexdigest(),
        document=plain,
        name=str(meta["name"]),
        version=str(meta["version"]),
        source_date_epoch=meta.get("sourceDateEpoch"),
        local_registry=str(local["host"]),
        template=str(local.get("template") or DEFAULT_TEMPLATE),
        platforms=tuple(platform(p, ["platforms", n]) for n, p in enumerate(d.get("platforms") or ()))
        or DEFAULT_PLATFORMS,
        charts=charts,
        kustomize=tuple(rel(k["path"]) for k in sources.get("kustomize") or ()),
        manifests=tuple(str(rel(m["path"])) for m in sources.get("manifests") or ()),
        extra_images=tuple(ExtraImage(str(e["ref"]), str(e["reason"]), _line(d, ["extraImages", n]))
                           for n, e in enumerate(d.get("extraImages") or ())),
        images=images,
        registries=registries,
        crossplane=crossplane,
        authorities=authorities,
        discovery_rules=rules,
        chart_repositories=tuple((str(r["name"]), str(r["url"]).rstrip("/"))
                                 for r in sources.get("chartRepositories") or ()),
    )


def sources_of(d: Mapping[str, Any]) -> Mapping[str, Any]:
    return d.get("sources") or {}


def _check_chart_form(entry: Mapping[str, Any], where: str) -> None:
    """Exactly one of: `path`; `repo` + `name` + `version`; `chart` (oci://) + `version`."""
    forms = [k for k in ("path", "repo", "chart") if k in entry]
    hint = "give path:, or repo: + name: + version:, or chart: oci://... + version:"
    if not forms:
        raise SpecError(f"{where}: 'path' is a required property (or repo:, or chart:)", hint=hint)
    if len(forms) > 1:
        raise SpecError(f"{where}: {' and '.join(forms)} exclude each other", hint=hint)
    needed = {"path": (), "repo": ("name", "version"), "chart": ("version",)}[forms[0]]
    missing = [k for k in needed if k not in entry]
    extra = [k for k in ("name", "version", "provenance") if k in entry and forms[0] == "path"]
    extra += ["name"] if forms[0] == "chart" and "name" in entry else []
    if missing:
        raise SpecError(f"{where}: {forms[0]}: needs {' and '.join(missing)}", hint=hint)
    if extra:
        raise SpecError(f"{where}: {', '.join(extra)} only go with a chart by reference (repo: or chart:)", hint=hint)


def _remote_chart(entry: Mapping[str, Any], rel: Any, line: int) -> RemoteChart | None:
    """`repo` + `name` + `version`, or `chart: oci://host/path/name` + `version`; None for a `path` entry."""
    if "path" in entry:
        return None
    prov = entry.get("provenance")
    policy = ProvenancePolicy(rel(prov["keyring"]), bool(prov.get("required", True))) if prov else None
    if "chart" in entry:
        repo, _, name = str(entry["chart"]).rstrip("/").rpartition("/")
    else:
        repo, name = str(entry["repo"]).rstrip("/"), str(entry["name"])
    return RemoteChart(repo, name, str(entry["version"]), policy, line)
