"""bundle.lock with charts by reference: a real Helm chart repository (helm repo index output over HTTP)
whose chart depends on a chart pushed with `helm push` into the Debian docker-registry, which also serves
the images. The lock pins the chart and its dependency by version and digest, so a newer release that
fits the spec's constraints changes nothing until `--update`, and a version re-published with other bytes
fails the build (exit 16) naming the lock entry."""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.charts import MIRRORED_REGISTRIES, ChartRepo, make_chart, package, push, serve_repo
from tests.support.images import Pusher, multi_platform
from tests.support.registry import TestRegistry, start_registry

SPEC = """\
apiVersion: airgap-bundle.dev/v1alpha1
kind: Bundle
metadata: {{name: web, version: 1.0.0, sourceDateEpoch: 1767225600}}
localRegistry: {{host: registry.airgap.local:5000}}
sources:
  charts:
    - repo: {repo}
      name: webapp
      version: "^1.0"
      release: web
""" + MIRRORED_REGISTRIES


class World:
    def __init__(self, tmp: Path, registry: TestRegistry, repo: ChartRepo, run_cli: Any) -> None:
        self.tmp, self.registry, self.repo, self.run_cli = tmp, registry, repo, run_cli
        self.spec = tmp / "work" / "bundle.yaml"
        self.lock = tmp / "work" / "bundle.lock"
        self.caches = 0

    def publish(self, version: str, common: str, *, image: str = "nginx:1.27") -> None:
        """webapp VERSION into the repository (depending on common ^1.0 from OCI), common COMMON into OCI."""
        src = self.tmp / "src" / f"{version}-{common}-{image.replace(':', '_')}"
        oci = f"oci://{self.registry.host}/charts"
        push(package(make_chart(src / "common", "common", common, image="busybox:1.36"), src / "out-common"),
             self.registry, "charts", self.tmp / "helm-home")
        package(make_chart(src, "webapp", version, image=image,
                           dependencies=[{"name": "common", "version": "^1.0.0", "repository": oci}]),
                self.repo.root, raw=True)
        self.repo.index()

    def build(self, output: str, *extra: str) -> Any:
        self.caches += 1
        return self.run_cli("build", "bundle.yaml", "--output", output, "--unsigned",
                            "--cache", str(self.tmp / f"cache-{self.caches}"), *extra, cwd=self.spec.parent)

    def locked_chart(self) -> dict[str, Any]:
        (chart,) = yaml.safe_load(self.lock.read_text())["charts"]
        return dict(chart)


@pytest.fixture
def world(tmp_path: Path, run_cli: Any) -> Iterator[World]:
    registry = start_registry(tmp_path / "registry")
    repo = serve_repo(tmp_path / "repo")
    try:
        pusher = Pusher.to(registry)
        for name, tag in (("library/nginx", "1.27"), ("library/busybox", "1.36"), ("library/nginx", "1.28")):
            pusher.push(name, multi_platform(name, seed=tag, platforms=("linux/amd64", "linux/arm64")), tag)
        world = World(tmp_path, registry, repo, run_cli)
        world.spec.parent.mkdir()
        world.spec.write_text(SPEC.format(repo=repo.url, repo_host=repo.host, registry=registry.host))
        world.publish("1.0.0", "1.0.0")
        yield world
    finally:
        repo.stop()
        registry.stop()


