"""The build's gates, each shown to stop the build: real docker-registry, the real CLI.

- the sweep gate (`pipeline._require_clean_sweep`): an unreviewed candidate or an invalid reference
  stops the build with exit 1 before anything is pulled;
- the closed loop (`pipeline._require_local`): a rewritten output that still names an upstream image
  (here a real rewrite gap: an operator format that hard-codes the source host) fails with exit 13;
- image references inside container `env` values (whole values and `name=REF` substrings) are pulled
  and rewritten to the local registry, pinned by digest.

Every failure leaves nothing at the output path.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
import yaml

from tests.support.images import Pusher, make_layer, multi_platform

LOCAL = "registry.airgap.local:5000"
IMAGES = {"library/nginx": "1.27.3", "acme/sidecar": "1.0", "acme/helper": "2.1", "acme/runtime": "3.0"}
APP = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: app, namespace: shop}
spec:
  selector: {matchLabels: {app: app}}
  template:
    metadata: {labels: {app: app}}
    spec:
      containers:
        - name: app
          image: docker.io/library/nginx:1.27.3
          env:
            - name: RELATED_IMAGE_SIDECAR
              value: quay.io/acme/sidecar:1.0
            - name: HELPERS
              value: "main=quay.io/acme/helper:2.1"
            - name: LOG_LEVEL
              value: info
"""
ENGINE = """\
---
apiVersion: acme.example/v1
kind: Engine
metadata: {name: e1, namespace: shop}
spec:
  runtime: {name: acme/runtime, release: "3.0"}
"""
REVIEWED = """\
images:
  - {ref: quay.io/acme/sidecar:1.0, confirm: true}
  - {ref: quay.io/acme/helper:2.1, confirm: true}
"""
# The operator joins `quay.io/` + name: the host is fixed, so no field can move the image elsewhere.
HARDCODED_HOST = """\
discovery:
  rules:
    - id: acme-engine
      operator: ACME engine
      sources: [{url: "https://acme.example/docs/engine", versions: "3.x"}]
      splits:
        - {group: acme.example, kind: Engine, path: spec.runtime, format: "quay.io/{name}:{release}"}
"""


@pytest.fixture(scope="module")
def mirror(registry) -> str:  # type: ignore[no-untyped-def]
    pusher = Pusher.to(registry)
    base = [make_layer("gates-base", 2 * 1024)]
    for n, (repo, tag) in enumerate(IMAGES.items()):
        pusher.push(repo, multi_platform(repo, seed=f"gates{n}", platforms=("linux/amd64", "linux/arm64"),
                                         base=base), tag)
    return str(registry.host)


def write_spec(work: Path, mirror: str, manifest: str, *extra: str) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    (work / "app.yaml").write_text(manifest)
    spec = work / "bundle.yaml"
    spec.write_text(f"""\
apiVersion: airgap-bundle.dev/v1alpha1
kind: Bundle
metadata: {{name: gates, version: "1.0", sourceDateEpoch: 0}}
localRegistry: {{host: {LOCAL}}}
platforms: [linux/amd64, linux/arm64]
sources:
  manifests: [{{path: app.yaml}}]
registries:
  - {{host: docker.io, mirrors: ["{mirror}"], skipUpstream: true}}
  - {{host: quay.io, mirrors: ["{mirror}"], skipUpstream: true}}
  - {{host: "{mirror}", insecure: true}}
""" + "".join(extra))
    return spec


def build(run_cli, work: Path, *extra: str):  # type: ignore[no-untyped-def]
    return run_cli("build", "bundle.yaml", "--output", "gates.bundle.tar", "--unsigned", "--cache",
                   str(work.parent / "cache"), *extra, cwd=work)


def refused(result, work: Path, code: int, message: str) -> None:  # type: ignore[no-untyped-def]
    assert result.returncode == code, result.stdout + result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in work.iterdir()) == ["app.yaml", "bundle.yaml"]  # no bundle, no staging


def test_env_values_are_pulled_and_rewritten(mirror: str, run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    work = tmp_path / "env"
    write_spec(work, mirror, APP, REVIEWED)
    result = build(run_cli, work, "--json")
    assert result.returncode == 0, result.stderr
    carried = {i["source"]: i["local"] for i in json.loads(result.stdout)["images"]}
    assert set(carried) == {"docker.io/library/nginx:1.27.3", "quay.io/acme/sidecar:1.0", "quay.io/acme/helper:2.1"}
    with tarfile.open(work / "gates.bundle.tar") as tar:
        doc = yaml.safe_load(tar.extractfile("manifests/manifest-app.yaml").read())  # type: ignore[union-attr]
    container = doc["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == carried["docker.io/library/nginx:1.27.3"]
    assert container["env"] == [
        {"name": "RELATED_IMAGE_SIDECAR", "value": carried["quay.io/acme/sidecar:1.0"]},
        {"name": "HELPERS", "value": "main=" + carried["quay.io/acme/helper:2.1"]},
        {"name": "LOG_LEVEL", "value": "info"},
    ]
    assert carried["quay.io/acme/sidecar:1.0"].startswith(f"{LOCAL}/quay.io/acme/sidecar:1.0@sha256:")


def test_an_unreviewed_candidate_stops_the_build(mirror: str, run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    work = tmp_path / "candidate"
    write_spec(work, mirror, APP)  # the env images are candidates: nobody confirmed or excluded them
    refused(build(run_cli, work), work, 1,
            "app.yaml:16: quay.io/acme/helper:2.1 looks like an image (env) but the spec neither confirms nor "
            "excludes it (2 unresolved candidate(s)) (review: `airgap-bundle sweep bundle.yaml --emit-images`")


def test_an_invalid_reference_stops_the_build(mirror: str, run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    work = tmp_path / "invalid"
    write_spec(work, mirror, APP.replace("docker.io/library/nginx:1.27.3", "docker.io/library/Nginx:1.27.3"),
               REVIEWED)
    refused(build(run_cli, work), work, 1, "app.yaml:11: invalid image reference 'docker.io/library/Nginx:1.27.3'")


def test_a_rewrite_gap_fails_the_closed_loop(mirror: str, run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    work = tmp_path / "gap"
    write_spec(work, mirror, APP + ENGINE, REVIEWED, HARDCODED_HOST)
    refused(build(run_cli, work), work, 13,
            f"rewritten manifests still pull quay.io/acme/runtime:3.0 from outside {LOCAL} (this is a rewrite gap")
