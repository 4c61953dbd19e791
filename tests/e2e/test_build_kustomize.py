"""`build` with a Kustomize base/overlays/components tree: real docker-registry, real kubectl. The bundle's
`kustomize/<name>/` folder, extracted alone, builds into manifests whose every image is on the local
registry, pinned by a digest the bundle carries; a remote resource fails the build and leaves nothing."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from bundler import inspect, sweep
from bundler.documents import Origin, load_stream
from tests.support.images import Pusher, make_layer, multi_platform

SHOP = Path(__file__).resolve().parent.parent / "fixtures" / "kustomize" / "shop"
IMAGES = {
    "library/nginx": "1.27.3",
    "prometheus-operator/prometheus-operator": "v0.75.0",
    "prometheus-operator/prometheus-config-reloader": "v0.75.0",
    "prometheus/nginx-exporter": "1.3.0",
}
SPEC = """\
apiVersion: airgap-bundle.dev/v1alpha1
kind: Bundle
metadata: {{name: shop, version: "1.0", sourceDateEpoch: 0}}
localRegistry: {{host: registry.airgap.local:5000}}
platforms: [linux/amd64, linux/arm64]
sources:
  kustomize: [{{path: shop/overlays/prod}}]
images:   # what the sweep finds only by heuristics (a flag, an env value, CR fields): reviewed here
  - {{ref: quay.io/prometheus-operator/prometheus-config-reloader:v0.75.0, confirm: true}}
  - {{ref: quay.io/prometheus/nginx-exporter:1.3.0, confirm: true}}
registries:
  - {{host: docker.io, mirrors: ["{mirror}"], skipUpstream: true}}
  - {{host: quay.io, mirrors: ["{mirror}"], skipUpstream: true}}
  - {{host: "{mirror}", insecure: true}}
"""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, registry) -> Path:  # type: ignore[no-untyped-def]
    pusher = Pusher.to(registry)
    base = [make_layer("kz-base", 4 * 1024)]
    for n, (repo, tag) in enumerate(IMAGES.items()):
        pusher.push(repo, multi_platform(repo, seed=f"kz{n}", platforms=("linux/amd64", "linux/arm64"), base=base), tag)
    work = tmp_path_factory.mktemp("kz")
    shutil.copytree(SHOP, work / "shop")
    (work / "bundle.yaml").write_text(SPEC.format(mirror=registry.host))
    return work


def test_the_overlay_from_the_extracted_bundle_pulls_only_what_the_bundle_carries(
        workspace: Path, run_cli, kubectl: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("build", "bundle.yaml", "--output", "shop.bundle.tar", "--unsigned", "--cache",
                     str(workspace / "cache"), cwd=workspace)
    assert result.returncode == 0, result.stderr
    # the whole coverage line: the closed loop built the overlay from the bundle's own folder, swept it,
    # and counted the one reference pinned by tag (an operator's split fields with no digest form)
    assert "kustomize/prod/overlay: 2 images: entries, 5 fields patched over a tree of 15 files; every image of " \
           "the built overlay is on the local registry, 1 pinned only by tag (an operator's split fields with no " \
           "digest form), the rest by digest" in result.stdout
    customer = tmp_path / "customer"
    with tarfile.open(workspace / "shop.bundle.tar") as tar:
        names = tar.getnames()
        statement = json.loads(tar.extractfile("bundle.intoto.json").read())  # type: ignore[union-attr]
        # the customer takes the kustomize folder alone, far from the sources
        tar.extractall(customer, members=[m for m in tar.getmembers() if m.name.startswith("kustomize/")],
                       filter="data")
    tree = sorted(n.removeprefix("kustomize/prod/tree/") for n in names if n.startswith("kustomize/prod/tree/"))
    assert "base/kustomization.yaml" in tree and "components/monitoring/exporter.yaml" in tree and len(tree) == 15
    assert not any(n.startswith(("overlays/staging", "components/debug", "docs")) for n in tree)
    # inspect finds the delivery path from the headers and statement alone
    shown = inspect.inspect(workspace / "shop.bundle.tar", now=dt.datetime.now(dt.UTC))
    assert shown.overlays == (inspect.Overlay("prod", "kustomize/prod/overlay", 15),) and shown.trust == "unverified"

    built = subprocess.run([kubectl, "kustomize", str(customer / "kustomize" / "prod" / "overlay")],
                           capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    found = sweep.sweep(load_stream(built, Origin("overlay", 1)))
    carried = {i["local"].split("@")[0].rsplit(":", 1)[0]: i["bundledDigest"] for i in statement["predicate"]["images"]}
    assert len(carried) == 4
    refs = [i.ref for i in found.images]
    assert {r.name for r in refs} == set(carried)  # every carried image, and nothing upstream
    assert all(r.domain == "registry.airgap.local:5000" for r in refs)
    # digest-pinned, except the split object with no digest form: pinned by the tag the bundle carries
    assert [r.name for r in refs if r.digest is None] == \
        ["registry.airgap.local:5000/quay.io/prometheus-operator/prometheus-config-reloader"]
    assert all(r.digest == carried[r.name] for r in refs if r.digest is not None)
    platforms = {p["platform"] for i in statement["predicate"]["images"] for p in i["platforms"]}
    assert platforms == {"linux/amd64", "linux/arm64"}


def test_a_remote_base_fails_the_build_and_leaves_nothing(workspace: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    remote = workspace / "remote"
    shutil.copytree(SHOP, remote / "shop")
    prod = remote / "shop" / "overlays" / "prod" / "kustomization.yaml"
    prod.write_text(prod.read_text().replace("  - ../../base\n",
                                             "  - ../../base\n  - github.com/example/platform//deploy?ref=v1\n"))
    (remote / "bundle.yaml").write_text((workspace / "bundle.yaml").read_text())
    before = sorted(p.relative_to(remote).as_posix() for p in remote.rglob("*"))
    result = run_cli("build", "bundle.yaml", "--output", "remote.bundle.tar", "--unsigned", "--cache",
                     str(workspace / "cache"), cwd=remote)
    assert result.returncode == 2, result.stderr
    assert "shop/overlays/prod/kustomization.yaml:8: resources entry 'github.com/example/platform//deploy?ref=v1' " \
           "is a remote resource" in result.stderr
    assert "vendor the remote base into the tree" in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.relative_to(remote).as_posix() for p in remote.rglob("*")) == before
