"""Helm 2 charts (`apiVersion: v1`) in bundler/charts/, checked against the real helm binary: dependencies
declared in requirements.yaml and locked in requirements.lock are fetched like Chart.yaml's; a lock written
by Helm 2 or by helm 3/4 is accepted and a stale one refused, as `helm dependency build` does; a vendored
dependency needs no request; an `apiVersion: v2` chart with a stray requirements.yaml is read as helm reads
it. The chart is tests/fixtures/charts/helm2/wordpress (stable/wordpress 5.0.x with stable/mariadb 5.x)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bundler import charts
from bundler.errors import InputError
from bundler.layout import Layout
from bundler.render import Tools
from bundler.spec import ChartSource, RegistryConfig, RemoteChart
from tests.support.charts import (
    HELM2,
    ChartRepo,
    helm2_chart,
    helm2_digest,
    helm_env,
    make_chart,
    package,
    serve_repo,
)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChartRepo]:
    """A chart repository with stable/mariadb 5.2.3 and, published without their charts/ (a plain tar.gz of
    the chart directory), wordpress 5.0.2 depending on it and 5.0.1, whose requirements.lock is stale."""
    root = tmp_path_factory.mktemp("helm2-repo")
    server = serve_repo(root / "repo")
    try:
        package(HELM2 / "mariadb", server.root)
        package(helm2_chart(root / "src", server.url), server.root, raw=True)
        stale = helm2_chart(root / "stale", server.url)
        for name, old, new in (("Chart.yaml", "version: 5.0.2", "version: 5.0.1"),
                               ("requirements.yaml", "version: 5.x.x", "version: ~5.3.0")):
            (stale / name).write_text((stale / name).read_text().replace(old, new))
        package(stale, server.root, raw=True)
        server.index()
        yield server
    finally:
        server.stop()


def _localize(repo: ChartRepo, chart: ChartSource | RemoteChart, tmp: Path, *,
              registries: bool = True) -> charts.Localized:
    source = chart if isinstance(chart, ChartSource) else ChartSource(Path(f"<{chart}>"), chart.name, remote=chart)
    (located,) = charts.localize([source], workdir=tmp / "work", cache=Layout(tmp / "cache"), tools=Tools(),
                                 registries=[RegistryConfig(repo.host, insecure=True, docker_config=False)]
                                 if registries else [])
    return located


def _helm(helm: str, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, env=helm_env(home))


def test_a_published_helm2_chart_gets_the_dependency_its_requirements_lock_pins(repo: ChartRepo, tmp_path: Path,
                                                                                helm: str) -> None:
    got = _localize(repo, RemoteChart(repo.url, "wordpress", "5.0.2"), tmp_path)
    assert got.fetched is not None and got.fetched.version == "5.0.2"
    (dep,) = got.dependencies
    assert (dep.source, dep.name, dep.version, dep.constraint) == (repo.url, "mariadb", "5.2.3", "5.2.3")
    assert got.fetched.dependencies == got.dependencies
    assert sorted(p.name for p in (got.chart.path / "charts").iterdir()) == ["mariadb-5.2.3.tgz"]
    out = subprocess.run([helm, "template", "blog", str(got.chart.path)], capture_output=True, text=True,
                         check=True).stdout
    assert "image: docker.io/bitnami/mariadb:10.1.37" in out and "image: docker.io/bitnami/wordpress:5.0.3" in out


def test_requirements_lock_digests_agree_with_helm(repo: ChartRepo, tmp_path: Path, helm: str) -> None:
    home = tmp_path / "helm-home"
    assert _helm(helm, home, "repo", "add", "stable", repo.url).returncode == 0
    # The fixture's lock as Helm 2 wrote it (resolver.HashV2Req digest): helm 4 builds from it, and so do we.
    helm2 = helm2_chart(tmp_path / "helm2", repo.url)
    shutil.copytree(helm2, tmp_path / "by-helm")
    built = _helm(helm, home, "dependency", "build", str(tmp_path / "by-helm"))
    assert built.returncode == 0 and "Checking against Helm v2 hash" in built.stderr, built.stderr
    assert [p.name for p in (tmp_path / "by-helm" / "charts").iterdir()] == ["mariadb-5.2.3.tgz"]
    assert [d.version for d in _localize(repo, ChartSource(helm2, "wordpress"), tmp_path / "a").dependencies] == \
        ["5.2.3"]
    # helm 4 on an apiVersion v1 chart writes requirements.lock (not Chart.lock), with resolver.HashReq's digest.
    fresh = helm2_chart(tmp_path / "fresh", repo.url)
    (fresh / "requirements.lock").unlink()
    assert _helm(helm, home, "dependency", "update", str(fresh)).returncode == 0
    assert not (fresh / "Chart.lock").exists()
    lock = yaml.safe_load((fresh / "requirements.lock").read_text())
    requirements = yaml.safe_load((fresh / "requirements.yaml").read_text())["dependencies"]
    assert charts.lock_digest(requirements, lock["dependencies"]) == lock["digest"]
    assert lock["digest"] != helm2_digest(requirements) == charts.helm2_lock_digest(requirements)
    shutil.rmtree(fresh / "charts")
    assert [d.version for d in _localize(repo, ChartSource(fresh, "wordpress"), tmp_path / "b").dependencies] == \
        ["5.2.3"]


def test_a_stale_requirements_lock_is_refused_as_helm_refuses_it(repo: ChartRepo, tmp_path: Path, helm: str) -> None:
    chart = helm2_chart(tmp_path, repo.url)
    requirements = chart / "requirements.yaml"
    requirements.write_text(requirements.read_text().replace("version: 5.x.x", "version: ~5.3.0"))
    refused = _helm(helm, tmp_path / "helm-home", "dependency", "build", str(chart))
    assert refused.returncode == 1
    assert "the lock file (requirements.lock) is out of sync with the dependencies file (requirements.yaml)" in \
        refused.stderr
    asked = len(repo.requests)
    with pytest.raises(InputError) as err:
        _localize(repo, ChartSource(chart, "wordpress"), tmp_path)
    assert err.value.message == f"{chart}: the lock file (requirements.lock) is out of sync with the dependencies " \
                                "file (requirements.yaml)"
    assert err.value.exit_code == 2 and err.value.hint == "run helm dependency update, which rewrites requirements.lock"
    assert repo.requests[asked:] == [] and not (chart / "charts").exists()
    with pytest.raises(InputError, match=r"\(requirements.lock\) is out of sync .* \(the chart was published so: "
                                         r"its publisher must run helm dependency update"):
        _localize(repo, RemoteChart(repo.url, "wordpress", "5.0.1"), tmp_path / "remote")


def test_a_vendored_dependency_needs_no_fetch_and_an_outdated_one_is_replaced(repo: ChartRepo, tmp_path: Path) -> None:
    chart = helm2_chart(tmp_path / "src", repo.url)
    (chart / "charts").mkdir()
    package(HELM2 / "mariadb", chart / "charts")
    asked = len(repo.requests)
    got = _localize(repo, ChartSource(chart, "wordpress"), tmp_path / "a", registries=False)
    assert got.chart.path == chart and got.all_fetched == () and repo.requests[asked:] == []
    # mariadb 5.0.0 in charts/ while requirements.lock pins 5.2.3: replaced, as helm dependency build does
    old = tmp_path / "old" / "mariadb"
    shutil.copytree(HELM2 / "mariadb", old)
    (old / "Chart.yaml").write_text((old / "Chart.yaml").read_text().replace("version: 5.2.3", "version: 5.0.0"))
    shutil.rmtree(chart / "charts")
    (chart / "charts").mkdir()
    package(old, chart / "charts")
    got = _localize(repo, ChartSource(chart, "wordpress"), tmp_path / "b")
    assert [d.version for d in got.dependencies] == ["5.2.3"]
    assert sorted(p.name for p in (got.chart.path / "charts").iterdir()) == ["mariadb-5.2.3.tgz"]
    assert sorted(p.name for p in (chart / "charts").iterdir()) == ["mariadb-5.0.0.tgz"]  # the user's, untouched


def test_a_v2_chart_with_a_stray_requirements_yaml_is_read_as_helm_reads_it(repo: ChartRepo, tmp_path: Path, helm: str,
                                                                             caplog: pytest.LogCaptureFixture) -> None:
    # Chart.yaml declares one dependency (aliased `db`); a requirements.yaml left from Helm 2 names mariadb.
    chart = make_chart(tmp_path / "src", "site", "2.0.0", dependencies=[
        {"name": "app", "version": "1.0.0", "repository": repo.url, "alias": "db"}])
    (chart / "requirements.yaml").write_text(
        f"dependencies:\n- name: mariadb\n  version: 5.x.x\n  repository: {repo.url}\n")
    listed = _helm(helm, tmp_path / "helm-home", "dependency", "list", str(chart))
    assert listed.stdout.split()[4:7] == ["mariadb", "5.x.x", repo.url]  # helm takes requirements.yaml's
    assert 'Dependencies are handled in Chart.yaml since apiVersion \\"v2\\"' in listed.stderr
    declared = charts.declared_dependencies(chart, "site")
    assert (declared.file, declared.lock_file, declared.helm2, declared.stray) == \
        ("requirements.yaml", "Chart.lock", False, "requirements.yaml")
    # Go's json decodes into the entry already there: Chart.yaml's alias stays on requirements.yaml's mariadb.
    assert declared.dependencies == ({"name": "mariadb", "version": "5.x.x", "repository": repo.url, "alias": "db"},)
    got = _localize(repo, ChartSource(chart, "site"), tmp_path / "a")
    assert [(d.name, d.version) for d in got.dependencies] == [("mariadb", "5.2.3")]
    assert "an apiVersion v2 chart with requirements.yaml: helm reads its dependencies from there" in caplog.text
    out = subprocess.run([helm, "template", "x", str(got.chart.path)], capture_output=True, text=True,
                         check=True).stdout
    assert "# Source: site/charts/db/templates/master-statefulset.yaml" in out  # helm used the alias too
    # A stray requirements.lock is the lock helm checks (read after Chart.lock); Helm 2's digest does not
    # count for a v2 chart. Both refuse it; our message names the files it came from.
    (chart / "requirements.lock").write_text(yaml.safe_dump({
        "dependencies": [{"name": "mariadb", "repository": repo.url, "version": "5.2.3"}],
        "digest": helm2_digest([{"name": "mariadb", "version": "5.x.x", "repository": repo.url, "alias": "db"}]),
        "generated": "2019-01-01T00:00:00Z"}))
    built = _helm(helm, tmp_path / "helm-home", "dependency", "build", str(chart))
    assert built.returncode == 1 and "out of sync" in built.stderr
    with pytest.raises(InputError, match=r"\(requirements.lock\) is out of sync with the dependencies file "
                                         r"\(requirements.yaml\)"):
        _localize(repo, ChartSource(chart, "site"), tmp_path / "b")


@pytest.mark.parametrize("meta, requirements, file, names, helm2", [
    ({"name": "a", "version": "1.0.0"}, "", "Chart.yaml", [], True),  # no apiVersion: helm reads v1
    ({"apiVersion": "v1", "name": "a", "version": "1.0.0", "dependencies": [{"name": "x", "repository": ""}]},
     "# nothing here\n", "Chart.yaml", ["x"], True),                   # requirements.yaml without dependencies:
    ({"apiVersion": "v2", "name": "a", "version": "1.0.0", "dependencies": [{"name": "x", "repository": ""}]},
     "dependencies: []\n", "requirements.yaml", [], False),            # an empty list empties them, as in helm
])
def test_which_file_declares_the_dependencies(tmp_path: Path, helm: str, meta: dict[str, object], requirements: str,
                                              file: str, names: list[str], helm2: bool) -> None:
    (tmp_path / "a" / "templates").mkdir(parents=True)
    (tmp_path / "a" / "Chart.yaml").write_text(yaml.safe_dump(meta))
    (tmp_path / "a" / "requirements.yaml").write_text(requirements)
    declared = charts.declared_dependencies(tmp_path / "a", "a")
    assert (declared.file, [d["name"] for d in declared.dependencies], declared.helm2) == (file, names, helm2)
    listed = subprocess.run([helm, "dependency", "list", str(tmp_path / "a")], capture_output=True, text=True)
    assert [row.split()[0] for row in listed.stdout.splitlines()[1:] if row.strip()] == names


def test_a_malformed_requirements_file_names_itself(tmp_path: Path) -> None:
    chart = make_chart(tmp_path, "a", "1.0.0")
    (chart / "requirements.yaml").write_text("dependencies: [\n")
    with pytest.raises(InputError, match=r"^x: requirements.yaml: malformed YAML"):
        charts.declared_dependencies(chart, "x")
