"""Charts by reference: Helm repositories and OCI registries -> verified chart archives with their dependencies.

Input: the spec's charts (`spec.ChartSource`; a remote one carries `spec.RemoteChart`), the allowed
registries (`spec.RegistryConfig`), a cache layout, and the helm binary. Output: `localize` -> a
`Localized` per chart: the chart source with a local path that `render` can use, the `FetchedChart` it
came from (remote charts), and the dependencies fetched for it. `FetchedChart` is what the BOM, the
provenance and bundle.lock record.

Fail closed: every host (repository, download URL, registry) must be under the spec's `registries:`
(registry.plan_routes; the same endpoints, mirrors, credentials and CA as images); the hosts of the
spec's charts are checked before the first request, and one log line lists the endpoints. With
`offline=True` the same versions are resolved from the cache alone.

One module per job, in the order they build on each other:
- `model`: the typed values (`FetchedChart`, `ChartPin`, `Localized`); pure;
- `versions`: a version constraint against the versions offered, as helm picks; pure;
- `files`: a chart's files on disk (YAML, an archive's Chart.yaml, `charts/`, safe unpacking);
- `declared`: what a chart declares and locks (Chart.yaml / requirements.yaml, Chart.lock /
  requirements.lock), and which dependencies must be fetched;
- `lockdigest`: helm's lock digest (and Helm 2's); pure;
- `helm`: the helm binary, and `helm dependency list` read back;
- `fetch`: one archive from a Helm repository or an OCI registry, through the cache, verified by digest;
- `provenance`: `helm verify` against the spec's keyring;
- `dependencies`: `helm dependency build` into a chart's `charts/`;
- this module: `localize`, the stage: every spec chart made local.

Not here: rendering (render), what a chart's images are (sweep), packaging into the bundle (pipeline).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from ..layout import Layout
from ..registry import RegistryClient, plan_routes
from ..render import Tools
from ..spec import ChartSource, ProvenancePolicy, RegistryConfig
from . import dependencies, provenance
from .declared import Declared, declared_dependencies, plan
from .fetch import HELM_CHART, HELM_CONFIG, HELM_PROV, Fetcher
from .files import unpack
from .lockdigest import helm2_lock_digest, lock_digest
from .model import ChartPin, FetchedChart, Localized, source_of
from .versions import helm_constraint, pick_version

__all__ = ["HELM_CHART", "HELM_CONFIG", "HELM_PROV", "ChartPin", "Declared", "FetchedChart", "Localized",
           "chart_hosts", "declared_dependencies", "helm2_lock_digest", "helm_constraint", "localize",
           "lock_digest", "pick_version", "source_of"]

log = logging.getLogger(__name__)


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
    localizer = _Localizer(Fetcher(client, cache, dict(pins or {})), cache, workdir, dict(repositories), tools)
    return [localizer.localize(chart, n) for n, chart in enumerate(charts)]


def _missing_deps(chart: ChartSource) -> bool:
    """A local chart directory that does not vendor a dependency it declares (at a fitting version)."""
    if chart.remote is not None or not chart.path.is_dir() or not (chart.path / "Chart.yaml").is_file():
        return False
    return bool(plan(chart.path, str(chart.path))[1])


class _Localizer:
    def __init__(self, fetcher: Fetcher, cache: Layout, workdir: Path, repositories: dict[str, str],
                 tools: Tools) -> None:
        self.fetcher, self.cache, self.workdir, self.tools = fetcher, cache, workdir, tools
        self.repositories = {k: v.rstrip("/") for k, v in repositories.items()}

    def localize(self, chart: ChartSource, n: int) -> Localized:
        policy = chart.remote.provenance if chart.remote else None
        where = self.workdir / f"chart-{n}"
        fetched: FetchedChart | None = None
        if chart.remote is not None:
            fetched = self.fetch(chart.remote.repo, chart.remote.name, chart.remote.version, policy,
                                 where / "archive", label=str(chart.remote))
            root = unpack(fetched.path, where / "tree")
        elif chart.path.is_dir() and _missing_deps(chart):
            root = where / "tree" / chart.path.name
            shutil.copytree(chart.path, root, symlinks=False)
        else:
            return Localized(chart, None, ())

        def fetch_dependency(repo: str, name: str, version: str, dest: Path, *, label: str) -> FetchedChart:
            return self.fetch(repo, name, version, policy, dest, label=label)

        deps = dependencies.build(root, chart.path if chart.remote is None else None, fetch=fetch_dependency,
                                  repositories=self.repositories, tools=self.tools,
                                  label=str(chart.remote or chart.path))
        if fetched is not None:
            fetched = dataclasses.replace(fetched, dependencies=deps)
        # Nothing fetched into charts/: render (and ship) the archive as published.
        path = root if deps or fetched is None else fetched.path
        return Localized(dataclasses.replace(chart, path=path), fetched, deps)

    def fetch(self, repo: str, name: str, constraint: str, policy: ProvenancePolicy | None, dest: Path, *,
              label: str) -> FetchedChart:
        """One archive into `dest`, verified by digest and, when the spec names a keyring, by provenance."""
        chart, prov = self.fetcher.fetch(repo, name, constraint, dest, want_prov=policy is not None, label=label)
        if policy is not None:
            chart = dataclasses.replace(chart, provenance=provenance.verify(chart, prov, policy, cache=self.cache,
                                                                             tools=self.tools, label=label))
        return chart
