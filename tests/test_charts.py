"""Charts by reference (bundler/charts.py) against real servers on 127.0.0.1: a Helm chart repository
(`helm repo index` output) with basic auth and with TLS, charts pushed with `helm push` into the Debian
docker-registry, dependencies across the two kinds, `helm package --sign` provenance, fail-closed hosts,
digest mismatch, and offline from the cache."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bundler import charts
from bundler.errors import (
    BundlerError,
    DigestMismatchError,
    NotFoundError,
    OfflineMissError,
    ProvenanceError,
    RegistryError,
    UsageError,
)
from bundler.layout import Layout
from bundler.render import Tools
from bundler.spec import ChartSource, ProvenancePolicy, RegistryConfig, RemoteChart
from tests.support.charts import ChartRepo, Keyring, gpg_keyring, make_chart, package, push, serve_repo

ENV = {"REPO_USER": "charts", "REPO_PASS": "s3cret-repo", "HOME": "/nonexistent"}


@dataclass
class World:
    repo: ChartRepo          # basic auth, plain HTTP
    tls: ChartRepo           # TLS with a test CA, anonymous
    registry: object         # docker-registry fixture (charts/ namespace)
    signer: Keyring
    stranger: Keyring
    root: Path

    def registries(self, *, repo: bool = True, tls: bool = True, oci: bool = True) -> list[RegistryConfig]:
        out = []
        if repo:
            out.append(RegistryConfig(self.repo.host, insecure=True, docker_config=False,
                                      username_env="REPO_USER", password_env="REPO_PASS"))
        if tls:
            out.append(RegistryConfig(self.tls.host, ca_file=self.tls.ca_file, docker_config=False))
        if oci:
            out.append(RegistryConfig(self.registry.host, insecure=True, docker_config=False))  # type: ignore[attr-defined]
        return out

    @property
    def oci(self) -> str:
        return f"oci://{self.registry.host}/charts"  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, registry) -> Iterator[World]:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("charts")
    src, home = root / "src", root / "helm-home"
    signer, stranger = gpg_keyring(root / "signer"), gpg_keyring(root / "stranger", "Someone Else")
    repo = serve_repo(root / "repo", username=ENV["REPO_USER"], password=ENV["REPO_PASS"], path="stable")
    tls = serve_repo(root / "tls-repo", tls_dir=root / "tls")
    oci = f"oci://{registry.host}/charts"
    try:
        for version in ("1.0.0", "1.2.0", "1.3.0-rc.1", "2.0.0"):
            package(make_chart(src / version, "app", version), repo.root)
        package(make_chart(src / "signed", "signed", "1.0.0"), repo.root, sign_key=signer.name,
                secring=signer.secret)
        # A chart in the HTTP repository whose dependency lives in the OCI registry (no Chart.lock:
        # Chart.yaml's constraint is resolved), with an alias and a condition as real charts write them.
        package(make_chart(src / "webapp", "webapp", "0.5.0", dependencies=[
            {"name": "common", "version": "^1.0.0", "repository": oci, "alias": "shared",
             "condition": "shared.enabled"}]), repo.root, raw=True)
        repo.index()
        for version in ("1.0.0", "1.1.0"):
            push(package(make_chart(src / f"common{version}", "common", version, image="busybox:1.36"),
                         root / "oci-out"), registry, "charts", home)
        push(package(make_chart(src / "osigned", "osigned", "0.1.0"), root / "oci-signed", sign_key=signer.name,
                     secring=signer.secret), registry, "charts", home)
        # TLS repository: a library chart two versions deep.
        for version in ("1.0.0", "1.1.0"):
            package(make_chart(src / f"lib{version}", "lib", version, image="redis:7"), tls.root)
        tls.index()
        # An OCI chart whose Chart.lock pins the older lib from a repository named by alias (@tls).
        push(package(make_chart(src / "ociapp", "ociapp", "0.3.0",
                                dependencies=[{"name": "lib", "version": "~1.0", "repository": "@tls"}],
                                lock=[{"name": "lib", "version": "1.0.0", "repository": "@tls"}]),
                     root / "oci-out", raw=True), registry, "charts", home)
        yield World(repo, tls, registry, signer, stranger, root)
    finally:
        repo.stop()
        tls.stop()


def _localize(world: World, *entries: ChartSource | RemoteChart, cache: Path, offline: bool = False,
              registries: list[RegistryConfig] | None = None) -> list[charts.Localized]:
    sources = [e if isinstance(e, ChartSource) else ChartSource(Path(f"<{e}>"), e.name, remote=e) for e in entries]
    work = cache.parent / f"work-{len(list(cache.parent.glob('work-*')))}"
    return charts.localize(sources, workdir=work, cache=Layout(cache, remember_checks=True), tools=Tools(),
                           registries=world.registries() if registries is None else registries,
                           repositories=[("tls", world.tls.url)], offline=offline, environ=ENV)


def test_repository_constraint_takes_the_newest_match_verified_by_digest(world: World, tmp_path: Path) -> None:
    (got,) = _localize(world, RemoteChart(world.repo.url, "app", "^1.0"), cache=tmp_path / "cache")
    fetched = got.fetched
    assert fetched is not None
    # 1.3.0-rc.1 is newer but a prerelease; 2.0.0 is outside ^1.0
    assert (fetched.version, fetched.source, fetched.constraint) == ("1.2.0", world.repo.url, "^1.0")
    published = world.repo.root / "app-1.2.0.tgz"
    assert fetched.digest == "sha256:" + hashlib.sha256(published.read_bytes()).hexdigest()
    assert fetched.url == f"{world.repo.url}/app-1.2.0.tgz"
    assert got.chart.path.read_bytes() == published.read_bytes()  # no dependency: the archive as published
    assert fetched.reference == f"{world.repo.url}/app:1.2.0"
    (exact,) = _localize(world, RemoteChart(world.repo.url, "app", "1.3.0-rc.1"), cache=tmp_path / "cache")
    assert exact.fetched is not None and exact.fetched.version == "1.3.0-rc.1"
    (spaced,) = _localize(world, RemoteChart(world.repo.url, "app", ">=1.0.0 <1.2.0"), cache=tmp_path / "cache")
    assert spaced.fetched is not None and spaced.fetched.version == "1.0.0"
    with pytest.raises(NotFoundError, match=r"no version satisfies '\^3'"):
        _localize(world, RemoteChart(world.repo.url, "app", "^3"), cache=tmp_path / "cache")
    with pytest.raises(NotFoundError, match="no chart named nope"):
        _localize(world, RemoteChart(world.repo.url, "nope", "1.0.0"), cache=tmp_path / "cache")


def test_repository_needs_the_credentials_the_spec_names(world: World, tmp_path: Path) -> None:
    anonymous = [RegistryConfig(world.repo.host, insecure=True, docker_config=False)]
    with pytest.raises(BundlerError, match="refused access") as err:
        _localize(world, RemoteChart(world.repo.url, "app", "1.0.0"), cache=tmp_path / "c", registries=anonymous)
    assert err.value.exit_code == 5


def test_tls_repository_with_the_spec_ca(world: World, tmp_path: Path) -> None:
    (got,) = _localize(world, RemoteChart(world.tls.url, "lib", "*"), cache=tmp_path / "cache")
    assert got.fetched is not None and got.fetched.version == "1.1.0"
    no_ca = [RegistryConfig(world.tls.host, docker_config=False)]
    with pytest.raises(RegistryError, match="TLS verification failed"):
        _localize(world, RemoteChart(world.tls.url, "lib", "*"), cache=tmp_path / "c2", registries=no_ca)


def test_oci_chart_by_tag_and_by_constraint(world: World, tmp_path: Path) -> None:
    (exact,) = _localize(world, RemoteChart(world.oci, "common", "1.0.0"), cache=tmp_path / "cache")
    (newest,) = _localize(world, RemoteChart(world.oci, "common", "^1"), cache=tmp_path / "cache")
    assert exact.fetched is not None and newest.fetched is not None
    assert (exact.fetched.version, newest.fetched.version) == ("1.0.0", "1.1.0")
    assert newest.fetched.source == f"{world.oci}/common" and newest.fetched.is_oci
    assert newest.fetched.manifest_digest and newest.fetched.url.endswith(f"@{newest.fetched.manifest_digest}")
    assert newest.fetched.reference == f"{world.oci}/common:1.1.0"
    # the digest is the chart layer's: the bytes helm pushed
    pushed = world.root / "oci-out" / "common-1.1.0.tgz"
    assert newest.fetched.digest == "sha256:" + hashlib.sha256(pushed.read_bytes()).hexdigest()


def test_dependency_from_the_other_kind_of_repository(world: World, tmp_path: Path, helm: str) -> None:
    # HTTP repository chart -> OCI dependency (Chart.yaml constraint, alias and condition)
    (web,) = _localize(world, RemoteChart(world.repo.url, "webapp", "0.5.0"), cache=tmp_path / "cache")
    assert web.fetched is not None
    (dep,) = web.dependencies
    assert (dep.source, dep.name, dep.version) == (f"{world.oci}/common", "common", "1.1.0")
    assert web.fetched.dependencies == web.dependencies
    assert web.chart.path.is_dir() and (web.chart.path / "charts" / "common-1.1.0.tgz").is_file()
    out = subprocess.run([helm, "template", "r", str(web.chart.path), "--set", "shared.enabled=true"],
                         capture_output=True, text=True, check=True).stdout
    assert "busybox:1.36" in out and "nginx:1.27" in out
    # OCI chart -> HTTPS repository dependency named by alias (@tls); Chart.lock's 1.0.0 wins over ~1.0's 1.1.0
    (app,) = _localize(world, RemoteChart(world.oci, "ociapp", "0.3.0"), cache=tmp_path / "cache")
    (lib,) = app.dependencies
    assert (lib.source, lib.version) == (world.tls.url, "1.0.0")
    out = subprocess.run([helm, "template", "r", str(app.chart.path)], capture_output=True, text=True,
                         check=True).stdout
    assert "redis:7" in out


def test_local_chart_directory_gets_its_missing_dependencies(world: World, tmp_path: Path) -> None:
    local = make_chart(tmp_path / "src", "mine", "0.1.0", dependencies=[
        {"name": "lib", "version": "1.1.0", "repository": world.tls.url},
        {"name": "sibling", "version": "0.0.1", "repository": "file://../sibling"}])
    make_chart(tmp_path / "src", "sibling", "0.0.1")
    (got,) = _localize(world, ChartSource(local, "mine"), cache=tmp_path / "cache")
    assert got.fetched is None and [d.version for d in got.dependencies] == ["1.1.0"]
    assert {p.name for p in (got.chart.path / "charts").iterdir()} == {"lib-1.1.0.tgz", "sibling-0.0.1.tgz"}
    assert not (local / "charts").exists()  # the user's directory is never changed


def test_unknown_repository_alias_is_a_usage_error(world: World, tmp_path: Path) -> None:
    local = make_chart(tmp_path / "src", "mine", "0.1.0",
                       dependencies=[{"name": "common", "version": "1.0.0", "repository": "@bitnami"}])
    with pytest.raises(UsageError, match="@bitnami.*chartRepositories|chartRepositories"):
        _localize(world, ChartSource(local, "mine"), cache=tmp_path / "cache")


def test_provenance_verified_against_the_spec_keyring(world: World, tmp_path: Path) -> None:
    good = ProvenancePolicy(world.signer.public)
    (repo_chart,) = _localize(world, RemoteChart(world.repo.url, "signed", "1.0.0", good), cache=tmp_path / "c")
    assert repo_chart.fetched is not None
    assert repo_chart.fetched.provenance == "verified: Chart Signer <signer@example.test>"
    (oci_chart,) = _localize(world, RemoteChart(world.oci, "osigned", "0.1.0", good), cache=tmp_path / "c")
    assert oci_chart.fetched is not None and oci_chart.fetched.provenance.startswith("verified: Chart Signer")  # type: ignore[union-attr]


@pytest.mark.parametrize("chart, keyring, required, needle", [
    ("signed", "stranger", True, "does not verify"),     # signed, but by a key the spec does not trust
    ("app", "signer", True, "has no provenance file"),   # required, and the repository publishes none
])
def test_bad_or_missing_provenance_fails_with_17(world: World, tmp_path: Path, chart: str, keyring: str,
                                                 required: bool, needle: str) -> None:
    policy = ProvenancePolicy(getattr(world, keyring).public, required)
    with pytest.raises(ProvenanceError, match=needle) as err:
        _localize(world, RemoteChart(world.repo.url, chart, "1.0.0", policy), cache=tmp_path / "c")
    assert err.value.exit_code == 17


def test_provenance_not_required_lets_an_unsigned_chart_through(world: World, tmp_path: Path) -> None:
    policy = ProvenancePolicy(world.signer.public, required=False)
    (got,) = _localize(world, RemoteChart(world.repo.url, "app", "1.0.0", policy), cache=tmp_path / "c")
    assert got.fetched is not None and got.fetched.provenance is None


def test_unlisted_chart_host_is_refused_before_any_request(world: World, tmp_path: Path) -> None:
    before = len(world.repo.requests)
    with pytest.raises(UsageError, match=f"registry {world.repo.host} is not allowed"):
        _localize(world, RemoteChart(world.repo.url, "app", "1.0.0"), cache=tmp_path / "c",
                  registries=world.registries(repo=False))
    assert len(world.repo.requests) == before
    # a dependency's host is checked too, before its request (webapp's common lives in the registry)
    with pytest.raises(UsageError, match=f"registry {world.registry.host} is not allowed"):  # type: ignore[attr-defined]
        _localize(world, RemoteChart(world.repo.url, "webapp", "0.5.0"), cache=tmp_path / "c",
                  registries=world.registries(oci=False))


def test_digest_mismatch_is_refused_and_nothing_kept(world: World, tmp_path: Path) -> None:
    bad = serve_repo(tmp_path / "bad-repo")
    try:
        archive = package(make_chart(tmp_path / "src", "app", "1.0.0"), bad.root)
        bad.index()
        archive.write_bytes(archive.read_bytes() + b"tampered")  # served bytes no longer match index.yaml
        cache = tmp_path / "cache"
        with pytest.raises(DigestMismatchError, match="hashes to") as err:
            _localize(world, RemoteChart(bad.url, "app", "1.0.0"), cache=cache,
                      registries=[RegistryConfig(bad.host, insecure=True, docker_config=False)])
        assert err.value.exit_code == 7
        tampered = hashlib.sha256(archive.read_bytes()).hexdigest()
        assert not (cache / "blobs" / "sha256" / tampered).exists()
    finally:
        bad.stop()


def test_offline_resolves_the_same_charts_from_the_cache(world: World, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    wanted = [RemoteChart(world.repo.url, "webapp", "0.5.0"), RemoteChart(world.oci, "common", "^1"),
              RemoteChart(world.repo.url, "signed", "1.0.0", ProvenancePolicy(world.signer.public))]
    online = _localize(world, *wanted, cache=cache)
    before = len(world.repo.requests)
    offline = _localize(world, *wanted, cache=cache, offline=True, registries=[])
    def key(loc: charts.Localized) -> tuple[object, ...]:
        f = loc.fetched
        assert f is not None
        return (f.source, f.version, f.digest, f.url, f.manifest_digest, f.provenance)
    assert [key(o) for o in offline] == [key(o) for o in online]
    assert [d.digest for d in offline[0].dependencies] == [d.digest for d in online[0].dependencies]
    assert len(world.repo.requests) == before
    with pytest.raises(OfflineMissError) as err:
        _localize(world, RemoteChart(world.repo.url, "app", "1.0.0"), cache=tmp_path / "empty", offline=True)
    assert err.value.exit_code == 9
    names = json.loads((cache / "names.json").read_text())
    assert f"chart-index {world.repo.url}" in names


def test_pick_version_rules() -> None:
    entries = {v: v for v in ("1.0.0", "1.10.0", "1.9.0", "2.0.0-beta.1", "v1.11.0")}
    assert charts.pick_version(entries, "^1", "x")[0] == "v1.11.0"
    assert charts.pick_version(entries, "2.0.0-beta.1", "x")[0] == "2.0.0-beta.1"
    assert charts.pick_version(entries, ">=2.0.0-0", "x")[0] == "2.0.0-beta.1"
    with pytest.raises(UsageError, match="version 'not a version'"):
        charts.pick_version(entries, "not a version", "x")
    assert charts.helm_constraint(">=1.0 <2.0") == ">=1.0, <2.0"


def test_helm_not_found_for_dependency_list(world: World, tmp_path: Path) -> None:
    shutil.which("helm")  # the dependency check runs real helm; a missing binary is a RenderError
    local = make_chart(tmp_path / "src", "mine", "0.1.0",
                       dependencies=[{"name": "lib", "version": "1.1.0", "repository": world.tls.url}])
    with pytest.raises(BundlerError, match="cannot run helm|not an executable"):
        charts.localize([ChartSource(local, "mine")], workdir=tmp_path / "w", cache=Layout(tmp_path / "c"),
                        tools=Tools(helm=str(tmp_path / "no-helm")), registries=world.registries(),
                        environ=ENV)
