"""Charts by reference: Helm repositories and OCI registries -> verified chart archives with their dependencies.

Input: the spec's remote chart entries (`spec.RemoteChart`). Output: one `FetchedChart` per entry:
where it came from, the version resolved, the sha256 of the archive bytes, the local file, and the
dependencies fetched for it (recursively, the same type).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FetchedChart:
    """One chart archive fetched and verified by digest (what bundle.lock records, and the BOM).

    `source` is the repository URL (`https://charts.example.com/stable`) or the OCI repository
    (`oci://registry.example.com/charts/app`, chart name included); `digest` is the sha256 of the
    `.tgz` bytes (the index.yaml `digest` of a repository, the chart layer of an OCI artifact);
    `manifest_digest` is the OCI manifest's digest (OCI charts only); `url` is where the archive was
    downloaded from (a repository's absolute chart URL; for OCI the reference with its manifest digest).
    """

    source: str
    name: str
    version: str
    digest: str
    path: Path
    constraint: str = ""          # the version as written (`^1.2`), resolved to `version`
    url: str = ""
    manifest_digest: str | None = None
    provenance: str | None = None  # "verified: <signer>", or None when nothing was verified
    dependencies: tuple[FetchedChart, ...] = ()

    @property
    def is_oci(self) -> bool:
        return self.source.startswith("oci://")

    @property
    def reference(self) -> str:
        """How the chart is named in the BOM and provenance: `oci://host/path/app:1.2.3` or `REPO/NAME-VERSION.tgz`-like."""
        if self.is_oci:
            return f"{self.source}:{self.version}"
        return f"{self.source.rstrip('/')}/{self.name}:{self.version}"
