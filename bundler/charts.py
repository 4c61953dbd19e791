"""Charts by reference: Helm repositories and OCI registries -> verified chart archives with their dependencies.

Input: the spec's charts (`spec.ChartSource`; a remote one carries `spec.RemoteChart`), the allowed
registries (`pull.Sources`), a cache layout, and the helm binary. Output: `Localized` per chart: the
chart source with a local path that `render` can use, the `FetchedChart` it came from (remote charts),
and the dependencies fetched for it. `FetchedChart` is what the BOM, the provenance and bundle.lock record.

How a chart is found, as helm does it:
- Helm repository (`repo: https://...`, `name`, `version`): `index.yaml`, the chart's entries sorted by
  semver, newest first; an exact version string wins, else the first that satisfies the constraint
  (helm `repo.IndexFile.Get`). The archive is the entry's first URL (relative URLs against the
  repository) and must hash to the entry's `digest`.
- OCI (`chart: oci://host/path/name` or `repo: oci://host/path` + `name`): an exact version is the tag
  (`+` written `_`, as `helm push` does); a constraint takes the highest matching tag. The manifest's
  chart layer (`application/vnd.cncf.helm.chart.content.v1.tar+gzip`) is fetched by its digest.
- Dependencies (`helm dependency build`): the lock's versions when present, else the declared
  constraints. Declared in Chart.yaml and locked in Chart.lock, or for a Helm 2 chart (`apiVersion: v1`)
  in requirements.yaml and requirements.lock, read as helm's loader reads them (`declared_dependencies`);
  a stale lock is refused as helm refuses it. Repositories `https://`, `oci://`, `@name`/`alias:name`
  (the spec's `chartRepositories`), `file://` (a local chart directory, packed by `helm package`) or
  none (vendored in `charts/`). A dependency already in `charts/` at a fitting version is kept. Fetched
  archives go to `charts/`, and `helm dependency list` (offline) must then report every dependency `ok`.
  Helm does not recurse into a dependency's own dependencies; neither does this.
- Provenance (`helm verify`): with a keyring in the spec, the `.prov` published beside the archive (the
  provenance layer on OCI) is verified by `helm verify --keyring` on the fetched files; a bad one fails
  with exit 17, and so does a missing one when `required`.

Fail closed: every host (repository, download URL, registry) must be under the spec's `registries:`
(registry.plan_routes; the same endpoints, mirrors, credentials and CA as images); the hosts of the
spec's charts are checked before the first request, and one log line lists the endpoints. Everything
fetched is stored in the cache layout by digest (`names.json` names index.yaml, tag lists and OCI
manifests), so `offline=True` resolves the same versions from the cache alone.

Specs: https://helm.sh/docs/topics/chart_repository/ (index.yaml), https://helm.sh/docs/topics/registries/
(OCI media types), https://helm.sh/docs/topics/provenance/ , https://helm.sh/docs/helm/helm_dependency/ .
Not here: rendering (render), what a chart's images are (sweep), packaging into the bundle (pipeline).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import re
import shutil
import subprocess
import tarfile
import tempfile
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import (
    DigestMismatchError,
    InputError,
    LockedDigestGoneError,
    NotFoundError,
    OfflineMissError,
    ProvenanceError,
    RegistryError,
    RenderError,
    UsageError,
)
from .layout import Layout
from .oci import sha256_digest
from .reference import ImageRef
from .registry import RegistryClient, plan_routes
from .render import Tools, condense
from .semver import Constraint, SemverError, Version
from .spec import ChartSource, ProvenancePolicy, RegistryConfig

log = logging.getLogger(__name__)

HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
HELM_CHART = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
HELM_PROV = "application/vnd.cncf.helm.chart.provenance.v1.prov"
MAX_INDEX_BYTES = 256 << 20   # a large public index.yaml is ~30 MiB
MAX_CHART_BYTES = 64 << 20
MAX_PROV_BYTES = 1 << 20
_LOCK_HINT = ("the publisher removed or re-published that version; re-resolve on purpose with "
              "`airgap-bundle lock SPEC --update` and review the change")


@dataclass(frozen=True)
class FetchedChart:
    """One chart archive fetched and verified by digest (what bundle.lock records, and the BOM).

    `source` is the repository URL (`https://charts.example.com/stable`) or the OCI repository of the
    chart (`oci://registry.example.com/charts/app`, name included); `digest` is the sha256 of the `.tgz`
    bytes (the index.yaml `digest` of a repository, the chart layer of an OCI artifact);
    `manifest_digest` is the OCI manifest's digest (OCI charts only); `url` is where the archive was
    downloaded from (a repository's absolute chart URL; for OCI the reference with its manifest digest).
    """

    source: str
    name: str
    version: str
    digest: str
    path: Path
    constraint: str = ""           # the version as written (`^1.2`), resolved to `version`
    url: str = ""
    manifest_digest: str | None = None
    provenance: str | None = None  # "verified: <signer>", or None when nothing was verified
    dependencies: tuple[FetchedChart, ...] = ()

    @property
    def is_oci(self) -> bool:
        return self.source.startswith("oci://")

    @property
    def reference(self) -> str:
        """The chart as BOM and provenance name it: `oci://host/path/app:1.2.3` or `https://repo/app:1.2.3`."""
        if self.is_oci:
            return f"{self.source}:{self.version}"
        return f"{self.source.rstrip('/')}/{self.name}:{self.version}"


@dataclass(frozen=True)
class ChartPin:
    """A chart version a lock fixes, and the digest its archive must have. `entry` names the lock entry."""

    version: str
    digest: str
    entry: str


def source_of(repo: str, name: str) -> str:
    """`FetchedChart.source` of chart `name` in `repo`: the repository URL, or the OCI repository of the chart."""
    return f"{repo.rstrip('/')}/{name}" if repo.startswith("oci://") else repo.rstrip("/")


@dataclass(frozen=True)
class Localized:
    """A spec chart made local: `chart.path` is a directory or archive helm can render without a network."""

    chart: ChartSource
    fetched: FetchedChart | None            # the chart itself, when the spec named it by reference
    dependencies: tuple[FetchedChart, ...]  # fetched into its charts/ (also in `fetched.dependencies`)

    @property
    def all_fetched(self) -> tuple[FetchedChart, ...]:
        return ((self.fetched,) if self.fetched else ()) + self.dependencies


def chart_hosts(charts: Iterable[ChartSource]) -> list[str]:
    """The hosts the spec's remote charts live on (checked against `registries:` before any request)."""
    return sorted({_host(c.remote.repo) for c in charts if c.remote is not None})


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc


def localize(charts: Sequence[ChartSource], *, workdir: Path, cache: Layout, tools: Tools,
             registries: Sequence[RegistryConfig] = (), insecure_hosts: Sequence[str] = (),
             ca_file: Path | None = None, repositories: Sequence[tuple[str, str]] = (), offline: bool = False,
             environ: Mapping[str, str] | None = None,
             pins: Mapping[tuple[str, str], ChartPin] | None = None) -> list[Localized]:
    """Fetch every remote chart and every missing dependency; return the charts ready to render.

    `pins` (from bundle.lock), by `(source_of(repo, name), name)`: that chart or dependency is fetched
    at the pinned version, whatever the constraint would pick now, and its archive must hash to the
    pinned digest (else `LockedDigestGoneError`, naming the lock entry).

    Raises:
        UsageError: a chart or dependency host not under `registries:`, an unknown `@repository`.
        NotFoundError: no such chart, or no version satisfies the constraint.
        DigestMismatchError: an archive does not hash to its recorded digest.
        ProvenanceError: provenance required and missing, or bad (exit 17).
        OfflineMissError: offline, and the cache lacks something.
        AuthError, RegistryError, InputError, RenderError.
    """
    needs_network = any(c.remote is not None for c in charts) or any(_missing_deps(c) for c in charts)
    client: RegistryClient | None = None
    if needs_network and not offline:
        # Fail closed before the first request: the spec's chart hosts must be listed (plan_routes raises).
        hosts = sorted(set(chart_hosts(charts)) | {r.host for r in registries})
        routes = plan_routes(hosts, registries, insecure_hosts=insecure_hosts, ca_file=ca_file, environ=environ)
        client = RegistryClient(routes)
        log.info("charts: endpoints: %s; cache: %s", "; ".join(client.describe()) or "none", cache.path)
    elif needs_network:
        log.info("charts: offline; reading only the cache %s", cache.path)
    fetcher = _Fetcher(client, cache, workdir, dict(repositories), tools, dict(pins or {}))
    return [fetcher.localize(chart, n) for n, chart in enumerate(charts)]


def _missing_deps(chart: ChartSource) -> bool:
    """A local chart directory that does not vendor a dependency it declares (at a fitting version)."""
    if chart.remote is not None or not chart.path.is_dir() or not (chart.path / "Chart.yaml").is_file():
        return False
    return bool(_plan(chart.path, str(chart.path))[1])


@dataclass(frozen=True)
class Declared:
    """A chart's dependencies and lock as helm 3 and 4 load them (pkg/chart/loader/load.go).

    `dependencies` are Chart.yaml's, or requirements.yaml's when it has a `dependencies:` key; `file` and
    `lock_file` name the files they came from (what a message tells the user to edit). `helm2`: the chart
    says `apiVersion: v1` (or nothing, which helm reads as v1), so a lock digest written by Helm 2 counts.
    """

    dependencies: tuple[Mapping[str, Any], ...]
    file: str
    lock: Mapping[str, Any] | None
    lock_file: str
    helm2: bool

    @property
    def stray(self) -> str | None:
        """The Helm 2 files an `apiVersion: v2` chart carries and helm still reads (with a warning)."""
        files = [f for f in (self.file, self.lock_file) if f.startswith("requirements.")]
        return " and ".join(files) if files and not self.helm2 else None


def declared_dependencies(root: Path, label: str) -> Declared:
    """The dependencies of the chart directory `root`, read as helm's loader reads them.

    Helm 2 charts (`apiVersion: v1`) declare them in requirements.yaml and lock them in requirements.lock.
    Helm 3 and 4 read both files for every apiVersion (a v2 chart gets only a warning): requirements.yaml
    into the same metadata as Chart.yaml, after it, and requirements.lock after Chart.lock. So
    requirements.yaml's `dependencies:` replaces Chart.yaml's; Go's encoding/json decodes each entry into
    the one already at that position, so a key Chart.yaml's entry sets and requirements.yaml's does not
    (an `alias:`) stays. requirements.lock, when present, is the lock.

    Raises:
        InputError: Chart.yaml, requirements.yaml or the lock is not a YAML mapping.
    """
    meta = _load_yaml((root / "Chart.yaml").read_bytes(), f"{label}: Chart.yaml")
    declared = _entries(meta.get("dependencies"))
    file = "Chart.yaml"
    requirements = root / "requirements.yaml"
    if requirements.is_file():
        stated = _load_yaml(requirements.read_bytes(), f"{label}: requirements.yaml", empty_ok=True)
        if "dependencies" in stated:
            declared = [{**(declared[n] if n < len(declared) else {}),
                         **{k: v for k, v in entry.items() if v is not None}}
                        for n, entry in enumerate(_entries(stated["dependencies"]))]
            file = "requirements.yaml"
    lock_file = "requirements.lock" if (root / "requirements.lock").is_file() else "Chart.lock"
    lock = (_load_yaml((root / lock_file).read_bytes(), f"{label}: {lock_file}")
            if (root / lock_file).is_file() else None)
    return Declared(tuple(declared), file, lock, lock_file, str(meta.get("apiVersion") or "v1") == "v1")


def _entries(value: Any) -> list[dict[str, Any]]:
    return [dict(d) for d in value or [] if isinstance(d, dict)] if isinstance(value, list) else []


def _plan(root: Path, label: str) -> tuple[Declared, list[_Want]]:
    """The chart's dependencies and lock, and the dependencies to fetch: those with a repository and no
    fitting chart in charts/ (helm assumes one without a repository "exists in the charts directory")."""
    declared = declared_dependencies(root, label)
    if not declared.dependencies:
        return declared, []
    vendored = _vendored(root / "charts")
    todo = [w for w in _wants(declared)
            if w.repository and not any(_fits(v.version, w) for v in vendored if v.name == w.name)]
    return declared, todo


@dataclass(frozen=True)
class _Vendored:
    name: str
    version: str
    path: Path


@dataclass(frozen=True)
class _Want:
    """One dependency to satisfy: the lock's exact version, or the declared constraint."""

    name: str
    version: str
    repository: str
    exact: bool


class _Fetcher:
    def __init__(self, client: RegistryClient | None, cache: Layout, workdir: Path, repositories: dict[str, str],
                 tools: Tools, pins: dict[tuple[str, str], ChartPin]) -> None:
        self.client, self.cache, self.workdir, self.tools, self.pins = client, cache, workdir, tools, pins
        self.repositories = {k: v.rstrip("/") for k, v in repositories.items()}

    # --- one spec chart ---------------------------------------------------------------------------
    def localize(self, chart: ChartSource, n: int) -> Localized:
        policy = chart.remote.provenance if chart.remote else None
        where = self.workdir / f"chart-{n}"
        fetched: FetchedChart | None = None
        if chart.remote is not None:
            fetched = self.fetch(chart.remote.repo, chart.remote.name, chart.remote.version, policy,
                                 where / "archive", label=str(chart.remote))
            root = _unpack(fetched.path, where / "tree")
        elif chart.path.is_dir() and _missing_deps(chart):
            root = where / "tree" / chart.path.name
            shutil.copytree(chart.path, root, symlinks=False)
        else:
            return Localized(chart, None, ())
        deps = self.dependencies(root, chart.path if chart.remote is None else None, policy,
                                 label=str(chart.remote or chart.path))
        if fetched is not None:
            fetched = dataclasses.replace(fetched, dependencies=deps)
        # Nothing fetched into charts/: render (and ship) the archive as published.
        path = root if deps or fetched is None else fetched.path
        return Localized(dataclasses.replace(chart, path=path), fetched, deps)

    # --- fetching one archive -----------------------------------------------------------------------
    def fetch(self, repo: str, name: str, constraint: str, policy: ProvenancePolicy | None, dest: Path, *,
              label: str) -> FetchedChart:
        pin = self.pins.get((source_of(repo, name), name))
        chart, prov = self._fetch_pinned(repo, name, constraint, pin, label, want_prov=policy is not None)
        dest.mkdir(parents=True, exist_ok=True)
        path = dest / f"{chart.name}-{chart.version}.tgz"
        with path.open("wb") as f:
            for block in self.cache.open_blob(chart.digest):
                f.write(block)
        chart = dataclasses.replace(chart, path=path)
        if policy is not None:
            chart = dataclasses.replace(chart, provenance=self._verify(chart, prov, policy, label))
        return chart

    def _fetch_pinned(self, repo: str, name: str, constraint: str, pin: ChartPin | None, label: str, *,
                      want_prov: bool) -> tuple[FetchedChart, str | None]:
        """At the pinned version when the lock has one (the constraint is not resolved again); its
        archive must be the locked one."""
        version = pin.version if pin else constraint
        try:
            if repo.startswith("oci://"):
                chart, prov = self._fetch_oci(repo, name, version, label)
            else:
                chart, prov = self._fetch_repo(repo, name, version, label, want_prov=want_prov)
        except NotFoundError as exc:
            if pin is None:
                raise
            raise LockedDigestGoneError(f"{label}: {pin.entry} pins {name} {pin.version}, which "
                                        f"{source_of(repo, name)} no longer serves ({exc.message})",
                                        hint=_LOCK_HINT) from None
        if pin is not None and chart.digest != pin.digest:
            raise LockedDigestGoneError(f"{label}: {pin.entry} pins {name} {pin.version} as {pin.digest}, but "
                                        f"{source_of(repo, name)} now serves {chart.digest} for that version",
                                        hint=_LOCK_HINT)
        return dataclasses.replace(chart, constraint=constraint), prov

    def _fetch_repo(self, repo: str, name: str, constraint: str, label: str, *,
                    want_prov: bool) -> tuple[FetchedChart, str | None]:
        index_url = f"{repo}/index.yaml"
        index_digest = self._named(f"chart-index {repo}", lambda: self._get(index_url, MAX_INDEX_BYTES), label)
        version, entry = pick_version(_index_entries(self.cache.read_blob(index_digest, MAX_INDEX_BYTES),
                                                     index_url, name), constraint, f"{label} (in {index_url})")
        digest = str(entry.get("digest") or "")
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise RegistryError(f"{label}: {index_url} gives version {version} no sha256 digest",
                                hint="the archive cannot be verified; regenerate the index with helm repo index")
        digest = f"sha256:{digest}"
        urls = entry.get("urls") or []
        if not urls:
            raise RegistryError(f"{label}: {index_url} lists no download URL for version {version}")
        url = urllib.parse.urljoin(repo + "/", str(urls[0]))
        if not self.cache.has_blob(digest):
            data = self._get(url, MAX_CHART_BYTES, label=label)
            if sha256_digest(data) != digest:
                raise DigestMismatchError(f"{label}: {url} hashes to {sha256_digest(data)}, but {index_url} "
                                          f"says {digest}", hint="the repository or a proxy served other bytes; "
                                                                 "nothing was kept")
            self.cache.put_bytes(data, digest)
        prov: str | None = None
        if want_prov:
            prov = self._optional_named(f"chart-prov {digest}", url + ".prov", label)
        return FetchedChart(repo, name, version, digest, Path(), constraint, url), prov

    def _fetch_oci(self, repo: str, name: str, constraint: str, label: str) -> tuple[FetchedChart, str | None]:
        base = f"{repo.removeprefix('oci://').rstrip('/')}/{name}"
        version = constraint
        if not _is_exact(constraint):
            tags_digest = self._named(f"chart-tags oci://{base}", lambda: self._tags(base), label)
            tags = json.loads(self.cache.read_blob(tags_digest))
            version, _ = pick_version({t.replace("_", "+"): {} for t in tags}, constraint,
                                      f"{label} (tags of oci://{base})")
        ref = ImageRef.parse(f"{base}:{version.replace('+', '_')}")
        manifest_digest = self._named(f"chart-oci {ref}", lambda: self._oci_manifest(ref), label)
        manifest = json.loads(self.cache.read_blob(manifest_digest))
        if (manifest.get("config") or {}).get("mediaType") != HELM_CONFIG:
            raise RegistryError(f"{label}: oci://{ref} is not a Helm chart (config media type "
                                f"{(manifest.get('config') or {}).get('mediaType')!r})")
        layers = {str(layer.get("mediaType")): layer for layer in manifest.get("layers") or []}
        if HELM_CHART not in layers:
            raise RegistryError(f"{label}: oci://{ref} has no {HELM_CHART} layer")
        digest = str(layers[HELM_CHART]["digest"])
        self._blob(ref, digest, int(layers[HELM_CHART]["size"]), label)
        prov = None
        if HELM_PROV in layers:
            prov = str(layers[HELM_PROV]["digest"])
            self._blob(ref, prov, int(layers[HELM_PROV]["size"]), label)
        return FetchedChart(f"oci://{base}", name, version, digest, Path(), constraint,
                            f"oci://{ref.name}@{manifest_digest}", manifest_digest), prov

    # --- network and cache ----------------------------------------------------------------------------
    def _named(self, name: str, fetch: Any, label: str) -> str:
        """The digest the cache records under `name`; online, fetched again (tags and indexes move)."""
        if self.client is None:
            digest = self.cache.names().get(name)
            if digest is None or not self.cache.has_blob(digest):
                raise OfflineMissError(f"{label}: {name.split(' ', 1)[1]} is not in the cache {self.cache.path}",
                                       hint="run once online to fill the cache, or drop --offline")
            return digest
        data: bytes = fetch()
        digest = self.cache.put_bytes(data)
        self.cache.set_names({name: digest})
        return digest

    def _optional_named(self, name: str, url: str, label: str) -> str | None:
        """Like `_named` for a file that may not exist (a `.prov`): None when absent."""
        if self.client is None:
            digest = self.cache.names().get(name)
            return digest if digest and self.cache.has_blob(digest) else None
        try:
            data = self._get(url, MAX_PROV_BYTES, label=label)
        except NotFoundError:
            return None
        digest = self.cache.put_bytes(data)
        self.cache.set_names({name: digest})
        return digest

    def _get(self, url: str, cap: int, *, label: str = "") -> bytes:
        assert self.client is not None
        return b"".join(self.client.url_chunks(url, cap=cap))

    def _tags(self, base: str) -> bytes:
        assert self.client is not None
        return json.dumps(sorted(self.client.list_tags(ImageRef.parse(base)))).encode()

    def _oci_manifest(self, ref: ImageRef) -> bytes:
        assert self.client is not None
        return self.client.get_manifest(ref).data

    def _blob(self, ref: ImageRef, digest: str, size: int, label: str) -> None:
        if self.cache.has_blob(digest):
            return
        client = self.client
        if client is None:
            raise OfflineMissError(f"{label}: blob {digest} is not in the cache {self.cache.path}",
                                   hint="run once online to fill the cache, or drop --offline")
        try:
            self.cache.write_blob(digest, size, lambda offset: client.blob_chunks(ref, digest, offset))
        except DigestMismatchError as exc:
            raise DigestMismatchError(f"{label}: {exc.message}", hint="nothing was kept") from None

    # --- provenance -------------------------------------------------------------------------------------
    def _verify(self, chart: FetchedChart, prov: str | None, policy: ProvenancePolicy, label: str) -> str | None:
        if prov is None:
            if policy.required:
                raise ProvenanceError(f"{label}: {chart.name} {chart.version} has no provenance file (.prov), and "
                                      "the spec requires one", hint="ask the publisher to sign the chart (helm "
                                      "package --sign), or set provenance.required: false")
            return None
        if not policy.keyring.is_file():
            raise InputError(f"{policy.keyring}: keyring not found (provenance of {label})",
                             hint="export the publisher's public key: gpg --export KEYID > keyring.gpg")
        with tempfile.TemporaryDirectory(prefix="airgap-prov-") as tmp:
            # helm verify checks the archive's base name against the one the .prov signs.
            archive = Path(tmp) / chart.path.name
            shutil.copyfile(chart.path, archive)
            Path(f"{archive}.prov").write_bytes(self.cache.read_blob(prov, MAX_PROV_BYTES))
            done = _helm(self.tools, ["verify", "--keyring", str(policy.keyring), str(archive)], "helm verify")
        if done.returncode != 0:
            raise ProvenanceError(f"{label}: the provenance of {chart.name} {chart.version} does not verify "
                                  f"against {policy.keyring}: {condense(done.stderr)}",
                                  hint="the chart or its .prov was changed, or another key signed it")
        signer = re.search(r"^Signed by: (.*)$", done.stdout, re.M)
        return f"verified: {signer.group(1).strip() if signer else 'a key in ' + str(policy.keyring)}"

    # --- dependencies (helm dependency build) ----------------------------------------------------------
    def dependencies(self, root: Path, local_dir: Path | None, policy: ProvenancePolicy | None, *,
                     label: str) -> tuple[FetchedChart, ...]:
        """Fill `root/charts/` as `helm dependency build` would; the archives fetched, in declared order."""
        declared, todo = _plan(root, label)
        if not declared.dependencies:
            return ()
        charts_dir = root / "charts"
        charts_dir.mkdir(exist_ok=True)
        if declared.stray:
            log.warning("%s: an apiVersion v2 chart with %s: helm reads its dependencies from there, as this "
                        "does (helm 3 and 4 warn; move them into Chart.yaml and Chart.lock)", label, declared.stray)
        if todo and declared.lock is not None:
            self._check_lock(declared, label, local=local_dir is not None)
        fetched: list[FetchedChart] = []
        for want in todo:
            have = [v for v in _vendored(charts_dir) if v.name == want.name]
            for old in have:  # helm removes outdated archives of a dependency it downloads again
                shutil.rmtree(old.path) if old.path.is_dir() else old.path.unlink()
            if want.repository.startswith("file://"):
                self._pack_local(want, local_dir, charts_dir, label)
                continue
            repo = self._repository(want.repository, want.name, label)
            dep = self.fetch(repo, want.name, want.version, policy, charts_dir,
                             label=f"{label}: dependency {want.name}")
            fetched.append(dep)
        _check_dependencies(root, self.tools, label)
        return tuple(fetched)

    def _check_lock(self, declared: Declared, label: str, *, local: bool) -> None:
        """helm dependency build: the lock's digest must be helm's hash of the declared and locked
        dependencies; for a Helm 2 chart, also the hash Helm 2 wrote (helm's fallback, helm/helm#7233)."""
        assert declared.lock is not None
        resolved = [{**d, "repository": self._repository(str(d.get("repository") or ""), str(d.get("name")), label)}
                    if str(d.get("repository") or "").startswith(("@", "alias:")) else d
                    for d in declared.dependencies]
        locked = _entries(declared.lock.get("dependencies"))
        digest = str(declared.lock.get("digest"))
        if lock_digest(resolved, locked) == digest:
            return
        if declared.helm2 and helm2_lock_digest(declared.dependencies) == digest:
            return
        update = f"helm dependency update, which rewrites {declared.lock_file}"
        raise InputError(f"{label}: the lock file ({declared.lock_file}) is out of sync with the dependencies "
                         f"file ({declared.file})", hint=f"run {update}" if local else
                         f"the chart was published so: its publisher must run {update}, and publish it again")

    def _repository(self, repository: str, name: str, label: str) -> str:
        if repository.startswith(("@", "alias:")):
            alias = repository.removeprefix("@").removeprefix("alias:")
            if alias not in self.repositories:
                raise UsageError(f"{label}: dependency {name} names repository {repository!r}, which the spec "
                                 "does not define", hint=f"add {{name: {alias}, url: ...}} under "
                                                         "sources.chartRepositories in the spec")
            return self.repositories[alias]
        return repository.rstrip("/")

    def _pack_local(self, want: _Want, local_dir: Path | None, charts_dir: Path, label: str) -> None:
        if local_dir is None:
            raise InputError(f"{label}: dependency {want.name} is {want.repository}, a path on the publisher's "
                             "machine, and the archive does not carry it in charts/",
                             hint="ask the publisher to package the chart after helm dependency update")
        source = (local_dir / want.repository.removeprefix("file://")).resolve()
        if not (source / "Chart.yaml").is_file():
            raise InputError(f"{label}: dependency {want.name}: {source} is not a chart directory ({want.repository})")
        done = _helm(self.tools, ["package", str(source), "--destination", str(charts_dir)], "helm package")
        if done.returncode != 0:
            raise RenderError(f"helm package {source} failed: {condense(done.stderr)}")


def pick_version(entries: Mapping[str, Any], constraint: str, what: str) -> tuple[str, Any]:
    """helm `IndexFile.Get`: an exact string match first, else the newest version satisfying the
    constraint (prereleases only when the constraint names one). `entries`: version -> entry.

    Raises:
        NotFoundError: nothing matches. UsageError: the constraint does not parse.
    """
    if constraint in entries:
        return constraint, entries[constraint]
    try:
        wanted = Constraint.parse(helm_constraint(constraint))
    except SemverError as exc:
        raise UsageError(f"{what}: version {constraint!r}: {exc.message}",
                         hint="write an exact version or a constraint such as ^1.2.0 or >=1.0 <2.0") from None
    versions = sorted(((v, k) for k in entries if (v := Version.try_parse(k)) is not None),
                      key=lambda pair: _SortKey(pair[0]), reverse=True)
    for version, key in versions:
        if wanted.check(version):
            return key, entries[key]
    offered = ", ".join(k for _, k in versions[:8]) or "none"
    raise NotFoundError(f"{what}: no version satisfies {constraint!r} (newest: {offered})",
                        hint="check the chart name and version in the spec")


class _SortKey:
    def __init__(self, version: Version) -> None:
        self.version = version

    def __lt__(self, other: _SortKey) -> bool:
        return self.version.compare(other.version) < 0


def helm_constraint(text: str) -> str:
    """A Masterminds/semver v3 (helm) constraint in the syntax semver.py (v1) reads: a space also means
    AND (`>=1.0 <2.0`), and a caret below 1.0 stays within the minor (`^0.2.3` is `>=0.2.3 <0.3.0`) or,
    below 0.1, the patch (`^0.0.3` is `>=0.0.3 <0.0.4`)."""
    def caret(m: re.Match[str]) -> str:
        minor, patch, rest = m.group(1), m.group(3), m.group(4) or ""
        low = f">=0.{minor}.{patch or 0}{rest}"
        if minor != "0":
            return f"{low}, <0.{int(minor) + 1}.0"
        return f"{low}, <0.0.{int(patch) + 1}" if patch is not None else f"{low}, <0.1.0"
    text = re.sub(r"\^\s*v?0\.(\d+)(\.(\d+))?(-[0-9A-Za-z.-]+)?(?![\d.])", caret, text.strip())
    return re.sub(r"(?<=[0-9A-Za-z*])\s+(?=[<>=!~^])", ", ", text)


def _is_exact(version: str) -> bool:
    return Version.try_parse(version) is not None and not version.strip().startswith(("v", "="))


def _fits(version: str, want: _Want) -> bool:
    if want.exact or not want.version:
        return not want.version or version == want.version
    try:
        parsed = Version.parse(version)
        return Constraint.parse(helm_constraint(want.version)).check(parsed)
    except SemverError:
        return False


def _wants(declared: Declared) -> list[_Want]:
    """The lock's entries when the chart has a lock, else the declared ones (helm dependency build/update)."""
    if declared.lock is None:
        return [_Want(str(d.get("name")), str(d.get("version") or ""), str(d.get("repository") or ""), False)
                for d in declared.dependencies]
    return [_Want(str(d.get("name")), str(d.get("version") or ""), str(d.get("repository") or ""), True)
            for d in _entries(declared.lock.get("dependencies"))]


def lock_digest(declared: Sequence[Mapping[str, Any]], locked: Sequence[Mapping[str, Any]]) -> str:
    """helm's `resolver.HashReq`: sha256 of Go's `json.Marshal([2][]*chart.Dependency{req, lock})`.

    Field order and `omitempty` follow helm's chart.Dependency (name, version, repository, condition,
    tags, enabled, import-values, alias); Go sorts map keys and escapes <, >, & in strings. `declared`
    must already have `@name` repositories replaced by their URLs (helm's resolveRepoNames).
    """
    return _go_digest([[_go_dependency(d) for d in declared], [_go_dependency(d) for d in locked]])


def helm2_lock_digest(declared: Sequence[Mapping[str, Any]]) -> str:
    """helm's `resolver.HashV2Req`, the digest Helm 2 wrote into requirements.lock: sha256 of Go's
    `json.Marshal(map[string][]*chart.Dependency{"dependencies": req})`, `req` as requirements.yaml
    writes it (`@name` repositories not replaced)."""
    return _go_digest({"dependencies": [_go_dependency(d) for d in declared] or None})


def _go_dependency(d: Mapping[str, Any]) -> dict[str, Any]:
    """One chart.Dependency as Go's encoding/json writes it: its fields in order, empty ones omitted."""
    def go(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(k): go(value[k]) for k in sorted(value, key=str)}
        if isinstance(value, list):
            return [go(v) for v in value]
        return value

    out: dict[str, Any] = {"name": str(d.get("name") or "")}
    if d.get("version"):
        out["version"] = str(d["version"])
    out["repository"] = str(d.get("repository") or "")
    for key in ("condition", "tags", "enabled", "import-values", "alias"):
        if d.get(key):
            out[key] = [str(t) for t in d[key]] if key == "tags" else go(d[key])
    return out


def _go_digest(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"), ("\u2028", "\\u2028"),
                          ("\u2029", "\\u2029")):
        text = text.replace(char, escaped)
    return sha256_digest(text.encode())


def _vendored(charts_dir: Path) -> list[_Vendored]:
    """The charts in `charts/`: archives and directories, by their Chart.yaml name and version."""
    out: list[_Vendored] = []
    if not charts_dir.is_dir():
        return out
    for entry in sorted(charts_dir.iterdir()):
        if entry.is_dir() and (entry / "Chart.yaml").is_file():
            meta = _load_yaml((entry / "Chart.yaml").read_bytes(), str(entry / "Chart.yaml"))
        elif entry.is_file() and entry.name.endswith(".tgz"):
            meta = _archive_meta(entry)
        else:
            continue
        out.append(_Vendored(str(meta.get("name")), str(meta.get("version")), entry))
    return out


def _archive_meta(path: Path) -> dict[str, Any]:
    try:
        with tarfile.open(path, "r:gz") as archive:
            member = next((m for m in archive.getmembers() if m.isfile() and m.name.count("/") == 1
                           and m.name.endswith("/Chart.yaml")), None)
            handle = archive.extractfile(member) if member else None
            if handle is None:
                raise InputError(f"{path}: a chart archive without <name>/Chart.yaml")
            return _load_yaml(handle.read(1 << 20), f"{path}: Chart.yaml")
    except (tarfile.TarError, OSError) as exc:
        raise InputError(f"{path}: not a readable chart archive: {exc}") from None


def _unpack(archive: Path, dest: Path) -> Path:
    """A fetched archive unpacked (tar `data` filter: no links out, no absolute paths); its chart directory."""
    try:
        with tarfile.open(archive, "r:gz") as tgz:
            tops = {name.split("/", 1)[0] for name in tgz.getnames()}
            if len(tops) != 1:
                raise InputError(f"{archive}: a chart archive holds one top directory, not {sorted(tops)}")
            tgz.extractall(dest, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise InputError(f"{archive}: not a readable chart archive: {exc}") from None
    root = dest / tops.pop()
    if not (root / "Chart.yaml").is_file():
        raise InputError(f"{archive}: no Chart.yaml in the archive")
    return root


def _index_entries(data: bytes, url: str, name: str) -> dict[str, Any]:
    """version -> entry for `name` in an index.yaml. Public indexes are tens of MiB: libyaml, with the
    cyclic GC paused while hundreds of thousands of objects are built (docs/charts.md "Performance")."""
    paused = gc.isenabled()
    gc.disable()
    try:
        index = yaml.load(data, Loader=yaml.CSafeLoader)
    except yaml.YAMLError as exc:
        raise RegistryError(f"{url}: not a Helm repository index ({type(exc).__name__})") from None
    finally:
        if paused:
            gc.enable()
    if not isinstance(index, dict) or not isinstance(index.get("entries"), dict):
        raise RegistryError(f"{url}: not a Helm repository index (no entries:)",
                            hint="a Helm repository serves index.yaml at its URL (helm repo index)")
    versions = index["entries"].get(name)
    if not versions:
        known = ", ".join(sorted(index["entries"])[:10]) or "none"
        raise NotFoundError(f"{url}: no chart named {name} (charts: {known})", hint="check the chart name")
    return {str(v.get("version")): v for v in versions if isinstance(v, dict)}


def _load_yaml(data: bytes, what: str, *, empty_ok: bool = False) -> dict[str, Any]:
    try:
        obj = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        raise InputError(f"{what}: malformed YAML ({type(exc).__name__})") from None
    if obj is None and empty_ok:
        return {}
    if not isinstance(obj, dict):
        raise InputError(f"{what}: not a YAML mapping")
    return obj


def _check_dependencies(root: Path, tools: Tools, label: str) -> None:
    """`helm dependency list` (offline) must call every dependency `ok` (or `unpacked`) now."""
    done = _helm(tools, ["dependency", "list", str(root)], "helm dependency list")
    if done.returncode != 0:  # pragma: no cover - helm loads what charts.py already read; kept for helm's own rules
        raise RenderError(f"{label}: helm dependency list failed: {condense(done.stderr)}")
    bad = []
    for row in done.stdout.splitlines()[1:]:
        cells = [c.strip() for c in row.split("\t")]
        if len(cells) >= 4 and cells[-1] not in ("ok", "unpacked"):
            bad.append(f"{cells[0]} {cells[1]} ({cells[-1]})")
    if bad:
        raise RenderError(f"{label}: dependencies not satisfied after fetching: {', '.join(bad)}",
                          hint="a dependency without a repository must be vendored in charts/")


def _helm(tools: Tools, args: list[str], what: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run([tools.get("helm"), *args], capture_output=True, text=True, timeout=tools.timeout,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RenderError(f"{what}: cannot run helm: {exc}", hint="run scripts/setup.sh") from None
