"""Charts by reference (bundler/charts/) against real servers on 127.0.0.1: a Helm chart repository
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
import yaml

from bundler import charts
from bundler.errors import (
    BundlerError,
    DigestMismatchError,
    InputError,
    NotFoundError,
    OfflineMissError,
    ProvenanceError,
    RegistryError,
    UsageError,
)
from bundler.layout import Layout
from bundler.render import Tools
from bundler.spec import ChartSource, ProvenancePolicy, RegistryConfig, RemoteChart
from tests.support.charts import (
    ChartRepo,
    Keyring,
    gpg_keyring,
    helm_env,
    make_chart,
    package,
    push,
    serve_repo,
)

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
                                lock=[{"name": "lib", "version": "1.0.0", "repository": tls.url}],
                                aliases={"tls": tls.url}),
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


def test_lock_digest_is_helms(world: World, tmp_path: Path, helm: str) -> None:
    # helm dependency update writes Chart.lock with its own digest (resolver.HashReq); ours must agree,
    # including Go's escaping of < and > and an alias, a condition, tags and import-values.
    make_chart(tmp_path, "sibling", "0.0.1")
    deps = [{"name": "common", "version": ">=1.0.0 <2.0.0", "repository": world.oci, "alias": "shared",
             "condition": "shared.enabled", "tags": ["bitnami-common"],
             "import-values": [{"parent": "b", "child": "a"}, "data"]},
            {"name": "sibling", "version": "~0.0.1", "repository": "file://../sibling"}]
    root = make_chart(tmp_path, "top", "0.1.0", dependencies=deps)
    subprocess.run([helm, "dependency", "update", str(root), "--plain-http"], check=True, capture_output=True,
                   env=helm_env(tmp_path / "home"))
    lock = yaml.safe_load((root / "Chart.lock").read_text())
    assert [d["version"] for d in lock["dependencies"]] == ["1.1.0", "0.0.1"]
    assert charts.lock_digest(deps, lock["dependencies"]) == lock["digest"]


def test_stale_chart_lock_is_refused(world: World, tmp_path: Path) -> None:
    local = make_chart(tmp_path / "src", "mine", "0.1.0",
                       dependencies=[{"name": "lib", "version": "^1.0", "repository": world.tls.url}],
                       lock=[{"name": "lib", "version": "1.0.0", "repository": world.tls.url}])
    meta = yaml.safe_load((local / "Chart.yaml").read_text())
    meta["dependencies"][0]["version"] = "^1.1"  # Chart.yaml changed after helm dependency update
    (local / "Chart.yaml").write_text(yaml.safe_dump(meta))
    with pytest.raises(InputError, match=r"Chart.lock\) is out of sync"):
        _localize(world, ChartSource(local, "mine"), cache=tmp_path / "cache")


# --- routes: mirrors and archive URLs on other hosts ------------------------------------------------


def test_repository_mirror_and_absolute_archive_urls(world: World, tmp_path: Path) -> None:
    # The spec names an upstream that is never reached (skipUpstream) and a mirror serving its files
    # under a path prefix; index.yaml's relative archive URL is routed to the mirror too.
    mirror = serve_repo(tmp_path / "mirror", path="mirror")
    try:
        package(make_chart(tmp_path / "src", "app", "1.0.0"), mirror.root)
        mirror.index()
        upstream = "127.0.0.1:9"  # discard port: nothing listens
        configs = [RegistryConfig(upstream, mirrors=(f"{mirror.host}/mirror",), skip_upstream=True, insecure=True,
                                  docker_config=False),
                   RegistryConfig(mirror.host, insecure=True, docker_config=False)]
        (got,) = _localize(world, RemoteChart(f"http://{upstream}", "app", "1.0.0"), cache=tmp_path / "c",
                           registries=configs)
        assert got.fetched is not None and got.fetched.url == f"http://{upstream}/app-1.0.0.tgz"
        assert "/mirror/index.yaml" in mirror.requests and "/mirror/app-1.0.0.tgz" in mirror.requests
    finally:
        mirror.stop()


def test_archive_url_on_another_host_needs_that_host_listed(world: World, tmp_path: Path) -> None:
    # helm repo index --url: absolute archive URLs, here on the TLS server (as GitHub Pages indexes
    # point at release downloads).
    index_only = serve_repo(tmp_path / "index-only")
    try:
        archive = package(make_chart(tmp_path / "src", "far", "1.0.0"), index_only.root)
        subprocess.run([helm_bin(), "repo", "index", str(index_only.root), "--url", world.tls.url], check=True)
        shutil.copy(archive, world.tls.root / archive.name)
        own = RegistryConfig(index_only.host, insecure=True, docker_config=False)
        with pytest.raises(UsageError, match=f"registry {world.tls.host} is not allowed"):
            _localize(world, RemoteChart(index_only.url, "far", "1.0.0"), cache=tmp_path / "c", registries=[own])
        (got,) = _localize(world, RemoteChart(index_only.url, "far", "1.0.0"), cache=tmp_path / "c",
                           registries=[own, *world.registries(repo=False, oci=False)])
        assert got.fetched is not None and got.fetched.url == f"{world.tls.url}/far-1.0.0.tgz"
        https_only = RegistryConfig(index_only.host, docker_config=False)
        with pytest.raises(UsageError, match="plain HTTP, but the spec does not mark"):
            _localize(world, RemoteChart(index_only.url, "far", "1.0.0"), cache=tmp_path / "c2",
                      registries=[https_only])
    finally:
        index_only.stop()


def helm_bin() -> str:
    return Tools().get("helm")


def test_connection_dropped_mid_archive(world: World, tmp_path: Path) -> None:
    from tests.support.faultproxy import Fault, start_proxy

    plain = serve_repo(tmp_path / "plain")
    package(make_chart(tmp_path / "src", "app", "1.0.0"), plain.root)
    plain.index()
    proxy = start_proxy(plain.url)
    try:
        proxy.add(Fault("drop", match=".tgz", after=100, times=10))
        with pytest.raises(RegistryError, match="connection failed while reading"):
            _localize(world, RemoteChart(f"http://{proxy.host}", "app", "1.0.0"), cache=tmp_path / "c",
                      registries=[RegistryConfig(proxy.host, insecure=True, docker_config=False)])
    finally:
        proxy.stop()
        plain.stop()


def test_oci_tags_follow_pages(world: World) -> None:
    from bundler.reference import ImageRef
    from bundler.registry import RegistryClient, plan_routes

    client = RegistryClient(plan_routes([world.registry.host], world.registries(repo=False, tls=False)))  # type: ignore[attr-defined]
    tags = client.list_tags(ImageRef.parse(f"{world.registry.host}/charts/common"), page_size=1)  # type: ignore[attr-defined]
    assert sorted(tags) == ["1.0.0", "1.1.0"]


# --- what a server may send that is not a chart -------------------------------------------------------


@pytest.fixture()
def static(tmp_path: Path) -> Iterator[ChartRepo]:
    """A plain file server: whatever the test writes is what a 'repository' or 'registry' answers."""
    server = serve_repo(tmp_path / "static")
    yield server
    server.stop()


def _static_config(static: ChartRepo) -> list[RegistryConfig]:
    return [RegistryConfig(static.host, insecure=True, docker_config=False)]


@pytest.mark.parametrize("index, error, needle", [
    ("entries: [", RegistryError, "not a Helm repository index"),
    ("apiVersion: v1\n", RegistryError, "no entries:"),
    ("entries:\n  app:\n  - {version: 1.0.0, urls: [app-1.0.0.tgz]}\n", RegistryError, "no sha256 digest"),
    ("entries:\n  app:\n  - {version: 1.0.0, digest: " + "a" * 64 + "}\n", RegistryError, "no download URL"),
])
def test_malformed_repository_index(world: World, static: ChartRepo, tmp_path: Path, index: str,
                                    error: type[BundlerError], needle: str) -> None:
    (static.root / "index.yaml").write_text(index)
    with pytest.raises(error, match=needle):
        _localize(world, RemoteChart(static.url, "app", "1.0.0"), cache=tmp_path / "c",
                  registries=_static_config(static))


def _oci_files(root: Path, name: str, tag: str, config_type: str, layer_type: str, layer: bytes) -> None:
    blobs = root / "v2" / "x" / name / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    config = b"{}"
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": config_type, "digest": _sha(config), "size": len(config)},
                "layers": [{"mediaType": layer_type, "digest": _sha(layer), "size": len(layer)}]}
    for data in (config, layer):
        (blobs / _sha(data)).write_bytes(data)
    (root / "v2" / "x" / name / "manifests").mkdir(exist_ok=True)
    (root / "v2" / "x" / name / "manifests" / tag).write_text(json.dumps(manifest))


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_oci_artifacts_that_are_not_charts(world: World, static: ChartRepo, tmp_path: Path) -> None:
    _oci_files(static.root, "image", "1.0.0", "application/vnd.oci.image.config.v1+json",
               "application/vnd.oci.image.layer.v1.tar+gzip", b"layer")
    _oci_files(static.root, "nolayer", "1.0.0", charts.HELM_CONFIG, "application/octet-stream", b"other")
    with pytest.raises(RegistryError, match="is not a Helm chart"):
        _localize(world, RemoteChart(f"oci://{static.host}/x", "image", "1.0.0"), cache=tmp_path / "c",
                  registries=_static_config(static))
    with pytest.raises(RegistryError, match="has no application/vnd.cncf.helm.chart.content"):
        _localize(world, RemoteChart(f"oci://{static.host}/x", "nolayer", "1.0.0"), cache=tmp_path / "c",
                  registries=_static_config(static))


@pytest.mark.parametrize("body, needle", [("not json", "not JSON"), ("[1]", "not a JSON object")])
def test_oci_tag_list_must_be_a_json_object(world: World, static: ChartRepo, tmp_path: Path, body: str,
                                            needle: str) -> None:
    (static.root / "v2" / "x" / "app" / "tags").mkdir(parents=True)
    (static.root / "v2" / "x" / "app" / "tags" / "list").write_text(body)
    with pytest.raises(RegistryError, match=needle):
        _localize(world, RemoteChart(f"oci://{static.host}/x", "app", "^1"), cache=tmp_path / "c",
                  registries=_static_config(static))


@pytest.mark.parametrize("members, needle", [
    ({"a/Chart.yaml": b"name: a\nversion: 1.0.0\n", "b/x": b""}, "one top directory"),
    ({"a/values.yaml": b"{}"}, "no Chart.yaml in the archive"),
    ({"a/Chart.yaml": b"- a list\n"}, "not a YAML mapping"),
    ({"a/Chart.yaml": b"name: [\n"}, "malformed YAML"),
])
def test_archives_that_are_not_charts(world: World, static: ChartRepo, tmp_path: Path,
                                      members: dict[str, bytes], needle: str) -> None:
    import io
    import tarfile

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (static.root / "a-1.0.0.tgz").write_bytes(raw.getvalue())
    (static.root / "index.yaml").write_text(yaml.safe_dump({"apiVersion": "v1", "entries": {"a": [
        {"version": "1.0.0", "digest": hashlib.sha256(raw.getvalue()).hexdigest(), "urls": ["a-1.0.0.tgz"]}]}}))
    with pytest.raises(InputError, match=needle):
        _localize(world, RemoteChart(static.url, "a", "1.0.0"), cache=tmp_path / "c",
                  registries=_static_config(static))


# --- dependencies that cannot be satisfied ---------------------------------------------------------------


def test_dependency_failures(world: World, static: ChartRepo, tmp_path: Path) -> None:
    # a published archive whose file:// dependency stayed on the publisher's machine
    package(make_chart(tmp_path / "src", "far", "1.0.0",
                       dependencies=[{"name": "sib", "version": "1.0.0", "repository": "file://../sib"}]),
            static.root, raw=True)
    static.index()
    with pytest.raises(InputError, match="a path on the publisher's machine"):
        _localize(world, RemoteChart(static.url, "far", "1.0.0"), cache=tmp_path / "c",
                  registries=_static_config(static))
    # a local chart whose file:// dependency is not a chart directory
    local = make_chart(tmp_path / "src", "mine", "0.1.0",
                       dependencies=[{"name": "sib", "version": "1.0.0", "repository": "file://../nowhere"}])
    with pytest.raises(InputError, match="is not a chart directory"):
        _localize(world, ChartSource(local, "mine"), cache=tmp_path / "c")
    # a dependency without a repository that is not vendored: helm dependency list says so
    local = make_chart(tmp_path / "src2", "mine", "0.1.0", dependencies=[
        {"name": "lib", "version": "1.1.0", "repository": world.tls.url},
        {"name": "ghost", "version": "1.0.0"}])
    with pytest.raises(BundlerError, match=r"ghost 1.0.0 \(missing\)") as err:
        _localize(world, ChartSource(local, "mine"), cache=tmp_path / "c")
    assert err.value.exit_code == 3


def test_a_vendored_dependency_is_kept_and_an_outdated_one_replaced(world: World, tmp_path: Path) -> None:
    local = make_chart(tmp_path / "src", "mine", "0.1.0", dependencies=[
        {"name": "lib", "version": "1.1.0", "repository": world.tls.url},
        {"name": "app", "version": "^1.0", "repository": world.repo.url}])
    (local / "charts").mkdir()
    make_chart(local / "charts", "app", "1.0.0")            # vendored directory, fits ^1.0: kept
    package(make_chart(tmp_path / "old", "lib", "1.0.0"), local / "charts")  # outdated archive: replaced
    (got,) = _localize(world, ChartSource(local, "mine"), cache=tmp_path / "c")
    assert [d.name for d in got.dependencies] == ["lib"]
    assert {p.name for p in (got.chart.path / "charts").iterdir()} == {"app", "lib-1.1.0.tgz"}


def test_a_chart_with_nothing_to_fetch_is_left_alone(world: World, tmp_path: Path) -> None:
    local = make_chart(tmp_path / "src", "mine", "0.1.0")
    (got,) = _localize(world, ChartSource(local, "mine"), cache=tmp_path / "c", registries=[])
    assert got.chart.path == local and got.all_fetched == ()


def test_keyring_file_missing(world: World, tmp_path: Path) -> None:
    policy = ProvenancePolicy(tmp_path / "nope.gpg")
    with pytest.raises(InputError, match="keyring not found"):
        _localize(world, RemoteChart(world.repo.url, "signed", "1.0.0", policy), cache=tmp_path / "c")


def test_offline_lacks_a_blob_the_cache_named(world: World, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    (online,) = _localize(world, RemoteChart(world.oci, "common", "1.0.0"), cache=cache)
    assert online.fetched is not None
    (cache / "blobs" / "sha256" / online.fetched.digest.removeprefix("sha256:")).unlink()
    with pytest.raises(OfflineMissError, match="not in the cache"):
        _localize(world, RemoteChart(world.oci, "common", "1.0.0"), cache=cache, offline=True)


def test_caret_below_one_stays_within_the_minor() -> None:
    entries = {v: v for v in ("0.2.3", "0.2.9", "0.3.0", "0.0.3", "0.0.4")}
    assert charts.pick_version(entries, "^0.2.3", "x")[0] == "0.2.9"
    assert charts.pick_version(entries, "^0.0.3", "x")[0] == "0.0.3"
    assert charts.helm_constraint("^0.0") == ">=0.0.0, <0.1.0"


def test_oci_layer_that_does_not_match_its_digest(world: World, static: ChartRepo, tmp_path: Path) -> None:
    _oci_files(static.root, "liar", "1.0.0", charts.HELM_CONFIG, charts.HELM_CHART, b"chart bytes")
    blob = static.root / "v2" / "x" / "liar" / "blobs" / _sha(b"chart bytes")
    blob.write_bytes(b"other bytes")
    with pytest.raises(DigestMismatchError, match="liar"):
        _localize(world, RemoteChart(f"oci://{static.host}/x", "liar", "1.0.0"), cache=tmp_path / "c",
                  registries=_static_config(static))
    assert not (tmp_path / "c" / "blobs" / "sha256" / _sha(b"other bytes").removeprefix("sha256:")).exists()


def test_fetched_bytes_that_are_not_gzip(world: World, static: ChartRepo, tmp_path: Path) -> None:
    (static.root / "a-1.0.0.tgz").write_bytes(b"plain text")
    (static.root / "index.yaml").write_text(yaml.safe_dump({"entries": {"a": [
        {"version": "1.0.0", "digest": hashlib.sha256(b"plain text").hexdigest(), "urls": ["a-1.0.0.tgz"]}]}}))
    with pytest.raises(InputError, match="not a readable chart archive"):
        _localize(world, RemoteChart(static.url, "a", "1.0.0"), cache=tmp_path / "c", registries=_static_config(static))


def test_provenance_file_too_large(world: World, static: ChartRepo, tmp_path: Path) -> None:
    archive = package(make_chart(tmp_path / "src", "big", "1.0.0"), static.root)
    static.index()
    Path(f"{archive}.prov").write_bytes(b"x" * ((1 << 20) + 1))
    with pytest.raises(RegistryError, match="larger than 1048576 bytes"):
        _localize(world, RemoteChart(static.url, "big", "1.0.0", ProvenancePolicy(world.signer.public)),
                  cache=tmp_path / "c", registries=_static_config(static))


def test_local_archive_and_odd_charts_folders(world: World, tmp_path: Path) -> None:
    archive = package(make_chart(tmp_path / "src", "packed", "1.0.0"), tmp_path / "out")
    (got,) = _localize(world, ChartSource(archive, "packed"), cache=tmp_path / "c", registries=[])
    assert got.chart.path == archive
    # charts/ holding a README, and a dependency pinned by Chart.lock that is vendored at that version
    lock = [{"name": "lib", "version": "1.1.0", "repository": world.tls.url}]
    local = make_chart(tmp_path / "src", "mine", "0.1.0", dependencies=[
        {"name": "lib", "version": "^1.0", "repository": world.tls.url}], lock=lock)
    (local / "charts").mkdir()
    (local / "charts" / "README.md").write_text("vendored charts\n")
    package(make_chart(tmp_path / "v", "lib", "1.1.0"), local / "charts")
    (got,) = _localize(world, ChartSource(local, "mine"), cache=tmp_path / "c", registries=[])
    assert got.chart.path == local  # nothing to fetch
    # a vendored archive that is not a chart archive
    (local / "charts" / "lib-1.1.0.tgz").write_bytes(b"not gzip")
    with pytest.raises(InputError, match="not a readable chart archive"):
        _localize(world, ChartSource(local, "mine"), cache=tmp_path / "c", registries=[])


def test_vendored_version_that_is_not_semver_is_replaced(world: World, tmp_path: Path) -> None:
    local = make_chart(tmp_path / "src", "mine", "0.1.0", dependencies=[
        {"name": "lib", "version": "^1.0", "repository": world.tls.url}])
    odd = make_chart(local / "charts", "lib", "1.1.0")
    (odd / "Chart.yaml").write_text("apiVersion: v2\nname: lib\nversion: latest\n")
    (got,) = _localize(world, ChartSource(local, "mine"), cache=tmp_path / "c")
    assert [d.version for d in got.dependencies] == ["1.1.0"]


def test_vendored_archive_without_chart_yaml(world: World, tmp_path: Path) -> None:
    import tarfile

    local = make_chart(tmp_path / "src", "mine", "0.1.0", dependencies=[
        {"name": "lib", "version": "^1.0", "repository": world.tls.url}])
    (local / "charts").mkdir()
    with tarfile.open(local / "charts" / "lib-1.1.0.tgz", "w:gz") as tar:
        tar.add(local / "values.yaml", arcname="lib/values.yaml")
    with pytest.raises(InputError, match="without <name>/Chart.yaml"):
        _localize(world, ChartSource(local, "mine"), cache=tmp_path / "c")


def test_helm_refuses_the_chart(world: World, tmp_path: Path) -> None:
    broken = make_chart(tmp_path / "src2", "sib", "0.0.1")
    (broken / "Chart.yaml").write_text("apiVersion: v2\nname: sib\n")  # helm package needs a version
    mine = make_chart(tmp_path / "src2", "mine", "0.1.0",
                      dependencies=[{"name": "sib", "version": "0.0.1", "repository": "file://../sib"}])
    with pytest.raises(BundlerError, match="helm package .* failed"):
        _localize(world, ChartSource(mine, "mine"), cache=tmp_path / "c")


def test_lock_digest_without_versions() -> None:
    expected = "sha256:" + hashlib.sha256(b'[[{"name":"a","repository":""}],[]]').hexdigest()
    assert charts.lock_digest([{"name": "a", "repository": ""}], []) == expected


def test_a_url_password_never_reaches_a_message(world: World) -> None:
    from bundler.registry import RegistryClient

    with pytest.raises(UsageError) as err:
        RegistryClient({}).url_chunks("https://user:hunter2@charts.example.com/index.yaml")
    assert "hunter2" not in str(err.value) and "registry charts.example.com is not allowed" in str(err.value)


def test_an_unreadable_names_record_says_what_to_do(tmp_path: Path) -> None:
    from bundler.layout import LayoutError

    cache = Layout(tmp_path / "cache")
    cache.set_names({"chart-index https://x": "sha256:" + "0" * 64})
    assert cache.names() == {"chart-index https://x": "sha256:" + "0" * 64}
    (tmp_path / "cache" / "names.json").write_text("{")
    with pytest.raises(LayoutError, match="delete names.json"):
        cache.names()


def test_build_wiring_cache_and_offline(world: World, tmp_path: Path) -> None:
    import dataclasses

    from bundler import pipeline
    from bundler.spec import Spec

    remote = RemoteChart(world.tls.url, "lib", "1.0.0")
    spec = Spec(tmp_path / "bundle.yaml", "sha256:" + "0" * 64, {}, "x", "1", "r.local",
                charts=(ChartSource(Path(f"<{remote}>"), "lib", remote=remote),),
                registries=tuple(world.registries(repo=False, oci=False)))
    options = pipeline.BuildOptions(output=tmp_path / "x.bundle.tar", signer=None, unsigned=True)
    (staging := tmp_path / "staging").mkdir()
    (got,) = pipeline.fetch_charts(spec, options, staging)  # no --cache: a cache inside the staging folder
    assert got.fetched is not None and (staging / "chart-cache" / "blobs").is_dir()
    with pytest.raises(UsageError, match="--offline needs a cache"):
        pipeline.fetch_charts(spec, dataclasses.replace(options, offline=True), staging)


def test_slsa_dependencies_as_pairs_or_descriptors() -> None:
    from bundler import attest

    digest = "sha256:" + "1" * 64
    body = json.loads(attest.provenance(
        subjects=[attest.Subject("a", "2" * 64)], spec={}, spec_digest=digest, builder_version="0", epoch=0,
        dependencies=[("oci://r/a:1", digest),
                      attest.Dependency("https://c/x-1.0.0.tgz", digest, "x", (("version", "1.0.0"),))]))
    resolved = body["predicate"]["buildDefinition"]["resolvedDependencies"]
    assert resolved == [{"uri": "https://c/x-1.0.0.tgz", "digest": {"sha256": "1" * 64}, "name": "x",
                         "annotations": {"version": "1.0.0"}},
                        {"uri": "oci://r/a:1", "digest": {"sha256": "1" * 64}}]


def test_index_parse_leaves_the_gc_as_it_found_it() -> None:
    import gc

    from bundler.charts.fetch import _index_entries

    data = b"entries:\n  app:\n  - {version: 1.0.0}\n"
    assert gc.isenabled()
    assert set(_index_entries(data, "u", "app")) == {"1.0.0"} and gc.isenabled()
    gc.disable()
    try:
        _index_entries(data, "u", "app")
        assert not gc.isenabled()
    finally:
        gc.enable()
