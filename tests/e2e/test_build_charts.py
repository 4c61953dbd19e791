"""`airgap-bundle build` with charts named by reference: a chart from a Helm repository (basic auth) whose
dependency lives in an OCI registry (helm push into docker-registry); the BOM, the SBOM and the SLSA
provenance record source, version and digest; an offline rebuild from the cache gives the same bytes;
required provenance missing fails with exit 17 and leaves nothing behind."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pytest

from tests.support.charts import make_chart, package, push, serve_repo
from tests.support.images import Pusher, make_layer, multi_platform

ENV = {"REPO_USER": "charts", "REPO_PASS": "s3cret-repo"}


def _spec(registry, repo, *, extra: str = "") -> str:  # type: ignore[no-untyped-def]
    return f"""apiVersion: airgap-bundle.dev/v1alpha1
kind: Bundle
metadata: {{name: remote-charts, version: "1.0.0", sourceDateEpoch: 1700000000}}
localRegistry: {{host: registry.local:5000, template: "{{host}}/{{path}}"}}
sources:
  charts:
    - repo: {repo.url}
      name: webapp
      version: "~0.5"
      release: web
      set: ["shared.enabled=true"]{extra}
registries:
  - host: {registry.host}
    insecure: true
    credentials: {{dockerConfig: false}}
  - host: {repo.host}
    insecure: true
    credentials: {{usernameEnv: REPO_USER, passwordEnv: REPO_PASS, dockerConfig: false}}
"""


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory, registry) -> Path:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("remote-charts")
    pusher = Pusher.to(registry)
    base = [make_layer("charts-base", 4096)]
    for n, repo_name in enumerate(("library/nginx", "library/busybox")):
        pusher.push(repo_name, multi_platform(repo_name, seed=f"rc{n}", platforms=("linux/amd64", "linux/arm64"),
                                              base=base), "1.0")
    oci = f"oci://{registry.host}/e2e-charts"
    push(package(make_chart(root / "src", "common", "1.1.0", image=f"{registry.host}/library/busybox:1.0"),
                 root / "out"), registry, "e2e-charts", root / "helm-home")
    repo = serve_repo(root / "repo", username=ENV["REPO_USER"], password=ENV["REPO_PASS"])
    package(make_chart(root / "src", "webapp", "0.5.1", image=f"{registry.host}/library/nginx:1.0", dependencies=[
        {"name": "common", "version": "^1.0.0", "repository": oci, "alias": "shared",
         "condition": "shared.enabled"}]), repo.root, raw=True)
    repo.index()
    (root / "bundle.yaml").write_text(_spec(registry, repo))
    (root / "signed.yaml").write_text(_spec(registry, repo, extra="\n      provenance: {keyring: missing.gpg}"))
    yield root
    repo.stop()


def test_build_records_chart_sources_and_rebuilds_offline(work: Path, registry, run_cli) -> None:  # type: ignore[no-untyped-def]
    first = run_cli("build", "bundle.yaml", "-o", "a.bundle.tar", "--unsigned", "--cache", "cache", "--json",
                    cwd=work, env=ENV)
    assert first.returncode == 0, first.stderr
    (reported,) = json.loads(first.stdout)["charts"]
    assert reported["source"]["version"] == "0.5.1" and reported["dependencies"][0]["name"] == "common"
    assert "charts: endpoints:" in first.stderr
    offline = run_cli("build", "bundle.yaml", "-o", "b.bundle.tar", "--unsigned", "--cache", "cache", "--offline",
                      cwd=work, env={"REPO_USER": "", "REPO_PASS": ""})
    assert offline.returncode == 0, offline.stderr
    assert (work / "a.bundle.tar").read_bytes() == (work / "b.bundle.tar").read_bytes()
    with tarfile.open(work / "a.bundle.tar") as tar:
        statement = json.loads(tar.extractfile("bundle.intoto.json").read())  # type: ignore[union-attr]
        provenance = json.loads(tar.extractfile("provenance.intoto.json").read())  # type: ignore[union-attr]
        sbom = json.loads(tar.extractfile("sbom.cdx.json").read())  # type: ignore[union-attr]
        names = tar.getnames()
        chart_bytes = tar.extractfile("charts/webapp-0.5.1.tgz").read()  # type: ignore[union-attr]
        with tarfile.open(fileobj=__import__("io").BytesIO(chart_bytes)) as inner:
            assert "webapp/charts/common-1.1.0.tgz" in inner.getnames()  # installable offline: dependency inside
    (chart,) = statement["predicate"]["charts"]
    published = (work / "repo" / "webapp-0.5.1.tgz").read_bytes()
    assert chart["source"] == {"source": f"http://{registry_repo_host(work)}", "name": "webapp", "version": "0.5.1",
                               "digest": "sha256:" + hashlib.sha256(published).hexdigest(),
                               "url": f"http://{registry_repo_host(work)}/webapp-0.5.1.tgz"}
    (dep,) = chart["dependencies"]
    assert (dep["source"], dep["name"], dep["version"]) == (f"oci://{registry.host}/e2e-charts/common", "common",
                                                            "1.1.0")
    resolved = {d["uri"]: d for d in provenance["predicate"]["buildDefinition"]["resolvedDependencies"]}
    assert resolved[f"oci://{registry.host}/e2e-charts/common:1.1.0"]["annotations"]["version"] == "1.1.0"
    assert resolved[chart["source"]["url"]]["digest"]["sha256"] == chart["source"]["digest"].removeprefix("sha256:")
    props = [p["value"] for c in sbom["components"] for p in c.get("properties", [])
             if p["name"] == "airgap-bundle:dependency"]
    assert props == [f"oci://{registry.host}/e2e-charts/common common 1.1.0 {dep['digest']}"]
    assert "charts/webapp-0.5.1.values-airgap.yaml" in names


def registry_repo_host(work: Path) -> str:
    return next(line.split("repo: http://", 1)[1].strip() for line in (work / "bundle.yaml").read_text().splitlines()
                if "repo: http://" in line)


def test_required_provenance_missing_fails_17_and_writes_nothing(work: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    (work / "missing.gpg").write_bytes(b"")
    done = run_cli("build", "signed.yaml", "-o", "s.bundle.tar", "--unsigned", "--cache", "cache", cwd=work, env=ENV)
    assert done.returncode == 17, done.stderr
    assert "has no provenance file" in done.stderr and "Traceback" not in done.stderr
    assert not (work / "s.bundle.tar").exists()


def test_sweep_takes_remote_charts_from_the_cache_offline(work: Path, registry, run_cli) -> None:  # type: ignore[no-untyped-def]
    filled = run_cli("sweep", "bundle.yaml", "--cache", "cache", "--format", "json", cwd=work, env=ENV)
    assert filled.returncode == 0, filled.stderr
    done = run_cli("sweep", "bundle.yaml", "--cache", "cache", "--offline", "--format", "json", cwd=work)
    assert done.returncode == 0, done.stderr
    assert f"{registry.host}/library/nginx:1.0" in done.stdout and f"{registry.host}/library/busybox:1.0" in done.stdout
    missing = run_cli("sweep", "bundle.yaml", "--cache", "empty-cache", "--offline", cwd=work)
    assert missing.returncode == 9 and "not in the cache" in missing.stderr