def test_charts_are_locked_by_version_and_digest_with_their_dependencies(world: World) -> None:
    first = world.build("a.bundle.tar")
    assert first.returncode == 0, first.stderr
    chart = world.locked_chart()
    published = world.repo.root / "webapp-1.0.0.tgz"
    assert chart["source"] == world.repo.url and chart["name"] == "webapp" and chart["version"] == "1.0.0"
    assert chart["digest"] == "sha256:" + hashlib.sha256(published.read_bytes()).hexdigest()
    (dep,) = chart["dependencies"]
    assert (dep["source"], dep["name"], dep["version"]) == \
        (f"oci://{world.registry.host}/charts/common", "common", "1.0.0")

    # Newer releases that fit both constraints (webapp ^1.0, common ^1.0.0), one with another image.
    world.publish("1.1.0", "1.1.0", image="nginx:1.28")
    second = world.build("b.bundle.tar")
    assert second.returncode == 0, second.stderr
    assert "lock: used" in second.stdout
    a, b = (world.spec.parent / n for n in ("a.bundle.tar", "b.bundle.tar"))
    assert a.read_bytes() == b.read_bytes()
    # `sweep SPEC` renders the locked chart too (the newer one would bring nginx:1.28): it agrees.
    sweep = world.run_cli("sweep", "bundle.yaml", "--cache", str(world.tmp / "cache-sweep"), cwd=world.spec.parent)
    assert sweep.returncode == 0 and "bundle.lock agrees with the spec" in sweep.stderr, sweep.stderr
    assert "nginx:1.28" not in sweep.stdout

    # --update takes the new versions and says which moved.
    updated = world.build("c.bundle.tar", "--update")
    assert updated.returncode == 0, updated.stderr
    assert re.search(rf"changed {re.escape(world.repo.url)} \(webapp\) \(1\.0\.0 -> 1\.1\.0\): sha256:", updated.stdout)
    assert re.search(r"changed oci://.*/charts/common \(common\) \(1\.0\.0 -> 1\.1\.0\): sha256:", updated.stdout)
    assert "added docker.io/library/nginx:1.28" in updated.stdout
    assert "removed docker.io/library/nginx:1.27" in updated.stdout
    assert world.locked_chart()["version"] == "1.1.0"
    with tarfile.open(world.spec.parent / "c.bundle.tar") as tar:
        statement = json.loads(tar.extractfile("bundle.intoto.json").read())  # type: ignore[union-attr]
    assert {c["version"] for c in statement["predicate"]["charts"]} == {"1.1.0"}

    # `lock --check`: a constraint the locked version no longer satisfies is a disagreement.
    assert world.run_cli("lock", "bundle.yaml", "--check", "--cache", str(world.tmp / "cache-check"),
                         cwd=world.spec.parent).returncode == 0
    text = world.spec.read_text()
    world.spec.write_text(text.replace('version: "^1.0"', 'version: "~1.0.0"'))
    check = world.run_cli("lock", "bundle.yaml", "--check", "--json", "--cache", str(world.tmp / "cache-check"),
                          cwd=world.spec.parent)
    assert check.returncode == 16, check.stderr
    (difference,) = json.loads(check.stdout)["differences"]
    assert difference["kind"] == "chart-changed"
    assert "asks for version ~1.0.0" in difference["message"] and "pins 1.1.0" in difference["message"]
    world.spec.write_text(text)

    # The publisher re-publishes 1.1.0 with other bytes: the locked build refuses, naming the entry.
    world.publish("1.1.0", "1.1.0", image="nginx:1.27")
    lock_before = world.lock.read_bytes()
    gone = world.build("d.bundle.tar")
    assert gone.returncode == 16, gone.stderr
    assert re.search(r"bundle\.lock:\d+ pins webapp 1\.1\.0 as sha256:[0-9a-f]{64}, but .* now serves", gone.stderr)
    assert not (world.spec.parent / "d.bundle.tar").exists() and world.lock.read_bytes() == lock_before

    # The publisher removes the locked version: exit 16, naming the lock line, still nothing written.
    (world.repo.root / "webapp-1.1.0.tgz").unlink()
    world.repo.index()
    removed = world.build("e.bundle.tar")
    assert removed.returncode == 16, removed.stderr
    assert re.search(r"bundle\.lock:\d+ pins webapp 1\.1\.0, which http://\S+ no longer serves", removed.stderr)
    assert world.lock.read_bytes() == lock_before
