"""A Helm 2 chart (`apiVersion: v1`: dependencies in requirements.yaml, locked in requirements.lock) in a
spec, as an old chart checkout is (charts/ not committed): `sweep` and `build` fetch its dependency from a
real chart repository (`helm repo index` output on 127.0.0.1), the dependency's images are found with
their evidence and carried in the bundle, and the bill of materials records the dependency; a stale
requirements.lock fails with exit 2 naming the file, and nothing is written.

The chart is tests/fixtures/charts/helm2/wordpress (shaped like the former stable/wordpress 5.0.x with its
stable/mariadb 5.x dependency); its docker.io images are served by the test registry as a mirror."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.charts import HELM2, MIRRORED_REGISTRIES, helm2_chart, package, serve_repo
from tests.support.images import Pusher, multi_platform

SPEC = """\
apiVersion: airgap-bundle.dev/v1alpha1
kind: Bundle
metadata: {{name: blog, version: 1.0.0, sourceDateEpoch: 1767225600}}
localRegistry: {{host: registry.airgap.local:5000}}
sources:
  charts:
    - path: wordpress
      release: blog
""" + MIRRORED_REGISTRIES

WORDPRESS = "docker.io/bitnami/wordpress:5.0.3"
MARIADB = "docker.io/bitnami/mariadb:10.1.37"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory, registry) -> Iterator[tuple[Path, Any]]:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("helm2")
    pusher = Pusher.to(registry)
    for name, tag in (("bitnami/wordpress", "5.0.3"), ("bitnami/mariadb", "10.1.37")):
        pusher.push(name, multi_platform(name, seed=f"helm2-{tag}", platforms=("linux/amd64", "linux/arm64")), tag)
    repo = serve_repo(root / "repo")
    try:
        package(HELM2 / "mariadb", repo.root)
        repo.index()
        helm2_chart(root / "spec", repo.url)
        (root / "spec" / "bundle.yaml").write_text(SPEC.format(registry=registry.host, repo_host=repo.host))
        yield root / "spec", repo
    finally:
        repo.stop()


def test_sweep_finds_the_images_of_a_dependency_from_requirements_yaml(work: tuple[Path, Any], run_cli) -> None:  # type: ignore[no-untyped-def]
    spec, repo = work
    done = run_cli("sweep", "bundle.yaml", "--cache", "cache-sweep", "--format", "json", cwd=spec)
    assert done.returncode == 0, done.stderr
    images = {i["canonical"]: i for i in json.loads(done.stdout)["images"]}
    assert set(images) == {WORDPRESS, MARIADB}
    (where,) = images[MARIADB]["locations"]
    assert (where["chart"], where["template"], where["kind"], where["name"], where["path"]) == (
        "wordpress/charts/mariadb", "wordpress/charts/mariadb/templates/master-statefulset.yaml", "StatefulSet",
        "blog-mariadb", "spec.template.spec.containers[0].image")
    assert "/mariadb-5.2.3.tgz" in repo.requests  # requirements.lock's version, fetched from the repository
    assert not (spec / "wordpress" / "charts").exists()  # the user's chart directory is never changed


def test_build_carries_the_dependency_and_records_it(work: tuple[Path, Any], run_cli) -> None:  # type: ignore[no-untyped-def]
    spec, repo = work
    done = run_cli("build", "bundle.yaml", "-o", "blog.bundle.tar", "--unsigned", "--cache", "cache-build", cwd=spec)
    assert done.returncode == 0, done.stderr
    with tarfile.open(spec / "blog.bundle.tar") as tar:
        statement = json.loads(tar.extractfile("bundle.intoto.json").read())  # type: ignore[union-attr]
        chart_bytes = tar.extractfile("charts/wordpress-5.0.2.tgz").read()  # type: ignore[union-attr]
    with tarfile.open(fileobj=io.BytesIO(chart_bytes)) as inner:
        # installable offline: the dependency inside, beside the Helm 2 files helm reads
        assert {"wordpress/charts/mariadb-5.2.3.tgz", "wordpress/requirements.yaml",
                "wordpress/requirements.lock"} <= set(inner.getnames())
    predicate = statement["predicate"]
    assert {i["source"] for i in predicate["images"]} == {WORDPRESS, MARIADB}
    (chart,) = predicate["charts"]
    assert (chart["name"], chart["version"]) == ("wordpress", "5.0.2")
    (dep,) = chart["dependencies"]
    published = (repo.root / "mariadb-5.2.3.tgz").read_bytes()
    assert dep == {"source": repo.url, "name": "mariadb", "version": "5.2.3",
                   "digest": "sha256:" + hashlib.sha256(published).hexdigest(),
                   "url": f"{repo.url}/mariadb-5.2.3.tgz"}
    (locked,) = yaml.safe_load((spec / "bundle.lock").read_text())["charts"]
    assert [(d["source"], d["name"], d["version"]) for d in locked["dependencies"]] == [(repo.url, "mariadb", "5.2.3")]


def test_stale_requirements_lock_fails_with_2_and_writes_nothing(tmp_path: Path, work: tuple[Path, Any],
                                                                 run_cli) -> None:  # type: ignore[no-untyped-def]
    spec, repo = work
    chart = helm2_chart(tmp_path, repo.url)
    shutil.copyfile(spec / "bundle.yaml", tmp_path / "bundle.yaml")
    # requirements.yaml edited after `helm dependency update`: requirements.lock keeps the old digest
    requirements = chart / "requirements.yaml"
    requirements.write_text(requirements.read_text().replace("version: 5.x.x", "version: ~5.3.0"))
    before, asked = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")), len(repo.requests)
    done = run_cli("build", "bundle.yaml", "-o", "stale.bundle.tar", "--unsigned", "--cache", str(tmp_path.parent /
                   "stale-cache"), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"airgap-bundle: error: {chart}: the lock file (requirements.lock) is out of sync with the dependencies file "
        "(requirements.yaml) (run helm dependency update, which rewrites requirements.lock)")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert repo.requests[asked:] == []  # refused before any request
