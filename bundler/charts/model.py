"""The chart stage's values: what a fetch produced, what a lock pins, what a spec chart became.

Input: nothing (frozen dataclasses and one naming function). Output: `FetchedChart` (one archive fetched
and verified by digest: what bundle.lock, the BOM and the provenance record), `ChartPin` (a version and
digest a lock fixes), `Localized` (a spec chart made local, for render), and `source_of`, the key a
fetched chart and its pin share. Pure code: no I/O, no network, no helm.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..spec import ChartSource


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
