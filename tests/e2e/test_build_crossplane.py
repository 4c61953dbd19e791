"""The Crossplane gate inside `build`: packages pulled as real xpkg images through the spec's mirrors,
read from the bundle's own OCI layout, and checked against the Compositions; a fail stops the build."""

from __future__ import annotations

import datetime as dt
import json
import tarfile
from pathlib import Path

import pytest

from bundler import inspect
from tests.support.crossplane import FIXTURES, PACKAGES, REFS
from tests.support.images import Pusher
from tests.support.xpkg_image import build as build_xpkg
from tests.support.xpkg_image import push

PACKAGE_NAMES = ("provider-family-aws-v2.0.0", "provider-aws-s3-v2.0.0", "function-patch-and-transform-v0.10.0",
                 "function-auto-ready-v0.5.0")

SPEC = """\
apiVersion: airgap-bundle.dev/v1alpha1
kind: Bundle
metadata: {{name: xp, version: "1.0", sourceDateEpoch: 0}}
localRegistry: {{host: registry.local:5000}}
platforms: [linux/amd64]          # xpkg images here are single-platform
sources:
  manifests: [{{path: {manifest}}}]
registries:
  - {{host: xpkg.upbound.io, mirrors: ["{mirror}"], skipUpstream: true}}
  - {{host: xpkg.crossplane.io, mirrors: ["{mirror}"], skipUpstream: true}}
  - {{host: "{mirror}", insecure: true}}
crossplane: {{target: "2.0"}}
"""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, registry) -> Path:  # type: ignore[no-untyped-def]
    pusher = Pusher.to(registry)
    for name in PACKAGE_NAMES:
        ref = REFS[name]  # xpkg.upbound.io/upbound/...:tag -> the mirror serves upbound/...:tag
        repo, tag = ref.split("/", 1)[1].rsplit(":", 1)
        push(pusher, repo, tag, build_xpkg((PACKAGES / name / "package.yaml").read_text()))
    work = tmp_path_factory.mktemp("xp")
    good = (FIXTURES / "manifests" / "v2-good.yaml").read_text()
    (work / "good.yaml").write_text(good)
    (work / "legacy.yaml").write_text(good.replace("  mode: Pipeline\n", "  mode: Resources\n", 1))
    for name in ("good", "legacy"):
        (work / f"{name}.bundle.yaml").write_text(SPEC.format(manifest=f"{name}.yaml", mirror=registry.host))
    return work


def test_a_v2_bundle_passes_the_gate_and_lists_its_packages(workspace: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("build", "good.bundle.yaml", "--output", "good.tar", "--unsigned", "--cache",
                     str(workspace / "cache"), cwd=workspace)
    assert result.returncode == 0, result.stderr
    assert "crossplane: pass" in result.stderr
    with tarfile.open(workspace / "good.tar") as tar:
        predicate = json.loads(tar.extractfile("bundle.intoto.json").read())["predicate"]  # type: ignore[union-attr]
    packages = {p["ref"]: p for p in predicate["crossplanePackages"]}
    assert set(packages) == {REFS[n] for n in PACKAGE_NAMES}
    assert all(p["local"].startswith("registry.local:5000/xpkg.") and "@sha256:" in p["local"]
               for p in packages.values())
    shown = inspect.inspect(workspace / "good.tar", now=dt.datetime.now(dt.UTC)).to_json()
    assert {p["ref"]: p["local"] for p in shown["crossplanePackages"]} == {r: p["local"] for r, p in packages.items()}
    assert shown["totals"]["crossplanePackages"] == len(packages) and shown["signatures"] == []


def test_a_v1_only_construct_fails_the_build_closed(workspace: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    before = sorted(p.name for p in workspace.iterdir())
    result = run_cli("build", "legacy.bundle.yaml", "--output", "legacy.tar", "--unsigned", "--cache",
                     str(workspace / "cache"), cwd=workspace)
    assert result.returncode == 10, result.stderr
    assert "XP2-001" in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in workspace.iterdir()) == before  # no bundle, no staging left
