"""One chart archive from a Helm repository or an OCI registry, through the cache, verified by digest.

Input: a `RegistryClient` (None when offline), the cache `Layout`, the lock's pins, and per call a
repository (`https://...` or `oci://...`), a chart name, a version or constraint and a folder.
Output: `Fetcher.fetch` -> the `FetchedChart` copied into the folder, and the cache digest of its
provenance file when one was asked for and published.

How a chart is found, as helm does it:
- Helm repository (`repo: https://...`, `name`, `version`): `index.yaml`, the chart's entries sorted by
  semver, newest first; an exact version string wins, else the first that satisfies the constraint
  (helm `repo.IndexFile.Get`). The archive is the entry's first URL (relative URLs against the
  repository) and must hash to the entry's `digest`.
- OCI (`chart: oci://host/path/name` or `repo: oci://host/path` + `name`): an exact version is the tag
  (`+` written `_`, as `helm push` does); a constraint takes the highest matching tag. The manifest's
  chart layer (`application/vnd.cncf.helm.chart.content.v1.tar+gzip`) is fetched by its digest.
- A pinned chart (bundle.lock) is fetched at the pinned version, and its archive must hash to the
  pinned digest (else `LockedDigestGoneError`, naming the lock entry).

Everything fetched is stored in the cache layout by digest (`names.json` names index.yaml, tag lists and
OCI manifests), so an offline fetcher resolves the same versions from the cache alone.

Specs: https://helm.sh/docs/topics/chart_repository/ (index.yaml), https://helm.sh/docs/topics/registries/
(OCI media types). Not here: which hosts are allowed (the caller's `registry.plan_routes`), provenance
(provenance), dependencies (dependencies).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import re
import urllib.parse
from pathlib import Path
from typing import Any

import yaml

from ..errors import (
    DigestMismatchError,
    LockedDigestGoneError,
    NotFoundError,
    OfflineMissError,
    RegistryError,
)
from ..layout import Layout
from ..oci import sha256_digest
from ..reference import ImageRef
from ..registry import RegistryClient
from .model import ChartPin, FetchedChart, source_of
from .versions import is_exact, pick_version

HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
HELM_CHART = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
HELM_PROV = "application/vnd.cncf.helm.chart.provenance.v1.prov"
MAX_INDEX_BYTES = 256 << 20   # a large public index.yaml is ~30 MiB
MAX_CHART_BYTES = 64 << 20
MAX_PROV_BYTES = 1 << 20
_LOCK_HINT = ("the publisher removed or re-published that version; re-resolve on purpose with "
              "`airgap-bundle lock SPEC --update` and review the change")


class Fetcher:
    def __init__(self, client: RegistryClient | None, cache: Layout, pins: dict[tuple[str, str], ChartPin]) -> None:
        self.client, self.cache, self.pins = client, cache, pins

    # --- fetching one archive -----------------------------------------------------------------------
    def fetch(self, repo: str, name: str, constraint: str, dest: Path, *, want_prov: bool,
              label: str) -> tuple[FetchedChart, str | None]:
        """The chart at its pinned version, or the one the constraint picks, copied into `dest`; with
        `want_prov`, the cache digest of its provenance file (None when none is published)."""
        pin = self.pins.get((source_of(repo, name), name))
        chart, prov = self._fetch_pinned(repo, name, constraint, pin, label, want_prov=want_prov)
        dest.mkdir(parents=True, exist_ok=True)
        path = dest / f"{chart.name}-{chart.version}.tgz"
        with path.open("wb") as f:
            for block in self.cache.open_blob(chart.digest):
                f.write(block)
        return dataclasses.replace(chart, path=path), prov

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
        if not is_exact(constraint):
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
